"""Evaluators: checks that look at one reply and say how good it is.

An evaluator looks at one reply (an `EvalContext`: raw text, parsed value, the dataset row, the
completion) and returns a `Score`: a value in 0-1, passed or not, a reason a person (or the
next prompt) can act on, and `error` when the evaluator itself could not judge. Evaluators
never raise through `run_evaluators`: a crash is a Score with `error` set, so one broken check
cannot sink a grid run.

Built-ins, each round-tripping through `spec()` / `evaluator_from_spec` (specs.py):

    ExactMatch         reply (or one field) equals the expected answer
    FieldMatch         parsed value vs the row's `expected` dict, field by field
    InEnum             a field (or the reply) is one of a fixed set of values
    Regex              a field (or the reply) matches a pattern
    NumericTolerance   a numeric field is within a tolerance of the expected number
    SchemaValid        the structured reply parsed and validated against its schema
    ConfidenceAbove    the model's self-reported confidence reaches a threshold
    FunctionEvaluator  any Python function of the context (also via the `@evaluator` decorator)
    LLMJudge           a rubric answered by a judge model as JSON (judge.py)

The evaluate-then-refine loop that feeds these scores back to the model is in refine.py.

Oracle warning: evaluators that read ground truth (FieldMatch, ExactMatch/NumericTolerance
against `item["expected"]`, a judge with `include_reference=True`) quote the right answer in
their reasons. Inside the loop that feedback reaches the model, so they measure; label-free
evaluators (schema, enum, regex, confidence, a reference-free judge) are the ones that may
decide retries in a claim about production.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections import abc as cabc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, overload

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..structured import Parsed, parse
from ..types import Completion
from ..usage import Totals

if TYPE_CHECKING:
    from ..client import Client

__all__ = [
    "ConfidenceAbove",
    "EvalContext",
    "Evaluator",
    "ExactMatch",
    "FieldMatch",
    "FunctionEvaluator",
    "InEnum",
    "NumericTolerance",
    "Regex",
    "SchemaValid",
    "Score",
    "combine",
    "evaluator",
    "run_evaluators",
]


# ---------------------------------------------------------------------------- results
class Score(BaseModel):
    """One evaluator's verdict on one reply."""

    model_config = ConfigDict(extra="forbid")

    evaluator: str
    """Name of the evaluator that produced it."""
    value: float = Field(ge=0.0, le=1.0)
    """0 (wrong) to 1 (right); graded evaluators use the range in between."""
    passed: bool
    reason: str = ""
    """Why, in words the next prompt can act on (quoted by `default_refine`)."""
    error: str | None = None
    """Set when the evaluator could not judge (it raised, the judge's reply was unusable):
    then `passed` is False and `combine` leaves the value out of the mean."""
    field_correct: dict[str, bool] = Field(default_factory=dict)
    """Per-field correctness against the expected labels, when the evaluator knows it."""
    spend: Totals | None = None
    """What the evaluator itself spent on model calls (LLM judges); None for programmatic ones."""
    trace_id: str | None = None
    """The evaluator's own call (an LLM judge's completion), a child of the judged call."""


@dataclass
class EvalContext:
    """Everything an evaluator may look at for one reply."""

    text: str
    """The raw reply."""
    value: Any
    """The parsed value (`parsed.value`), or None without a schema."""
    parsed: Parsed | None
    item: Mapping[str, Any]
    """The dataset row; its `expected` dict holds the ground truth. {} outside datasets."""
    completion: Completion | None = None
    client: Client | None = None
    """The client to make judge calls through (the default client when None)."""
    prompt: str | None = None
    """The rendered task prompt: the last user message of the first attempt."""

    @classmethod
    def from_completion(
        cls,
        completion: Completion,
        item: Mapping[str, Any] | None = None,
        *,
        client: Client | None = None,
        prompt: str | None = None,
    ) -> EvalContext:
        return cls(
            text=completion.text,
            value=completion.value,
            parsed=completion.parsed,
            item=item or {},
            completion=completion,
            client=client,
            prompt=prompt,
        )


