"""The LLM judge: a rubric answered by a judge model as JSON, scored like any evaluator.

The judge's call goes through `Client.agenerate` (cached, traced as a child of the judged
completion, policy-wrapped) and its tokens, cost and time are reported on its Score.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ..client import default_client
from ..structured import parse
from ..types import Message
from ..usage import Totals
from .checks import EvalContext, Evaluator, Score

__all__ = ["LLMJudge"]


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
            cost = Totals(n_calls=1, latency_s_sum=time.perf_counter() - started)
            return failed.model_copy(update={"spend": cost})
        spend = Totals()
        spend.add(done)
        return self.read(done.text, done.parsed).model_copy(
            update={"spend": spend, "trace_id": done.trace_id}
        )

    def evaluate(self, ctx: EvalContext) -> Score:
        """Sync form for scripts and notebooks (not from inside a running labkit coroutine)."""

        result: Score = (ctx.client or default_client()).run(self.aevaluate(ctx))
        return result

    def read(self, text: str, parsed: Any = None) -> Score:
        """Turn a judge's raw reply into a Score (parsed with `labkit.structured.parse`)."""
        if parsed is None:
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
