"""`trace_row`: the one place a trace row's columns are assembled, for `TraceStore.record`.

A row about one call takes its usage, cost and timing from the `Completion`; a "parent" row
about many calls (a grid run, a refine loop, a chunk map, a gate) takes them from a `Totals`,
with the operation's wall time as its latency. Everything else is passed as columns, and
`TraceStore.record` refuses a column the table does not have, so a typo cannot go unnoticed.
"""

from __future__ import annotations

from typing import Any

from .tracing import new_id
from .types import Completion
from .usage import Totals

__all__ = ["trace_row"]


def trace_row(
    kind: str,
    status: str,
    *,
    completion: Completion | None = None,
    totals: Totals | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """The columns of one trace row: `kind` ("call", "cache_hit", "event", "parent"),
    `status`, a fresh `call_id` unless given, figures from `completion` or `totals`, then
    `columns` (which win over the derived ones)."""
    row: dict[str, Any] = {"kind": kind, "status": status}
    if completion is not None:
        usage = completion.usage
        row |= {
            "model": completion.model,
            "response": completion.text,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_usd": completion.cost_usd,
            "latency_s": completion.latency_s,
            "ttft_s": completion.ttft_s,
            "cache_hit": completion.cache_hit,
        }
    elif totals is not None:
        row |= {
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "cached_tokens": totals.cached_tokens,
            "cost_usd": totals.cost_usd,
            "latency_s": totals.wall_s,
        }
    row |= columns
    if not row.get("call_id"):
        row["call_id"] = new_id()
    return row