# ---------------------------------------------------------------------------- base class
class Evaluator:
    """Base class: implement `evaluate` (or `aevaluate` for I/O) and `spec`.

    Subclasses that set `type_name` are registered for `evaluator_from_spec`; their
    constructor keywords must be the keys of their `spec()` (besides "type").
    """

    type_name: ClassVar[str] = ""
    spec_keys: ClassVar[tuple[str, ...]] = ("name",)
    """Constructor keywords that `spec()` records (read back from same-named attributes)."""
    _types: ClassVar[dict[str, type[Evaluator]]] = {}
    name: str = "evaluator"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            Evaluator._types[cls.type_name] = cls

    async def aevaluate(self, ctx: EvalContext) -> Score:
        return self.evaluate(ctx)

    def evaluate(self, ctx: EvalContext) -> Score:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(ctx)")

    def spec(self) -> dict[str, Any]:
        """A JSON/YAML-safe description; `evaluator_from_spec(ev.spec())` rebuilds `ev`."""
        out = {"type": self.type_name or type(self).__name__}
        return out | {k: getattr(self, k) for k in self.spec_keys}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "type")
        return f"{type(self).__name__}({args})"

    # helpers for subclasses
    def score(self, value: float, passed: bool, reason: str = "", **extra: Any) -> Score:
        return Score(evaluator=self.name, value=value, passed=passed, reason=reason, **extra)

    def failed(self, error: str, reason: str = "") -> Score:
        return Score(evaluator=self.name, value=0.0, passed=False, reason=reason, error=error)


async def run_evaluators(evaluators: Sequence[Evaluator], ctx: EvalContext) -> list[Score]:
    """Every evaluator's Score, in order and concurrently; an evaluator that raises (or returns
    something other than a Score) gives an error Score instead of an exception."""
    import asyncio

    async def one(ev: Evaluator) -> Score:
        name = getattr(ev, "name", type(ev).__name__)
        try:
            out = await ev.aevaluate(ctx)
            if not isinstance(out, Score):
                raise TypeError(f"returned {type(out).__name__}, not a Score")
            return out
        except Exception as exc:
            return Score(
                evaluator=str(name),
                value=0.0,
                passed=False,
                reason=f"evaluator {name!r} raised",
                error=f"{type(exc).__name__}: {exc}",
            )

    if len(evaluators) == 1:  # nothing to overlap: no task, no gather (a grid's common case)
        return [await one(evaluators[0])]
    return list(await asyncio.gather(*(one(ev) for ev in evaluators)))


def combine(scores: Sequence[Score]) -> tuple[float, bool]:
    """(mean value over non-error scores, or 0.0; every score passed and none errored)."""
    good = [s.value for s in scores if s.error is None]
    mean = sum(good) / len(good) if good else 0.0
    return mean, bool(scores) and all(s.passed and s.error is None for s in scores)


# ---------------------------------------------------------------------------- helpers
_MISSING: Any = object()


def _lookup(data: Any, path: str) -> Any:
    """`data["a"]["b"]` for path "a.b"; _MISSING when any step is absent."""
    for part in path.split("."):
        if type(data) is not dict:  # a plain dict (parsed JSON) skips the slower ABC checks
            if isinstance(data, BaseModel):
                data = data.model_dump()
            if not isinstance(data, Mapping):
                return _MISSING
        if part not in data:
            return _MISSING
        data = data[part]
    return data


def _actual(ctx: EvalContext, field: str | None) -> Any:
    """The reply text (field None) or one field of the parsed value (_MISSING when absent)."""
    if field is None:
        return ctx.text
    return _lookup(ctx.value, field)


def _expected(ctx: EvalContext, key: str) -> Any:
    """Ground truth: `item["expected"][key]`, else a top-level `item[key]`; _MISSING if neither."""
    labels = ctx.item.get("expected") if ctx.item else None
    if isinstance(labels, Mapping):
        found = _lookup(labels, key)
        if found is not _MISSING:
            return found
    return _lookup(ctx.item, key) if ctx.item else _MISSING


