"""The evaluate-then-refine loop: generate, evaluate, refine with the feedback, try again.

Attempts go through `Client.agenerate`, so they are cached, traced and policy-wrapped like any
other call. Import it from `labkit.evaluation`.

The loop, per attempt k (0-based) of at most `max_attempts`:

    generate(messages_k, sample = sample + k * ATTEMPT_SAMPLE_STRIDE)   traced under the loop row
    -> run every evaluator (a judge's call is a child of the judged completion's trace)
    -> accepted when every evaluator passed, none errored and the mean score >= threshold
    -> else messages_{k+1} = refine(messages_k, attempt_k, scores_k) and go again

It returns the best attempt (accepted first, then highest score, then earliest) and totals over
every call it made, failed attempts and judge calls included. Attempt 0 is the same request as
a plain `generate` (same cache entry), so the single-shot answer is always the loop's first
attempt, and re-running an identical loop is answered from the cache without a backend call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..client import default_client
from ..errors import InputError
from ..prompts import build_messages
from ..trace_rows import trace_row
from ..tracing import new_id
from ..types import Completion, Message
from ..usage import Totals
from .checks import (
    EvalContext,
    Evaluator,
    FunctionEvaluator,
    Score,
    combine,
    run_evaluators,
)

if TYPE_CHECKING:
    from ..client import CacheMode, Client

__all__ = [
    "ATTEMPT_SAMPLE_STRIDE",
    "Attempt",
    "EvalLoopResult",
    "Refine",
    "agenerate_with_evaluation",
    "default_refine",
    "generate_with_evaluation",
]

ATTEMPT_SAMPLE_STRIDE = 1000
"""Attempt k of a loop asked with `sample=s` is generated with `sample = s + k * 1000`: attempt
0 is exactly the single-shot call (same cache entry), and a retry whose refined messages equal
an earlier attempt's still gets its own cache entry (and, on the local model, its own seed)."""


# ---------------------------------------------------------------------------- the loop
class Attempt(BaseModel):
    """One generate-and-evaluate round of the loop."""

    model_config = ConfigDict(extra="forbid")

    index: int
    """0 for the first (single-shot) attempt."""
    messages: list[Message]
    """What was asked (before the client appends JSON instructions for `schema=`)."""
    completion: Completion | None = None
    error: str | None = None
    """Why the generation failed (after the client's own retries and fallbacks)."""
    scores: list[Score] = Field(default_factory=list)
    score: float = 0.0
    """`combine(scores)` mean; 0 for a failed generation."""
    passed: bool = False
    """Accepted: every evaluator passed, none errored, and `score` reached the threshold."""
    wall_s: float = 0.0
    """Wall time of this round in this run (generation + evaluation; ~0 on a cache hit)."""

    @property
    def text(self) -> str:
        return self.completion.text if self.completion is not None else ""

    @property
    def value(self) -> Any:
        return self.completion.value if self.completion is not None else None


class EvalLoopResult(BaseModel):
    """The best attempt, every attempt, and what the whole loop cost."""

    model_config = ConfigDict(extra="forbid")

    best: Attempt
    attempts: list[Attempt]
    passed: bool
    """The best attempt was accepted."""
    threshold: float
    stopped: str
    """"passed", "max_attempts", or why refinement stopped early ("refine failed: ...")."""
    totals: Totals
    """Every call the loop made (generation attempts, failed ones, and judge calls)."""
    judge_totals: Totals
    """The evaluators' share of `totals` (their own model calls)."""
    wall_s: float
    """Wall time of this run (a fully cached re-run is near zero; `totals.latency_s_sum` is not)."""
    trace_id: str
    """call_id of the loop's trace row (kind "parent"); every attempt's call is its child."""

    @property
    def completion(self) -> Completion | None:
        return self.best.completion

    @property
    def text(self) -> str:
        return self.best.text

    @property
    def value(self) -> Any:
        return self.best.value

    @property
    def score(self) -> float:
        return self.best.score


Refine = Callable[[list[Message], Attempt, list[Score]], list[Message]]


