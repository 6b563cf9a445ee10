"""The evaluation parts that call models: the LLM judge and the evaluate-then-refine loop.

Both go through `Client.agenerate`, so judge calls and loop attempts are cached, traced and
policy-wrapped like any other call. Import them from `labkit.evaluation`.

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

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError
from ..prompts import build_messages
from ..types import Completion, Message
from .checks import (
    Callable as CallableEvaluator,
)
from .checks import (
    EvalContext,
    Evaluator,
    Score,
    Totals,
    combine,
    run_evaluators,
)

if TYPE_CHECKING:
    from ..client import CacheMode, Client

__all__ = [
    "ATTEMPT_SAMPLE_STRIDE",
    "Attempt",
    "EvalLoopResult",
    "LLMJudge",
    "Refine",
    "agenerate_with_evaluation",
    "default_refine",
    "generate_with_evaluation",
]

ATTEMPT_SAMPLE_STRIDE = 1000
"""Attempt k of a loop asked with `sample=s` is generated with `sample = s + k * 1000`: attempt
0 is exactly the single-shot call (same cache entry), and a retry whose refined messages equal
an earlier attempt's still gets its own cache entry (and, on the local model, its own seed)."""


# ---------------------------------------------------------------------------- LLM judge
_JUDGE_SYSTEM = (
    "You are a strict, fair evaluator. You grade a RESPONSE against a RUBRIC and reply with "
    "JSON only."
)