def _norm(value: Any) -> Any:
    """Comparison form: strings case-folded with whitespace collapsed, numbers as floats."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, BaseModel):
        return _norm(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): _norm(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    """Loose equality used by the matchers: case/whitespace-insensitive strings, 3 == 3.0,
    "3" == 3, but True != 1 and None only equals None."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    na, nb = _norm(a), _norm(b)
    if (isinstance(na, float) and isinstance(nb, str)) or (
        isinstance(nb, float) and isinstance(na, str)
    ):
        try:
            return float(na) == float(nb)
        except ValueError:
            return False
    if isinstance(na, list) and isinstance(nb, list):
        return len(na) == len(nb) and all(same(x, y) for x, y in zip(a, b, strict=False))
    return bool(na == nb)


def _show(value: Any, limit: int = 80) -> str:
    if value is _MISSING:
        return "(missing)"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _suffix(field: str | None) -> str:
    return f":{field}" if field else ""


# ---------------------------------------------------------------------------- built-ins
class ExactMatch(Evaluator):
    """The reply (or `field` of the parsed value) equals the expected answer.

    The expected answer is `expected=` when given, else `item["expected"][expected_key]`
    (`expected_key` defaults to `field`, then "answer"). With `normalize` (default) strings
    compare case- and whitespace-insensitively; `normalize=False` compares exactly after
    stripping the reply.
    """

    type_name = "exact_match"
    spec_keys = ("expected_key", "field", "normalize", "name")

    def __init__(
        self,
        expected_key: str | None = None,
        field: str | None = None,
        *,
        expected: Any = _MISSING,
        normalize: bool = True,
        name: str | None = None,
    ) -> None:
        self.field = field
        self.expected_key = expected_key or field or "answer"
        self.expected = expected
        self.normalize = normalize
        self.name = name or f"exact_match{_suffix(field)}"

    def evaluate(self, ctx: EvalContext) -> Score:
        want = self.expected if self.expected is not _MISSING else _expected(ctx, self.expected_key)
        if want is _MISSING:
            return self.failed(
                f"no expected value {self.expected_key!r} in the item; pass expected=... or "
                "add it to the dataset's expected labels"
            )
        got = _actual(ctx, self.field)
        if isinstance(got, str) and self.field is None:
            got = got.strip()
        ok = same(got, want) if self.normalize else got == want
        what = self.field or "reply"
        reason = f"{what} matches" if ok else f"{what} is {_show(got)}, expected {_show(want)}"
        return self.score(float(ok), ok, reason)

    def spec(self) -> dict[str, Any]:
        extra = {} if self.expected is _MISSING else {"expected": self.expected}
        return super().spec() | extra


class FieldMatch(Evaluator):
    """Parsed value vs `item["expected"]`, field by field.

    `fields` defaults to every expected field of the row. Strings compare case- and
    whitespace-insensitively ("Positive " == "positive"), numbers by value (3 == 3.0 == "3"),
    lists element-wise, None only with None. value = share of fields correct; passed = all.
    """

    type_name = "field_match"
    spec_keys = ("fields", "name")

    def __init__(self, fields: Sequence[str] | None = None, *, name: str | None = None) -> None:
        self.fields = list(fields) if fields is not None else None
        self.name = name or "field_match"

    def evaluate(self, ctx: EvalContext) -> Score:
        labels = ctx.item.get("expected") if ctx.item else None
        if not isinstance(labels, Mapping) or not labels:
            return self.failed("the item has no expected labels to match against")
        fields = self.fields if self.fields is not None else [str(k) for k in labels]
        absent = [f for f in fields if _lookup(labels, f) is _MISSING]
        if absent:
            return self.failed(f"expected labels have no field(s) {absent}")
        correct: dict[str, bool] = {}
        wrong: list[str] = []
        for f in fields:
            got, want = _lookup(ctx.value, f), _lookup(labels, f)
            correct[f] = got is not _MISSING and same(got, want)
            if not correct[f]:
                wrong.append(f"{f} is {_show(got)}, expected {_show(want)}")
        n_ok = sum(correct.values())
        if ctx.value is None and ctx.parsed is not None:  # a schema was given; nothing parsed
            reason = "no JSON object could be read from the reply, so no field can match"
        elif ctx.value is None:
            reason = "no parsed value (ask with schema=...)"
        else:
            reason = "; ".join(wrong) if wrong else f"all {len(fields)} field(s) match"
        return self.score(n_ok / len(fields), n_ok == len(fields), reason, field_correct=correct)


