"""Running a config: `load_config` -> `Deployed.run`.

`Deployed.run` / `arun` send the config's template, pinned model, params and schema through
`Client.agenerate` (cache, tracing, JSON repair, retries, breakers, the config's fallbacks), so
production calls take the notebook's path, and apply the config's routing rule: an answer
that failed to parse, or whose confidence is below `review_below`, is flagged for review.
The promotion gate for model upgrades is in promotion.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifact import (
    DeployedConfig,
    check_models,
    read_config,
)
from ..client import default_client
from ..errors import InputError
from ..types import Completion

if TYPE_CHECKING:
    from ..client import CacheMode, Client

__all__ = ["Deployed", "Output", "call", "load_config"]


# ----------------------------------------------------------------------------- running


@dataclass
class Output:
    """One answer of a deployed config, with the routing decision made for it."""

    value: Any
    """The parsed value (dict) with a schema, else the reply text."""
    ok: bool
    """Parsed (schema) or answered (free text) without error."""
    needs_review: bool
    """Route to human review: failed, or confidence below the config's `review_below`."""
    confidence: float | None = None
    """The confidence compared with the threshold (one field's, or the mean)."""
    confidences: dict[str, float] = field(default_factory=dict)
    """Self-reported confidence per field."""
    completion: Completion | None = field(default=None, repr=False)
    """The full completion (trace_id, model, usage, cost, cache_hit, parsed...)."""
    error: str | None = None
    """Why the call failed (batch runs keep going and report errors here)."""

    @property
    def trace_id(self) -> str | None:
        return self.completion.trace_id if self.completion else None


class Deployed:
    """A loaded config you can call: `.run(inputs)` / `await .arun(inputs)`.

    Calls go through `labkit.Client` (cache, tracing, JSON repair, retries, breakers, rate
    limits), exactly as in the notebook, with the config's fallbacks as the fallback chain.
    """

    def __init__(
        self, config: DeployedConfig, *, client: Client | None = None, path: Path | None = None
    ) -> None:
        self.config = config
        self.path = path
        self._client = client

    def __repr__(self) -> str:
        return (
            f"Deployed({self.config.name!r}, v{self.config.version}, model={self.config.model!r})"
        )

    @property
    def client(self) -> Client:
        return self._client or default_client()

    def run(
        self,
        inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        client: Client | None = None,
        cache: CacheMode = "use",
        run_id: str | None = None,
    ) -> Output | list[Output]:
        """One mapping of template variables -> Output (errors raise); a list (or DataFrame)
        -> Outputs in order (a failed item becomes an Output with `error`, the rest still run)."""
        c = client or self.client
        if isinstance(inputs, Mapping):
            return c.run(self._one(c, inputs, cache, run_id, None))
        return c.run(self._many(c, _rows(inputs), cache, run_id))

    async def arun(
        self,
        inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        client: Client | None = None,
        cache: CacheMode = "use",
        run_id: str | None = None,
    ) -> Output | list[Output]:
        """Async `run`, usable from any event loop."""
        c = client or self.client
        if isinstance(inputs, Mapping):
            return await self._one(c, inputs, cache, run_id, None)
        return await self._many(c, _rows(inputs), cache, run_id)

    async def _many(
        self, c: Client, items: list[Mapping[str, Any]], cache: CacheMode, run_id: str | None
    ) -> list[Output]:
        async def guarded(i: int, inp: Mapping[str, Any]) -> Output:
            try:
                return await self._one(c, inp, cache, run_id, str(i))
            except Exception as exc:  # keep the batch: the other items' answers are not lost
                return Output(None, False, True, error=f"{type(exc).__name__}: {exc}")

        return list(await asyncio.gather(*(guarded(i, x) for i, x in enumerate(items))))

    async def _one(
        self,
        c: Client,
        inputs: Mapping[str, Any],
        cache: CacheMode,
        run_id: str | None,
        item_id: str | None,
    ) -> Output:
        done = await call(c, self.config, inputs, cache=cache, run_id=run_id, item_id=item_id)
        return to_output(self.config, done)


def _rows(inputs: Any) -> list[Mapping[str, Any]]:
    """A list of input mappings from a list, a tuple or a pandas DataFrame."""
    if hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):
        return list(inputs.to_dict("records"))
    rows = list(inputs)
    bad = [i for i, r in enumerate(rows) if not isinstance(r, Mapping)]
    if bad:
        raise InputError(
            f"inputs must be a mapping of template variables or a list of them; item(s) {bad} "
            "are not mappings"
        )
    return rows


async def call(
    c: Client,
    cfg: DeployedConfig,
    inputs: Mapping[str, Any],
    *,
    model: str | None = None,
    fallbacks: Sequence[str] | None = None,
    cache: CacheMode = "use",
    run_id: str | None = None,
    item_id: str | None = None,
) -> Completion:
    """One generation for `cfg` through `Client.agenerate` (cache, policy, trace).

    `model`/`fallbacks` override the config's (the gate measures a model alone, with no
    fallbacks standing in for it).
    """
    args = generate_args(cfg, inputs, model, fallbacks, run_id, item_id)
    done: Completion = await c.agenerate(cache=cache, **args)
    return done


def generate_args(
    cfg: DeployedConfig,
    inputs: Mapping[str, Any],
    model: str | None,
    fallbacks: Sequence[str] | None,
    run_id: str | None,
    item_id: str | None,
) -> dict[str, Any]:
    """The `Client.agenerate` arguments of one call of `cfg` (the call and the gate share them)."""
    return {
        "template": cfg.prompt,
        "variables": dict(inputs),
        "system": cfg.system,
        "model": model or cfg.model,
        "fallbacks": cfg.fallbacks if fallbacks is None else fallbacks,
        "schema": cfg.output_schema,
        "confidence": cfg.confidence.requested,
        "run_id": run_id,
        "item_id": item_id,
        **cfg.params,
    }


def to_output(cfg: DeployedConfig, done: Completion) -> Output:
    """Apply the config's routing rule to a completion."""
    parsed = done.parsed
    if parsed is None:
        value: Any = done.text
        ok = bool(done.text.strip())
        confs: dict[str, float] = {}
    else:
        value, ok = parsed.value, bool(parsed.ok)
        confs = {str(k): float(v) for k, v in (parsed.confidences or {}).items() if _num(v)}
    pol = cfg.confidence
    if pol.field is not None:
        conf = confs.get(pol.field)
    else:
        conf = sum(confs.values()) / len(confs) if confs else None
    low = pol.review_below is not None and (conf is None or conf < pol.review_below)
    return Output(value, ok, (not ok) or low, conf, confs, done)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_config(path: str | Path, *, client: Client | None = None) -> Deployed:
    """Read, validate and check a config against the registry; returns a runnable `Deployed`.

    Raises ConfigError naming the file, line and field for invalid YAML, unknown or extra
    fields, inconsistent templates/schema/suite, and UnknownModel for a model (or fallback)
    the registry does not know.
    """
    p = Path(path)
    cfg = read_config(p)
    check_models(cfg, client, p)
    return Deployed(cfg, client=client, path=p)