class LLMJudge(Evaluator):
    """A rubric graded by a judge model, answered as JSON `{"score", "verdict", "reasons"}`.

    The judge sees the rubric, the task prompt (when known), the response and, with
    `include_reference`, the item's expected labels (an oracle: see the evaluation module
    docstring). It grades on `scale` (default 1-5); value = the grade mapped linearly to 0-1
    (4 of 1-5 is 0.75, under the loop's default threshold of 0.8) and passed = value >=
    `threshold` (a verdict that disagrees with the grade is noted in the reason). Its call
    goes through the client: cached, and traced with `parent_id` = the judged completion's
    trace id. A failed call or an unusable reply (no JSON, no numeric score, a score off the
    scale) is a Score with `error` set, never an exception.
    """

    type_name = "llm_judge"

    def __init__(
        self,
        rubric: str,
        model: str = "local/smollm2-135m-json",
        threshold: float = 0.5,
        *,
        scale: Sequence[float] = (1, 5),
        include_reference: bool = False,
        max_tokens: int = 120,
        temperature: float = 0.0,
        name: str | None = None,
    ) -> None:
        if not rubric or not rubric.strip():
            raise ValueError("LLMJudge needs a rubric: what a good response does")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0-1, got {threshold!r}")
        lo, hi = (float(x) for x in scale)
        if not lo < hi:
            raise ValueError(f"scale must be (low, high) with low < high, got {scale!r}")
        self.rubric = rubric
        self.model = model
        self.threshold = float(threshold)
        self.scale = (lo, hi)
        self.include_reference = include_reference
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.name = name or "llm_judge"

    def reply_schema(self) -> dict[str, Any]:
        """The JSON asked of the judge. An integer scale of 3 to 11 grades (1-5, 0-10) is an
        enum, so a JSON-mode model (llama.cpp grammar, provider schemas) cannot answer off the
        scale; others (0-1, 0-100) are a number with bounds."""
        lo, hi = self.scale
        if lo.is_integer() and hi.is_integer() and 2 <= hi - lo <= 10:
            score: dict[str, Any] = {"type": "integer", "enum": list(range(int(lo), int(hi) + 1))}
        else:
            score = {"type": "number", "minimum": lo, "maximum": hi}
        return {
            "type": "object",
            "properties": {
                "score": score,
                "verdict": {"type": "string", "enum": ["pass", "fail"]},
                "reasons": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["score", "verdict", "reasons"],
        }

    def messages(self, ctx: EvalContext) -> list[Message]:
        """The judge's prompt for one reply."""
        lo, hi = self.scale
        parts = [f"RUBRIC:\n{self.rubric.strip()}"]
        if ctx.prompt:
            parts.append(f"TASK GIVEN TO THE MODEL:\n{ctx.prompt.strip()}")
        parts.append(f"RESPONSE TO GRADE:\n{ctx.text.strip()}")
        labels = ctx.item.get("expected") if ctx.item else None
        if self.include_reference and labels is not None:
            parts.append(
                f"REFERENCE ANSWER:\n{json.dumps(labels, ensure_ascii=False, default=str)}"
            )
        parts.append(
            f"Grade the response from {lo:g} (fails the rubric) to {hi:g} (fully meets it), "
            'say "pass" or "fail", and give short reasons.'
        )
        return [
            {"role": "system", "content": _JUDGE_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    async def aevaluate(self, ctx: EvalContext) -> Score:
        from ..client import default_client

        client = ctx.client or default_client()
        parent = ctx.completion.trace_id if ctx.completion is not None else None
        item_id = ctx.item.get("id") if ctx.item else None
        started = time.perf_counter()
        try:
            done = await client.agenerate(
                messages=self.messages(ctx),
                model=self.model,
                schema=self.reply_schema(),
                confidence=False,
                parent_id=parent,
                item_id=str(item_id) if item_id is not None else None,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except Exception as exc:
            failed = self.failed(f"judge call failed: {type(exc).__name__}: {exc}")
            cost = Totals(n_calls=1, latency_s=time.perf_counter() - started)
            return failed.model_copy(update={"spend": cost})
        spend = Totals()
        spend.add(done)
        return self.read(done.text, done.parsed).model_copy(
            update={"spend": spend, "trace_id": done.trace_id}
        )

    def evaluate(self, ctx: EvalContext) -> Score:
        """Sync form for scripts and notebooks (not from inside a running labkit coroutine)."""
        from ..client import default_client

        result: Score = (ctx.client or default_client()).run(self.aevaluate(ctx))
        return result

    def read(self, text: str, parsed: Any = None) -> Score:
        """Turn a judge's raw reply into a Score (parsed with `labkit.structured.parse`)."""
        if parsed is None:
            from ..structured.extract import parse

            parsed = parse(text, self.reply_schema())
        value = getattr(parsed, "value", None)
        if isinstance(value, BaseModel):
            value = value.model_dump()
        excerpt = text.strip().replace("\n", " ")[:160]
        if not isinstance(value, Mapping):
            return self.failed(f"judge reply is not a JSON object: {excerpt!r}")
        raw = value.get("score")
        try:
            grade = float(raw)  # type: ignore[arg-type]
            if isinstance(raw, bool) or not math.isfinite(grade):
                raise ValueError
        except (TypeError, ValueError):
            return self.failed(f"judge reply has no numeric score: {excerpt!r}")
        lo, hi = self.scale
        if not lo <= grade <= hi:
            return self.failed(f"judge score {grade:g} is outside the {lo:g}-{hi:g} scale")
        norm = (grade - lo) / (hi - lo)
        passed = norm >= self.threshold
        reasons = value.get("reasons")
        if isinstance(reasons, list):
            why = "; ".join(str(r) for r in reasons if str(r).strip())
        else:
            why = str(reasons or "").strip()
        reason = f"judge {grade:g}/{hi:g}" + (f": {why}" if why else "")
        verdict = str(value.get("verdict") or "").strip().lower()
        if verdict in ("pass", "fail") and (verdict == "pass") != passed:
            reason += f" (verdict {verdict!r} disagrees with the score)"
        return self.score(norm, passed, reason)

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "rubric": self.rubric,
            "model": self.model,
            "threshold": self.threshold,
            "scale": list(self.scale),
            "include_reference": self.include_reference,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "name": self.name,
        }


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
    """Wall time of this run (a fully cached re-run is near zero; `totals.latency_s` is not)."""
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
            out.append(CallableEvaluator(ev))
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
    from ..client import default_client

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

    from ..tracing import new_id

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
    result = EvalLoopResult(
        best=best,
        attempts=attempts,
        passed=best.passed,
        threshold=float(threshold),
        stopped=stopped,
        totals=totals + judged,
        judge_totals=judged,
        wall_s=time.perf_counter() - started,
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
    client.tracer.record(
        kind="parent",
        call_id=result.trace_id,
        parent_id=parent_id,
        run_id=kwargs.get("run_id"),
        item_id=kwargs.get("item_id"),
        alias=best.alias if best else None,
        model=best.model if best else None,
        status="ok" if best is not None else "error",
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
    from ..client import default_client

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