class InEnum(Evaluator):
    """`field` of the parsed value (or the whole reply, when field is None) is one of `values`
    (strings case- and whitespace-insensitive)."""

    type_name = "in_enum"
    spec_keys = ("field", "values", "name")

    def __init__(
        self, field: str | None, values: Sequence[Any], *, name: str | None = None
    ) -> None:
        if not values:
            raise ValueError("InEnum needs at least one allowed value")
        self.field = field
        self.values = list(values)
        self.name = name or f"in_enum{_suffix(field)}"

    def evaluate(self, ctx: EvalContext) -> Score:
        got = _actual(ctx, self.field)
        if isinstance(got, str) and self.field is None:
            got = got.strip()
        ok = got is not _MISSING and any(same(got, v) for v in self.values)
        what = self.field or "reply"
        reason = (
            f"{what} is one of the allowed values"
            if ok
            else f"{what} is {_show(got)}; it must be one of {self.values}"
        )
        return self.score(float(ok), ok, reason)


class Regex(Evaluator):
    """The reply (or `field` of the parsed value, as text) contains a match of `pattern`
    (`re.search`; anchor with ^...$ for a full match)."""

    type_name = "regex"
    spec_keys = ("pattern", "field", "ignore_case", "name")

    def __init__(
        self,
        pattern: str,
        field: str | None = None,
        *,
        ignore_case: bool = False,
        name: str | None = None,
    ) -> None:
        self.pattern = pattern
        self.field = field
        self.ignore_case = ignore_case
        self._re = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        self.name = name or f"regex{_suffix(field)}"

    def evaluate(self, ctx: EvalContext) -> Score:
        got = _actual(ctx, self.field)
        what = self.field or "reply"
        if got is _MISSING or got is None:
            return self.score(0.0, False, f"{what} is missing, so it cannot match /{self.pattern}/")
        ok = self._re.search(str(got)) is not None
        reason = (
            f"{what} matches /{self.pattern}/"
            if ok
            else f"{what} {_show(got)} does not match /{self.pattern}/"
        )
        return self.score(float(ok), ok, reason)


class NumericTolerance(Evaluator):
    """`field` is a number within `tolerance` of the expected one (absolute, or relative to
    the expected value when `relative`). Graded: 1 inside the tolerance, else
    tolerance / distance, so nearer misses score higher (0 with tolerance 0)."""

    type_name = "numeric_tolerance"
    spec_keys = ("field", "tolerance", "relative", "expected_key", "expected", "name")

    def __init__(
        self,
        field: str,
        tolerance: float,
        relative: bool = False,
        *,
        expected_key: str | None = None,
        expected: float | None = None,
        name: str | None = None,
    ) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
        self.field = field
        self.tolerance = float(tolerance)
        self.relative = relative
        self.expected_key = expected_key or field
        self.expected = expected
        self.name = name or f"numeric_tolerance{_suffix(field)}"

    def evaluate(self, ctx: EvalContext) -> Score:
        want = self.expected if self.expected is not None else _expected(ctx, self.expected_key)
        try:
            target = float(want)
        except (TypeError, ValueError):
            return self.failed(
                f"expected value {self.expected_key!r} is not a number: {_show(want)}"
            )
        got = _lookup(ctx.value, self.field)
        try:
            number = float(got)
            if isinstance(got, bool) or not math.isfinite(number):
                raise ValueError
        except (TypeError, ValueError):
            return self.score(0.0, False, f"{self.field} is {_show(got)}, not a number")
        allowed = self.tolerance * abs(target) if self.relative else self.tolerance
        distance = abs(number - target)
        ok = distance <= allowed
        value = 1.0 if ok else (allowed / distance if distance else 0.0)
        reason = (
            f"{self.field}={number:g} is within {allowed:g} of {target:g}"
            if ok
            else f"{self.field}={number:g} is {distance:g} away from {target:g} (allowed {allowed:g})"
        )
        return self.score(value, ok, reason)


