"""`Totals`: the one accumulator of tokens, cost and time over a set of calls, used wherever
calls are summed (the evaluate-then-refine loop, the LLM judge, map_chunks).

Two times, never confused: `latency_s_sum` adds every call's latency (what the calls would take
one after another; a cache hit counts its original latency), `wall_s` is the clock time the
whole operation took (concurrency and cache hits make it smaller).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from .types import Completion

__all__ = ["Totals", "money"]


class Totals(BaseModel):
    """Tokens, cost and time summed over calls (cache hits count their original figures)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    """Input tokens (a failed call reports none: the provider gave no usage)."""
    completion_tokens: int = 0
    """Output tokens."""
    cached_tokens: int = 0
    """Input tokens served from the provider's prompt cache."""
    cost_usd: float = 0.0
    """Price from the registry / litellm price map; 0 for the local model."""
    latency_s_sum: float = 0.0
    """Sum of per-call latency (a failed call: its wall time), as if run one after another."""
    wall_s: float = 0.0
    """Clock time of the whole operation, when the one who summed measured it (else 0)."""
    n_calls: int = 0
    """Calls made, failed ones included."""
    cache_hits: int = 0
    """Calls answered from labkit's cache: they cost nothing this time, but are counted above
    with their original figures, so a re-run reports what the answer cost to make."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens(self) -> int:
        """Same as `total_tokens`."""
        return self.total_tokens

    def add(self, completion: Completion | None, *, latency_s: float = 0.0) -> None:
        """Count one call: its completion, or (failed call) only the time it took."""
        self.n_calls += 1
        if completion is None:
            self.latency_s_sum += latency_s
            return
        self.prompt_tokens += completion.usage.prompt_tokens
        self.completion_tokens += completion.usage.completion_tokens
        self.cached_tokens += completion.usage.cached_tokens
        self.cost_usd += completion.cost_usd
        self.latency_s_sum += completion.latency_s
        self.cache_hits += int(completion.cache_hit)

    @classmethod
    def of(cls, completions: list[Completion | None], *, wall_s: float = 0.0) -> Totals:
        """The totals of `completions` (None entries are failed calls with no figures)."""
        out = cls(wall_s=wall_s)
        for done in completions:
            out.add(done)
        return out

    def __add__(self, other: Totals) -> Totals:
        data = self.model_dump()
        for key, value in other.model_dump().items():
            data[key] += value
        return Totals(**data)


def money(usd: float, zero: str = "free") -> str:
    """A cost a person can read: `zero` at 0 ("free" where a chart means a free model; a
    running total says "$0"), cents from $1, two significant digits below (a running grid's
    "$0.012" moves where "$0.01" would not), "n/a" if unknown."""
    try:
        v = float(usd)
    except (TypeError, ValueError):
        return "n/a"
    if v != v:
        return "n/a"
    if v == 0:
        return zero
    if abs(v) >= 1:
        return f"${v:,.2f}"
    if abs(v) < 1e-7:
        return f"${v:.1e}"
    digits = 1 - math.floor(math.log10(abs(v)))  # two significant digits, no exponent
    return f"${v:.{digits}f}"
