"""`run_cell`: one generation through `Client.agenerate`, scored by every evaluator. It is
the unit of work a grid cell (experiments) and a gate suite item (deploy) both are, so they
share the call, the evaluation context and the pass rule (`combine`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..types import Completion
from .checks import EvalContext, Evaluator, Score, combine, run_evaluators

if TYPE_CHECKING:
    from ..client import CacheMode, Client

__all__ = ["Cell", "run_cell"]


@dataclass
class Cell:
    """A reply and its scores."""

    completion: Completion
    scores: list[Score]

    @property
    def score(self) -> float:
        """Mean of the non-error scores (0.0 without any)."""
        return combine(self.scores)[0]

    @property
    def passed(self) -> bool:
        """Every evaluator passed and none errored (False without evaluators)."""
        return combine(self.scores)[1]


async def run_cell(
    client: Client,
    evaluators: Sequence[Evaluator],
    row: Mapping[str, Any],
    *,
    prompt: str | None = None,
    cache: CacheMode = "use",
    on_reply: Callable[[Completion], None] | None = None,
    prepared: Any = None,
    **generate: Any,
) -> Cell:
    """`client.agenerate(**generate)`, then every evaluator on the reply (`row` is the dataset
    row they read, `prompt` the rendered prompt a judge sees). A generation error propagates for
    the caller to record; `on_reply` sees the reply before scoring starts, so a caller can keep
    a paid-for answer when scoring is cancelled. `prepared` (from `client.prepare`, as a grid
    prepares its cells in bulk) replaces `generate`."""
    if prepared is not None:
        done = await client.agenerate_prepared(prepared, cache)
    else:
        done = await client.agenerate(cache=cache, **generate)
    if on_reply is not None:
        on_reply(done)
    if not evaluators:
        return Cell(done, [])
    ctx = EvalContext.from_completion(done, row, client=client, prompt=prompt)
    return Cell(done, await run_evaluators(evaluators, ctx))