def default_refine(messages: list[Message], attempt: Attempt, scores: list[Score]) -> list[Message]:
    """Append the previous reply and a user turn quoting the failing evaluators' reasons:

        assistant: <previous reply>
        user: Your previous answer failed: <evaluator>: <reason>; ... Fix these problems and
              answer the original request again. Return corrected JSON only.

    ("Return the corrected answer only." when the call had no schema.) Scores with `error`
    (the evaluator broke, not the answer) are not quoted. After a failed generation the
    messages are returned unchanged: the next attempt asks again with a new sample index.
    """
    if attempt.completion is None:
        return list(messages)
    failing = [s for s in scores if s.error is None and not s.passed]
    if failing:
        feedback = "; ".join(f"{s.evaluator}: {s.reason or 'failed'}" for s in failing)
    else:
        graded = [s for s in scores if s.error is None]
        feedback = "it scored too low" + (
            " (" + "; ".join(f"{s.evaluator}: {s.reason}" for s in graded if s.reason) + ")"
            if any(s.reason for s in graded)
            else ""
        )
    ask = (
        "Return corrected JSON only."
        if attempt.completion.parsed is not None
        else "Return the corrected answer only."
    )
    return [
        *messages,
        {"role": "assistant", "content": attempt.completion.text},
        {
            "role": "user",
            "content": f"Your previous answer failed: {feedback}. Fix these problems and "
            f"answer the original request again. {ask}",
        },
    ]


def _check_loop_args(
    evaluators: Any, threshold: Any, max_attempts: Any, refine: Any
) -> list[Evaluator]:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InputError(f"threshold must be a number within 0-1, got {threshold!r}")
    if not 0.0 <= float(threshold) <= 1.0:  # also rejects NaN
        raise InputError(
            f"threshold must be within 0-1 (the mean evaluator score to accept), got {threshold!r}"
        )
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InputError(
            f"max_attempts must be an int >= 1 (1 = single shot, no refinement), got {max_attempts!r}"
        )
    if not callable(refine):
        raise InputError(f"refine must be a callable(messages, attempt, scores), got {refine!r}")
    if isinstance(evaluators, Evaluator) or callable(evaluators):
        evaluators = [evaluators]
    if not isinstance(evaluators, Sequence) or isinstance(evaluators, str) or not evaluators:
        raise InputError(
            "evaluators must be a non-empty list of evaluators, e.g. [SchemaValid(), "
            f"InEnum('label', [...])], got {evaluators!r}"
        )
    out: list[Evaluator] = []
    for i, ev in enumerate(evaluators):
        if isinstance(ev, Evaluator):
            out.append(ev)
        elif callable(ev):
            out.append(FunctionEvaluator(ev))
        else:
            raise InputError(f"evaluators[{i}] is {ev!r}: not an Evaluator or a callable")
    return out


async def agenerate_with_evaluation(
    *,
    evaluators: Sequence[Evaluator | Callable[[EvalContext], Any]] | Evaluator,
    threshold: float = 0.8,
    max_attempts: int = 3,
    refine: Refine = default_refine,
    client: Client | None = None,
    item: Mapping[str, Any] | None = None,
    **generate_kwargs: Any,
) -> EvalLoopResult:
    """Generate, evaluate, and refine with the evaluators' feedback until accepted or out of
    attempts; return the best attempt, all attempts and honest totals. See the module docstring.

    `generate_kwargs` are `Client.generate`'s (prompt= / template= + variables= / messages=,
    model, schema, max_tokens, ..., cache). `item` is the dataset row: evaluators read its
    `expected` labels, its columns fill the template's variables (explicit `variables=` win)
    and its `id` becomes the `item_id`. Bad `threshold`, `max_attempts`, evaluators or
    generation arguments raise InputError before anything is sent.
    """

    evals = _check_loop_args(evaluators, threshold, max_attempts, refine)
    client = client or default_client()
    row = dict(item or {})
    kwargs = dict(generate_kwargs)
    cache: CacheMode = kwargs.pop("cache", "use")
    base_sample = kwargs.pop("sample", 0)
    outer_parent = kwargs.pop("parent_id", None)
    ask = {
        k: kwargs.pop(k, None) for k in ("prompt", "messages", "template", "variables", "system")
    }
    if row and (ask["template"] is not None or ask["messages"] is not None):
        inputs = {k: v for k, v in row.items() if k != "expected"}
        ask["variables"] = {**inputs, **(ask["variables"] or {})}
    messages = build_messages(
        ask["prompt"],
        messages=ask["messages"],
        template=ask["template"],
        variables=ask["variables"],
        system=ask["system"],
    )
    if kwargs.get("item_id") is None and row.get("id") is not None:
        kwargs["item_id"] = str(row["id"])
    if kwargs.get("ab_key") is None and kwargs.get("item_id") is None:
        kwargs["ab_key"] = str(messages)  # keep every attempt on the model attempt 0 got
    client.prepare(messages=messages, sample=base_sample, **kwargs)  # validates; sends nothing
    if cache not in ("use", "refresh", "off"):
        raise InputError(f"cache must be 'use', 'refresh' or 'off', got {cache!r}")

    loop_id = new_id()
    task = next((str(m["content"]) for m in reversed(messages) if m["role"] == "user"), None)
    started = time.perf_counter()
    attempts: list[Attempt] = []
    stopped = "max_attempts"
    current = messages
    for index in range(max_attempts):
        if index:
            previous = attempts[-1]
            try:
                current = build_messages(messages=refine(current, previous, previous.scores))
            except Exception as exc:
                stopped = f"refine failed: {type(exc).__name__}: {exc}"
                break
        attempts.append(
            await _attempt(
                client, evals, index, current, row, task, threshold, cache,
                sample=base_sample + index * ATTEMPT_SAMPLE_STRIDE, parent_id=loop_id, **kwargs,
            )
        )  # fmt: skip
        if attempts[-1].passed:
            stopped = "passed"
            break

    best = max(attempts, key=lambda a: (a.passed, a.score, -a.index))
    totals, judged = Totals(), Totals()
    for a in attempts:
        totals.add(a.completion, latency_s=a.wall_s)
        for s in a.scores:
            if s.spend is not None:
                judged = judged + s.spend
    wall = time.perf_counter() - started
    result = EvalLoopResult(
        best=best,
        attempts=attempts,
        passed=best.passed,
        threshold=float(threshold),
        stopped=stopped,
        totals=(totals + judged).model_copy(update={"wall_s": wall}),
        judge_totals=judged,
        wall_s=wall,
        trace_id=loop_id,
    )
    _trace_loop(client, result, outer_parent, kwargs)
    return result


