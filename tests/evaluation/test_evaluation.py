"""Evaluators, the LLM judge and the evaluate-then-refine loop (issue 5).

The loop's control flow runs on a scripted FakeBackend (what reached the model is asserted from
`FakeBackend.history`); one test runs the real embedded model on two dataset rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from labkit.client import Client
from labkit.errors import ConfigError, InputError
from labkit.evaluation import (
    Attempt,
    ConfidenceAbove,
    EvalContext,
    Evaluator,
    ExactMatch,
    FieldMatch,
    FunctionEvaluator,
    InEnum,
    LLMJudge,
    NumericTolerance,
    Regex,
    SchemaValid,
    Score,
    combine,
    default_refine,
    evaluator,
    evaluator_from_spec,
    generate_with_evaluation,
    run_evaluators,
)
from labkit.models import Registry
from labkit.testing import FakeBackend, provider_error
from labkit.types import Completion, Request, Usage

SENTIMENT = {"sentiment": ["positive", "negative", "neutral"]}


def ctx(
    text: str = "", value: Any = None, item: dict[str, Any] | None = None, parsed: Any = None
) -> EvalContext:
    return EvalContext(text=text, value=value, parsed=parsed, item=item or {})


def run(evals: list[Evaluator], c: EvalContext) -> list[Score]:
    import asyncio

    return asyncio.run(run_evaluators(evals, c))


@pytest.fixture
def make_client(tmp_path: Path) -> Any:
    """A client whose `fake/` models answer from the given script (shared cache dir per test)."""
    made: list[Client] = []

    def make(outputs: Any, *, cycle: bool = False) -> tuple[Client, FakeBackend]:
        client = Client(
            registry=Registry(), cache_dir=tmp_path / "cache", traces=tmp_path / "traces.db"
        )
        backend = FakeBackend(outputs, cycle=cycle)
        client.add_backend("fake", backend)
        made.append(client)
        return client, backend

    yield make
    for client in made:
        client.close()


# ------------------------------------------------------------------ programmatic evaluators
ROW = {"id": "r1", "review": "meh", "expected": {"sentiment": "positive", "stars": 4}}


@pytest.mark.parametrize(
    ("value", "correct", "share"),
    [
        ({"sentiment": "Positive ", "stars": 4.0}, {"sentiment": True, "stars": True}, 1.0),
        ({"sentiment": " positive", "stars": "4"}, {"sentiment": True, "stars": True}, 1.0),
        ({"sentiment": "negative", "stars": 4}, {"sentiment": False, "stars": True}, 0.5),
        ({"sentiment": "positive"}, {"sentiment": True, "stars": False}, 0.5),
        ({"sentiment": True, "stars": 4}, {"sentiment": False, "stars": True}, 0.5),
        (None, {"sentiment": False, "stars": False}, 0.0),
        ("positive", {"sentiment": False, "stars": False}, 0.0),
    ],
)
def test_field_match_compares_field_by_field(
    value: Any, correct: dict[str, bool], share: float
) -> None:
    (score,) = run([FieldMatch()], ctx(value=value, item=ROW))
    assert score.field_correct == correct
    assert score.value == share
    assert score.passed is (share == 1.0)
    assert score.error is None


def test_field_match_reasons_and_missing_labels() -> None:
    (score,) = run([FieldMatch(["sentiment"])], ctx(value={"sentiment": "neutral"}, item=ROW))
    assert score.field_correct == {"sentiment": False}
    assert "'neutral'" in score.reason and "'positive'" in score.reason
    (no_labels,) = run([FieldMatch()], ctx(value={"sentiment": "x"}, item={"id": "u"}))
    assert no_labels.error and not no_labels.passed
    (bad_field,) = run([FieldMatch(["topic"])], ctx(value={}, item=ROW))
    assert bad_field.error and "topic" in bad_field.error


@pytest.mark.parametrize(
    ("ev", "c", "passed"),
    [
        (ExactMatch(), ctx("  Paris \n", item={"expected": {"answer": "paris"}}), True),
        (ExactMatch(normalize=False), ctx("Paris", item={"expected": {"answer": "paris"}}), False),
        (ExactMatch(), ctx("Paris", item={"answer": "Paris"}), True),  # top-level column
        (
            ExactMatch(field="city"),
            ctx(value={"city": "Rome"}, item={"expected": {"city": "Rome"}}),
            True,
        ),
        (ExactMatch(expected=42, field="n"), ctx(value={"n": 42.0}), True),
        (ExactMatch(expected=42, field="n"), ctx(value={"n": 41}), False),
        (InEnum("label", ["a", "b"]), ctx(value={"label": " B"}), True),
        (InEnum("label", ["a", "b"]), ctx(value={"label": "c"}), False),
        (InEnum("label", ["a", "b"]), ctx(value={}), False),
        (InEnum(None, ["yes", "no"]), ctx("Yes\n"), True),
        (Regex(r"^\d{3}-\d{4}$", field="phone"), ctx(value={"phone": "555-1234"}), True),
        (Regex(r"refund", ignore_case=True), ctx("A REFUND is due"), True),
        (Regex(r"refund"), ctx("no match here"), False),
        (Regex(r".", field="missing"), ctx(value={}), False),
        (NumericTolerance("x", 0.5), ctx(value={"x": 10.4}, item={"expected": {"x": 10}}), True),
        (
            NumericTolerance("x", 0.1, relative=True),
            ctx(value={"x": 109}, item={"expected": {"x": 100}}),
            True,
        ),
        (NumericTolerance("x", 0.5), ctx(value={"x": 12}, item={"expected": {"x": 10}}), False),
        (NumericTolerance("x", 0.5), ctx(value={"x": "n/a"}, item={"expected": {"x": 10}}), False),
        (NumericTolerance("x", 0.5, expected=3), ctx(value={"x": True}), False),
    ],
)
def test_builtin_evaluators(ev: Evaluator, c: EvalContext, passed: bool) -> None:
    (score,) = run([ev], c)
    assert score.passed is passed, score.reason
    assert score.error is None
    assert score.value == (1.0 if passed else score.value)
    assert score.reason


def test_numeric_tolerance_grades_near_misses_higher() -> None:
    ev = NumericTolerance("x", 1.0)
    near, far = (
        ev.evaluate(ctx(value={"x": v}, item={"expected": {"x": 0}})).value for v in (2, 10)
    )
    assert near == 0.5 and far == 0.1


def test_exact_match_without_expected_is_an_evaluator_error() -> None:
    (score,) = run([ExactMatch()], ctx("x"))
    assert score.error and "expected" in score.error and not score.passed


def fake_parsed(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = dict(
        ok=True, value={}, missing=[], errors=[], repair_steps=[], confidences={}
    )
    return SimpleNamespace(**(base | kw))


@pytest.mark.parametrize(
    ("ev", "parsed", "passed"),
    [
        (SchemaValid(), fake_parsed(), True),
        (SchemaValid(), fake_parsed(repair_steps=["closed a brace"]), True),
        (SchemaValid(strict=True), fake_parsed(repair_steps=["closed a brace"]), False),
        (SchemaValid(), fake_parsed(ok=False, errors=["not JSON"]), False),
        (SchemaValid(), fake_parsed(missing=["sentiment"]), False),
        (ConfidenceAbove(0.7), fake_parsed(confidences={"a": 0.9, "b": 0.8}), True),
        (ConfidenceAbove(0.7), fake_parsed(confidences={"a": 0.9, "b": 0.6}), False),
        (ConfidenceAbove(0.7, field="a"), fake_parsed(confidences={"a": 0.9, "b": 0.6}), True),
        (ConfidenceAbove(0.7, field="c"), fake_parsed(confidences={"a": 0.9}), False),
        (ConfidenceAbove(0.7), fake_parsed(confidences={}), False),
    ],
)
def test_parse_based_evaluators(ev: Evaluator, parsed: Any, passed: bool) -> None:
    (score,) = run([ev], ctx("{}", parsed=parsed))
    assert score.passed is passed, score.reason
    assert score.error is None


def test_schema_valid_without_parsed_reply_says_how_to_fix() -> None:
    (score,) = run([SchemaValid()], ctx("{}"))
    assert score.error and "schema=" in score.error


def test_confidence_value_is_the_confidence() -> None:
    score = ConfidenceAbove(0.5).evaluate(ctx(parsed=fake_parsed(confidences={"a": 0.8, "b": 0.3})))
    assert score.value == pytest.approx(0.3) and "b" in score.reason


# ------------------------------------------------------------------ callables
def is_short(c: EvalContext) -> bool:
    return len(c.text) < 10


@evaluator(name="has_digit", threshold=0.9)
def has_digit(c: EvalContext) -> tuple[float, str]:
    return (1.0 if any(ch.isdigit() for ch in c.text) else 0.0), "looked for a digit"


@pytest.mark.parametrize(
    ("fn", "value", "passed", "reason"),
    [
        (lambda c: True, 1.0, True, ""),
        (lambda c: 0.4, 0.4, False, ""),
        (lambda c: 0.6, 0.6, True, ""),
        (lambda c: (False, "too long"), 0.0, False, "too long"),
        (lambda c: Score(evaluator="other", value=0.7, passed=True, reason="r"), 0.7, True, "r"),
    ],
)
def test_callable_return_shapes(fn: Any, value: float, passed: bool, reason: str) -> None:
    (score,) = run([FunctionEvaluator(fn, name="mine")], ctx("text"))
    assert (score.evaluator, score.value, score.passed, score.reason) == (
        "mine",
        value,
        passed,
        reason,
    )


def test_async_callable_and_decorator() -> None:
    async def judged(c: EvalContext) -> bool:
        return c.text == "ok"

    scores = run([FunctionEvaluator(judged), has_digit, evaluator(is_short)], ctx("ok 1"))
    assert [(s.evaluator, s.passed) for s in scores] == [
        ("judged", False),
        ("has_digit", True),
        ("is_short", True),
    ]
    assert scores[1].reason == "looked for a digit"


def test_run_evaluators_never_raises() -> None:
    def boom(c: EvalContext) -> bool:
        raise ValueError("bad input")

    scores = run(
        [
            FunctionEvaluator(boom),
            FunctionEvaluator(lambda c: 1.5, name="too_big"),
            FunctionEvaluator(lambda c: None, name="none"),
            InEnum(None, ["x"]),
        ],
        ctx("x"),
    )
    assert [s.evaluator for s in scores] == ["boom", "too_big", "none", "in_enum"]
    assert "ValueError: bad input" in (scores[0].error or "")
    assert scores[1].error and scores[2].error
    assert all(not s.passed for s in scores[:3])
    assert scores[3].passed and scores[3].error is None


def test_score_value_must_be_within_0_1() -> None:
    with pytest.raises(ValidationError):
        Score(evaluator="x", value=1.2, passed=True)
    with pytest.raises(ValidationError):
        Score(evaluator="x", value=0.5, passed=True, extra_field=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([], (0.0, False)),
        ([Score(evaluator="a", value=1, passed=True)], (1.0, True)),
        (
            [
                Score(evaluator="a", value=1, passed=True),
                Score(evaluator="b", value=0.5, passed=False),
            ],
            (0.75, False),
        ),
        (
            [
                Score(evaluator="a", value=0.8, passed=True),
                Score(evaluator="b", value=0, passed=False, error="raised"),
            ],
            (0.8, False),
        ),
        ([Score(evaluator="b", value=0, passed=False, error="raised")], (0.0, False)),
    ],
)
def test_combine(scores: list[Score], expected: tuple[float, bool]) -> None:
    assert combine(scores) == expected


# ------------------------------------------------------------------ specs
@pytest.mark.parametrize(
    "ev",
    [
        ExactMatch(),
        ExactMatch("label", expected="yes", normalize=False, name="exact"),
        FieldMatch(),
        FieldMatch(["sentiment"], name="fm"),
        InEnum("decision", ["approve", "deny", "review"]),
        Regex(r"^\d+$", field="n", ignore_case=True),
        NumericTolerance("total", 0.05, relative=True),
        SchemaValid(strict=True),
        SchemaValid({"type": "object", "properties": {"a": {"type": "string"}}}),
        ConfidenceAbove(0.7, field="sentiment"),
        FunctionEvaluator(is_short),
        has_digit,
        LLMJudge("Is it polite?", model="fake/judge", threshold=0.6, scale=(0, 10), name="polite"),
    ],
)
def test_spec_round_trips(ev: Evaluator) -> None:
    spec = ev.spec()
    assert json.loads(json.dumps(spec)) == spec  # JSON (and so YAML) safe
    again = evaluator_from_spec(spec)
    assert type(again) is type(ev)
    assert again.spec() == spec


def test_callable_spec_names_an_importable_function() -> None:
    assert FunctionEvaluator(is_short).spec()["ref"] == f"{is_short.__module__}:is_short"
    assert evaluator_from_spec(has_digit.spec()) is has_digit
    lam = FunctionEvaluator(lambda c: True, name="inline")
    assert lam.spec()["ref"] is None
    with pytest.raises(ConfigError, match="importable"):
        evaluator_from_spec(lam.spec())


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"type": "fuzzy_match"}, "unknown evaluator type 'fuzzy_match'"),
        ({"type": "in_enum", "field": "a", "values": ["x"], "colour": 1}, "colour"),
        ({"type": "in_enum", "field": "a"}, "values"),
        ({"type": "callable", "ref": "labkit.nowhere:fn"}, "cannot import"),
        ({"fields": ["a"]}, "'type'"),
    ],
)
def test_bad_specs_raise_config_error(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        evaluator_from_spec(spec)


# ------------------------------------------------------------------ the loop (scripted)
def graded(table: dict[str, float]) -> FunctionEvaluator:
    return FunctionEvaluator(
        lambda c: (table.get(c.text, 0.0), f"{c.text} is not good enough"), name="grade"
    )


def test_loop_stops_at_the_first_accepted_attempt(make_client: Any) -> None:
    client, backend = make_client(["bad", "good", "never asked"])
    result = generate_with_evaluation(
        prompt="Say something good.",
        model="fake/x",
        evaluators=[graded({"good": 1.0})],
        client=client,
    )
    assert [a.text for a in result.attempts] == ["bad", "good"]
    assert result.passed and result.best.index == 1 and result.stopped == "passed"
    assert len(backend.history) == 2


def test_loop_returns_the_best_attempt_when_none_passes(make_client: Any) -> None:
    client, backend = make_client(["meh", "better", "worse"])
    result = generate_with_evaluation(
        prompt="Say something good.",
        model="fake/x",
        evaluators=[graded({"meh": 0.4, "better": 0.7, "worse": 0.2})],
        threshold=0.9,
        client=client,
    )
    assert [a.score for a in result.attempts] == [0.4, 0.7, 0.2]
    assert result.best.text == "better" and result.text == "better"
    assert not result.passed and result.stopped == "max_attempts"
    assert len(backend.history) == 3


def test_ties_go_to_the_earliest_attempt(make_client: Any) -> None:
    client, _ = make_client(["a", "b"])
    result = generate_with_evaluation(
        prompt="q", model="fake/x", evaluators=[graded({})], max_attempts=2, client=client
    )
    assert result.best.index == 0


def test_feedback_reaches_the_next_prompt(make_client: Any) -> None:
    client, backend = make_client(['{"label": "maybe"}', '{"label": "yes"}'])
    result = generate_with_evaluation(
        prompt="Answer yes or no.",
        model="fake/x",
        evaluators=[InEnum(None, ['{"label": "yes"}'], name="enum"), Regex("yes", name="has_yes")],
        client=client,
    )
    assert result.passed and len(result.attempts) == 2
    second = backend.history[1].messages
    assert second[0] == {"role": "user", "content": "Answer yes or no."}
    assert second[1] == {"role": "assistant", "content": '{"label": "maybe"}'}
    assert second[2]["role"] == "user"
    feedback = second[2]["content"]
    assert feedback.startswith("Your previous answer failed: ")
    assert "enum: reply is" in feedback and "has_yes:" in feedback
    assert "Return the corrected answer only." in feedback  # no schema on this call
    assert result.attempts[1].messages == second


def test_refine_is_replaceable(make_client: Any) -> None:
    seen: list[tuple[int, list[str]]] = []

    def refine(
        messages: list[dict[str, Any]], attempt: Attempt, scores: list[Score]
    ) -> list[dict[str, Any]]:
        seen.append((attempt.index, [s.evaluator for s in scores]))
        return [{"role": "user", "content": f"try #{attempt.index + 2}"}]

    client, backend = make_client(["x", "y", "z"])
    generate_with_evaluation(
        prompt="first", model="fake/x", evaluators=[graded({})], refine=refine, client=client
    )
    assert backend.prompts == ["first", "try #2", "try #3"]
    assert seen == [(0, ["grade"]), (1, ["grade"])]


def test_a_refine_that_raises_keeps_the_attempts_made(make_client: Any) -> None:
    def refine(*args: Any) -> list[dict[str, Any]]:
        raise RuntimeError("oops")

    client, backend = make_client(["x"])
    result = generate_with_evaluation(
        prompt="q", model="fake/x", evaluators=[graded({})], refine=refine, client=client
    )
    assert len(result.attempts) == 1 and len(backend.history) == 1
    assert result.stopped == "refine failed: RuntimeError: oops"


def completion(text: str, prompt: int, out: int, cost: float, latency: float) -> Completion:
    return Completion(
        text=text,
        model="fake/x",
        usage=Usage(prompt_tokens=prompt, completion_tokens=out, cached_tokens=1),
        cost_usd=cost,
        latency_s=latency,
    )


def test_totals_count_every_attempt_including_failed_ones(make_client: Any) -> None:
    client, backend = make_client(
        [
            completion("wrong", 10, 5, 0.001, 0.5),
            provider_error(400),  # not retryable: this attempt fails outright
            completion("right", 30, 4, 0.002, 0.25),
        ]
    )
    result = generate_with_evaluation(
        prompt="q", model="fake/x", evaluators=[graded({"right": 1.0})], client=client
    )
    _, failed, last = result.attempts
    assert failed.completion is None and "BadRequest" in (failed.error or "")
    assert failed.score == 0.0 and not failed.passed
    assert result.best is last and result.passed
    t = result.totals
    assert (t.n_calls, t.prompt_tokens, t.completion_tokens, t.cached_tokens) == (3, 40, 9, 2)
    assert t.cost_usd == pytest.approx(0.003)
    assert t.latency_s_sum == pytest.approx(0.75 + failed.wall_s)
    assert t.wall_s == result.wall_s >= failed.wall_s
    assert result.judge_totals.n_calls == 0
    # after a failed generation the next attempt asks the same conversation again
    assert backend.history[2].messages == backend.history[1].messages
    assert backend.history[2].sample != backend.history[1].sample


def test_generation_errors_on_every_attempt_are_a_result(make_client: Any) -> None:
    client, _ = make_client([provider_error(401)])
    result = generate_with_evaluation(
        prompt="q", model="fake/x", evaluators=[graded({})], max_attempts=2, client=client
    )
    assert not result.passed and result.completion is None and result.text == ""
    assert all(a.error and "AuthError" in a.error for a in result.attempts)


def test_an_identical_rerun_makes_no_backend_call(make_client: Any) -> None:
    client, backend = make_client(["one", "two", "three", "four"])
    kwargs: dict[str, Any] = dict(
        prompt="q", model="fake/x", evaluators=[graded({"three": 0.9})], threshold=0.9
    )
    first = generate_with_evaluation(client=client, **kwargs)
    calls = len(backend.history)
    assert calls == 3
    again = generate_with_evaluation(client=client, **kwargs)
    assert len(backend.history) == calls  # every attempt answered from the cache
    assert [a.text for a in again.attempts] == [a.text for a in first.attempts]
    assert again.totals.cache_hits == again.totals.n_calls == 3
    assert again.totals.completion_tokens == first.totals.completion_tokens
    samples = [r.sample for r in backend.history]
    assert samples == [0, 1000, 2000]  # the attempt number is part of each cache key


def test_attempt_zero_is_the_single_shot_call(make_client: Any) -> None:
    client, backend = make_client(["single", "refined"])
    single = client.generate("q", model="fake/x")
    result = generate_with_evaluation(
        prompt="q", model="fake/x", evaluators=[graded({"refined": 1.0})], client=client
    )
    assert result.attempts[0].text == single.text and result.attempts[0].completion.cache_hit  # type: ignore[union-attr]
    assert len(backend.history) == 2


def test_an_evaluator_that_raises_is_recorded_and_the_loop_goes_on(make_client: Any) -> None:
    calls: list[str] = []

    def flaky(c: EvalContext) -> bool:
        calls.append(c.text)
        if len(calls) == 1:
            raise KeyError("label")
        return True

    client, _ = make_client(["a", "b"])
    result = generate_with_evaluation(
        prompt="q", model="fake/x", evaluators=[FunctionEvaluator(flaky)], client=client
    )
    first, second = result.attempts
    assert first.scores[0].error == "KeyError: 'label'" and not first.passed
    assert second.passed and result.best is second


def test_item_fills_the_template_and_feeds_the_evaluators(make_client: Any) -> None:
    client, backend = make_client([json.dumps({"sentiment": "Positive"})])
    result = generate_with_evaluation(
        template="Review: {{review}}",
        item=ROW,
        model="fake/x",
        evaluators=[FieldMatch(["sentiment"])],
        client=client,
    )
    assert backend.prompts[0] == "Review: meh"
    # without schema= there is no parsed value, so FieldMatch cannot pass
    assert not result.passed and "schema=" in result.attempts[0].scores[0].reason
    rows = client.traces(kind="attempt")
    assert set(rows["item_id"]) == {"r1"}


def test_loop_and_attempts_are_traced_as_parent_and_children(make_client: Any) -> None:
    client, _ = make_client(["bad", "good"])
    result = generate_with_evaluation(
        prompt="q",
        model="fake/x",
        evaluators=[graded({"good": 1.0})],
        client=client,
        run_id="run-7",
    )
    client.tracer.flush() if hasattr(client.tracer, "flush") else None
    loop = client.traces(call_id=result.trace_id)
    assert list(loop["kind"]) == ["parent"]
    meta = loop["meta"].iloc[0]
    meta = json.loads(meta) if isinstance(meta, str) else meta
    assert meta["passed"] is True and meta["best"] == 1 and len(meta["attempts"]) == 2
    children = client.traces(kind="attempt", run_id="run-7")
    assert set(children["parent_id"]) == {result.trace_id}
    assert set(children["call_id"]) == {a.completion.trace_id for a in result.attempts}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"evaluators": []}, "evaluators"),
        ({"evaluators": ["exact"]}, "evaluators"),
        ({"refine": "yes"}, "refine"),
        ({"temprature": 0.2}, "temprature"),
        ({"cache": "sometimes"}, "cache"),
        ({"prompt": None}, "exactly one"),
    ],
)
def test_bad_arguments_raise_before_anything_is_sent(
    make_client: Any, kwargs: dict[str, Any], match: str
) -> None:
    client, backend = make_client(["x"])
    args: dict[str, Any] = dict(prompt="q", model="fake/x", evaluators=[graded({})]) | kwargs
    with pytest.raises(InputError, match=match):
        generate_with_evaluation(client=client, **args)
    assert backend.history == []


def test_default_refine_asks_for_json_when_the_call_had_a_schema() -> None:
    done = Completion(text='{"a": 1', model="m", parsed=fake_parsed(ok=False))
    attempt = Attempt(index=0, messages=[{"role": "user", "content": "q"}], completion=done)
    scores = [
        Score(evaluator="schema_valid", value=0, passed=False, reason="unclosed object"),
        Score(evaluator="broken", value=0, passed=False, error="ValueError: x", reason="raised"),
        Score(evaluator="fine", value=1, passed=True, reason="ok"),
    ]
    out = default_refine(attempt.messages, attempt, scores)
    assert out[:2] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": '{"a": 1'},
    ]
    assert out[2]["content"] == (
        "Your previous answer failed: schema_valid: unclosed object. Fix these problems and "
        "answer the original request again. Return corrected JSON only."
    )
    low = default_refine(
        attempt.messages, attempt, [Score(evaluator="j", value=0.6, passed=True, reason="vague")]
    )
    assert "scored too low (j: vague)" in low[2]["content"]


# ------------------------------------------------------------------ the LLM judge
def routed(gen: str, judge: Any) -> Any:
    """One scripted backend for both roles: the judge model gets `judge`, others `gen`."""

    def reply(req: Request) -> str:
        if req.model == "fake/judge":
            if isinstance(judge, BaseException):
                raise judge
            return str(judge)
        return gen

    return reply


GOOD = json.dumps({"score": 4, "verdict": "pass", "reasons": ["polite", "on topic"]})


@pytest.mark.parametrize(
    ("reply", "value", "passed", "error", "reason"),
    [
        (GOOD, 0.75, True, None, "judge 4/5: polite; on topic"),
        ("```json\n" + GOOD + "\n```", 0.75, True, None, "judge 4/5"),
        (
            'Sure! {"score": 1, "verdict": "fail", "reasons": ["rude"]} Hope that helps',
            0.0,
            False,
            None,
            "rude",
        ),
        ('{"score": 2, "verdict": "pass", "reasons": []}', 0.25, False, None, "disagrees"),
        ('{"score": 5, "verdict": "pass", "reasons": ["fine"]', 1.0, True, None, "judge 5/5"),
        ("I think it is quite good.", 0.0, False, "not a JSON object", ""),
        ('{"verdict": "pass", "reasons": ["x"]}', 0.0, False, "no numeric score", ""),
        ('{"score": "great", "verdict": "pass"}', 0.0, False, "no numeric score", ""),
        ('{"score": 9, "verdict": "pass", "reasons": []}', 0.0, False, "outside the 1-5 scale", ""),
        ("", 0.0, False, "not a JSON object", ""),
    ],
)
def test_judge_replies_become_scores_never_exceptions(
    make_client: Any, reply: str, value: float, passed: bool, error: str | None, reason: str
) -> None:
    client, _ = make_client(routed("Thanks, happy to help!", reply))
    result = generate_with_evaluation(
        prompt="Reply politely.",
        model="fake/gen",
        evaluators=[LLMJudge("Is the reply polite?", model="fake/judge")],
        max_attempts=1,
        client=client,
    )
    (score,) = result.attempts[0].scores
    assert score.value == pytest.approx(value)
    assert score.passed is passed
    if error is None:
        assert score.error is None and reason in score.reason
    else:
        assert score.error is not None and error in score.error


def test_judge_call_failure_is_an_error_score(make_client: Any) -> None:
    client, _ = make_client(routed("hello", provider_error(400)))
    result = generate_with_evaluation(
        prompt="q",
        model="fake/gen",
        evaluators=[LLMJudge("Good?", model="fake/judge")],
        max_attempts=1,
        client=client,
    )
    (score,) = result.attempts[0].scores
    assert score.error and "judge call failed: BadRequest" in score.error and not score.passed
    assert score.spend is not None and score.spend.n_calls == 1  # counted in the totals
    assert result.totals.n_calls == 2 and result.judge_totals.n_calls == 1


def test_judge_calls_are_children_of_the_judged_call_and_cached(make_client: Any) -> None:
    client, backend = make_client(routed("Thanks!", GOOD))
    judge = LLMJudge("Is it polite?", model="fake/judge", include_reference=True)
    kwargs: dict[str, Any] = dict(
        prompt="Reply politely.",
        model="fake/gen",
        evaluators=[judge],
        threshold=0.7,  # the judge's 4/5 maps to 0.75
        item={"id": "i1", "expected": {"tone": "polite"}},
    )
    result = generate_with_evaluation(client=client, **kwargs)
    assert [r.model for r in backend.history] == ["fake/gen", "fake/judge"]
    asked = backend.history[1].json_schema or {}
    assert asked["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]  # grammar keeps it on scale
    judge_prompt = backend.history[1].messages[1]["content"]
    assert (
        "RUBRIC:\nIs it polite?" in judge_prompt
        and "TASK GIVEN TO THE MODEL:\nReply politely." in judge_prompt
    )
    assert "RESPONSE TO GRADE:\nThanks!" in judge_prompt and '"tone": "polite"' in judge_prompt
    (score,) = result.best.scores
    judged = result.best.completion
    assert judged is not None and score.trace_id
    row = client.traces(call_id=score.trace_id)
    assert list(row["parent_id"]) == [judged.trace_id]
    assert score.spend is not None and score.spend.n_calls == 1
    assert result.judge_totals.n_calls == 1 and result.totals.n_calls == 2
    assert (
        result.totals.completion_tokens
        == judged.usage.completion_tokens + score.spend.completion_tokens
    )
    again = generate_with_evaluation(client=client, **kwargs)
    assert len(backend.history) == 2  # generation and judge both from the cache
    assert again.best.scores[0].value == score.value


def test_reference_is_left_out_unless_asked(make_client: Any) -> None:
    judge = LLMJudge("Polite?", model="fake/judge")
    msgs = judge.messages(ctx("hi", item={"expected": {"secret": "label"}}))
    assert "label" not in msgs[1]["content"] and "REFERENCE" not in msgs[1]["content"]


def test_judge_scale_shapes_the_reply_schema() -> None:
    ints = LLMJudge("r", scale=(0, 10)).reply_schema()["properties"]["score"]
    assert ints == {"type": "integer", "enum": list(range(11))}
    floats = LLMJudge("r", scale=(0, 1)).reply_schema()["properties"]["score"]
    assert floats == {"type": "number", "minimum": 0, "maximum": 1}
    wide = LLMJudge("r", scale=(0, 100)).reply_schema()["properties"]["score"]
    assert wide == {"type": "number", "minimum": 0, "maximum": 100}
    assert LLMJudge("r", scale=(0, 1)).read('{"score": 0.5, "verdict": "pass"}').value == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"rubric": " "}, {"rubric": "r", "threshold": 2}, {"rubric": "r", "scale": (5, 1)}],
)
def test_judge_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LLMJudge(**kwargs)


# ------------------------------------------------------------------ the real local model
@pytest.mark.local_model
def test_loop_on_the_local_model(local_client: Client) -> None:
    from labkit.experiments import load_dataset

    rows = load_dataset("review_sentiment").head(2).records()
    evals = [SchemaValid(), InEnum("sentiment", SENTIMENT["sentiment"])]
    kwargs: dict[str, Any] = dict(
        template="Classify the sentiment of this product review.\nReview: {{review}}",
        model="local/smollm2-135m",
        schema=SENTIMENT,
        evaluators=evals,
        max_attempts=2,
        max_tokens=40,
        client=local_client,
    )
    for row in rows:
        result = generate_with_evaluation(item=row, **kwargs)
        assert 1 <= len(result.attempts) <= 2
        assert result.totals.n_calls == len(result.attempts)
        assert result.totals.completion_tokens > 0
        for a in result.attempts:
            assert a.error is None and [s.evaluator for s in a.scores] == [
                "schema_valid",
                "in_enum:sentiment",
            ]
            assert a.passed == (a.score >= 0.8 and all(s.passed for s in a.scores))
        assert result.best in result.attempts
        # field accuracy against the label is measured separately (it is not an input of the loop)
        (fm,) = run([FieldMatch()], EvalContext.from_completion(result.best.completion, row))  # type: ignore[arg-type]
        assert set(fm.field_correct) == {"sentiment"}
        again = generate_with_evaluation(item=row, **kwargs)
        assert again.totals.cache_hits == again.totals.n_calls
        assert [a.text for a in again.attempts] == [a.text for a in result.attempts]