class SchemaValid(Evaluator):
    """The structured reply parsed and validated (`parsed.ok`). With `strict`, a reply that
    needed any repair fails too. With `schema=` it parses the raw text itself, for calls made
    without `schema=`."""

    type_name = "schema_valid"
    spec_keys = ("strict", "name")

    def __init__(
        self, schema: Any = None, *, strict: bool = False, name: str | None = None
    ) -> None:
        self.schema = schema
        self.strict = strict
        self.name = name or "schema_valid"

    def evaluate(self, ctx: EvalContext) -> Score:
        parsed = ctx.parsed
        if self.schema is not None:
            parsed = parse(ctx.text, self.schema)
        if parsed is None:
            return self.failed(
                "no parsed reply: call generate with schema=..., or give SchemaValid(schema=...)"
            )
        problems = [str(e) for e in (getattr(parsed, "errors", None) or [])]
        missing = list(getattr(parsed, "missing", None) or [])
        if missing:
            problems.append(f"missing field(s) {missing}")
        repairs = list(
            getattr(parsed, "repair_steps", None) or getattr(parsed, "repairs", None) or []
        )
        ok = bool(getattr(parsed, "ok", False)) and not missing
        if ok and self.strict and repairs:
            ok = False
            problems.append(f"needed repair ({'; '.join(map(str, repairs))})")
        if ok:
            reason = "valid JSON for the schema" + (" after repair" if repairs else "")
        else:
            reason = "; ".join(problems) or "the reply is not valid JSON for the schema"
        return self.score(float(ok), ok, reason)

    def spec(self) -> dict[str, Any]:
        schema = self.schema
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema = schema.model_json_schema()  # loads back as a JSON Schema
        return super().spec() | {"schema": schema}