async def _attempt(
    client: Client,
    evals: list[Evaluator],
    index: int,
    messages: list[Message],
    item: Mapping[str, Any],
    task: str | None,
    threshold: float,
    cache: CacheMode,
    **call: Any,
) -> Attempt:
    started = time.perf_counter()
    try:
        done = await client.agenerate(messages=messages, cache=cache, **call)
    except Exception as exc:  # recorded on the attempt; the loop goes on
        return Attempt(
            index=index,
            messages=messages,
            error=f"{type(exc).__name__}: {exc}",
            wall_s=time.perf_counter() - started,
        )
    ctx = EvalContext.from_completion(done, item, client=client, prompt=task)
    scores = await run_evaluators(evals, ctx)
    score, all_passed = combine(scores)
    return Attempt(
        index=index,
        messages=messages,
        completion=done,
        scores=scores,
        score=score,
        passed=all_passed and score >= threshold,
        wall_s=time.perf_counter() - started,
    )


def _trace_loop(
    client: Client, result: EvalLoopResult, parent_id: str | None, kwargs: Mapping[str, Any]
) -> None:
    """One "parent" row per loop: the attempts' calls point at it. Figures go in `meta` only,
    so summing the cost column over a run does not count them twice."""
    best = result.best.completion
    row = trace_row(
        "parent",
        "ok" if best is not None else "error",
        call_id=result.trace_id,
        parent_id=parent_id,
        run_id=kwargs.get("run_id"),
        item_id=kwargs.get("item_id"),
        alias=best.alias if best else None,
        model=best.model if best else None,
        response=best.text if best else None,
        event="eval_loop",
        error=result.best.error,
        meta={
            "passed": result.passed,
            "best": result.best.index,
            "stopped": result.stopped,
            "threshold": result.threshold,
            "attempts": [
                {
                    "index": a.index,
                    "call_id": a.completion.trace_id if a.completion else None,
                    "score": a.score,
                    "passed": a.passed,
                    "error": a.error,
                    "scores": {s.evaluator: s.value for s in a.scores},
                }
                for a in result.attempts
            ],
            "totals": result.totals.model_dump(),
        },
    )
    client.tracer.record(**row)


def generate_with_evaluation(
    *,
    evaluators: Sequence[Evaluator | Callable[[EvalContext], Any]] | Evaluator,
    threshold: float = 0.8,
    max_attempts: int = 3,
    refine: Refine = default_refine,
    client: Client | None = None,
    item: Mapping[str, Any] | None = None,
    **generate_kwargs: Any,
) -> EvalLoopResult:
    """Sync `agenerate_with_evaluation` (runs on the client's loop; works inside Jupyter)."""

    client = client or default_client()
    result: EvalLoopResult = client.run(
        agenerate_with_evaluation(
            evaluators=evaluators,
            threshold=threshold,
            max_attempts=max_attempts,
            refine=refine,
            client=client,
            item=item,
            **generate_kwargs,
        )
    )
    return result