class ConfidenceAbove(Evaluator):
    """The model's self-reported confidence (asked for by `generate(..., confidence=True)`) for
    `field`, or its lowest over all fields when None, reaches `threshold`. Value = that
    confidence."""

    type_name = "confidence_above"
    spec_keys = ("threshold", "field", "name")

    def __init__(
        self, threshold: float, field: str | None = None, *, name: str | None = None
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0-1, got {threshold!r}")
        self.threshold = float(threshold)
        self.field = field
        self.name = name or f"confidence_above{_suffix(field)}"

    def evaluate(self, ctx: EvalContext) -> Score:
        confs = getattr(ctx.parsed, "confidences", None)
        if not isinstance(confs, Mapping) or not confs:
            return self.score(
                0.0, False, "no confidence was reported (ask with schema=... and confidence=True)"
            )
        if self.field is not None:
            if self.field not in confs or confs[self.field] is None:
                return self.score(0.0, False, f"no confidence reported for {self.field}")
            conf, where = confs[self.field], self.field
        else:
            usable = {k: v for k, v in confs.items() if isinstance(v, int | float)}
            if not usable:
                return self.score(0.0, False, "no numeric confidence was reported")
            where = min(usable, key=lambda k: usable[k])
            conf = usable[where]
        value = min(max(float(conf), 0.0), 1.0)
        ok = value >= self.threshold
        verb = "reaches" if ok else "is below"
        return self.score(
            value, ok, f"confidence {value:.2f} for {where} {verb} {self.threshold:g}"
        )


class FunctionEvaluator(Evaluator):
    """Any function of the context, sync or async. It may return a `Score`, a bool, a number in
    0-1 (passed when >= `threshold`) or a `(bool | number, reason)` pair."""

    type_name = "callable"
    spec_keys = ("ref", "name", "threshold")

    def __init__(
        self,
        fn: cabc.Callable[[EvalContext], Any],
        name: str | None = None,
        *,
        threshold: float = 0.5,
    ) -> None:
        self.fn = fn
        self.threshold = threshold
        self.name = name or str(getattr(fn, "__name__", "callable"))

    async def aevaluate(self, ctx: EvalContext) -> Score:
        out = self.fn(ctx)
        if inspect.isawaitable(out):
            out = await out
        return self._to_score(out)

    def evaluate(self, ctx: EvalContext) -> Score:
        out = self.fn(ctx)
        if inspect.isawaitable(out):
            if inspect.iscoroutine(out):
                out.close()
            raise TypeError(f"{self.name} is async; use `await ev.aevaluate(ctx)`")
        return self._to_score(out)

    def _to_score(self, out: Any) -> Score:
        reason = ""
        if isinstance(out, Score):
            return out.model_copy(update={"evaluator": self.name})
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], str):
            out, reason = out
        if isinstance(out, bool):
            return self.score(float(out), out, reason)
        if isinstance(out, int | float) and math.isfinite(out):
            return self.score(float(out), float(out) >= self.threshold, reason)
        raise TypeError(
            f"returned {out!r}; return a bool, a number in 0-1, (value, reason) or a Score"
        )

    @property
    def ref(self) -> str | None:
        """ "module:qualname" when the function can be imported again (not a lambda, a
        closure or a notebook cell)."""
        module = getattr(self.fn, "__module__", None)
        qualname = getattr(self.fn, "__qualname__", "")
        if not module or module == "__main__" or "<" in qualname:
            return None
        try:
            target = _import_ref(f"{module}:{qualname}")
        except (ImportError, AttributeError):
            return None
        if target is self.fn or getattr(target, "fn", None) is self.fn:
            return f"{module}:{qualname}"
        return None

    @classmethod
    def from_ref(cls, args: Mapping[str, Any]) -> Evaluator:
        ref, name = args.get("ref"), args.get("name")
        unknown = sorted(set(args) - {"ref", "name", "threshold"})
        if unknown:
            raise ConfigError(f"evaluator 'callable': unknown key(s) {unknown}", where="evaluator")
        if not ref or ":" not in str(ref):
            raise ConfigError(
                f"callable evaluator {name!r} has no importable reference; define the function "
                "at the top level of a module (not a lambda or notebook cell) and export again",
                where="evaluator",
            )
        try:
            target = _import_ref(str(ref))
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import evaluator {ref!r}: {exc}", where="evaluator") from exc
        if isinstance(target, Evaluator):
            return target
        if not callable(target):
            raise ConfigError(f"{ref!r} is not callable", where="evaluator")
        return cls(target, name=name, threshold=float(args.get("threshold", 0.5)))


def _import_ref(ref: str) -> Any:
    module, qualname = ref.split(":", 1)
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


@overload
def evaluator(fn: cabc.Callable[[EvalContext], Any], /) -> FunctionEvaluator: ...
@overload
def evaluator(
    *, name: str | None = None, threshold: float = 0.5
) -> cabc.Callable[[cabc.Callable[[EvalContext], Any]], FunctionEvaluator]: ...
def evaluator(
    fn: cabc.Callable[[EvalContext], Any] | None = None,
    /,
    *,
    name: str | None = None,
    threshold: float = 0.5,
) -> FunctionEvaluator | cabc.Callable[[cabc.Callable[[EvalContext], Any]], FunctionEvaluator]:
    """Turn a function of the context into an evaluator: `@evaluator` or
    `@evaluator(name=..., threshold=...)`. Defined at module top level, it exports by reference."""

    def wrap(f: cabc.Callable[[EvalContext], Any]) -> FunctionEvaluator:
        return FunctionEvaluator(f, name=name, threshold=threshold)

    return wrap(fn) if fn is not None else wrap
