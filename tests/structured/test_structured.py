"""labkit.structured: the table-driven corpus, bad schemas, and the prompt side.

Every expectation lives in tests/structured_corpus.py; this file only compares. A failing case
means the parser changed behaviour: fix the parser (or, for a real judgement call, change the
table with a note saying why), never loosen the comparison.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel
from structured_corpus import CASES, SCHEMAS, Case, Loan, Order, same

from labkit.errors import InputError
from labkit.structured import (
    Parsed,
    Repair,
    json_instructions,
    parse,
    response_format,
    to_json_schema,
)

STEPS = {
    "decode", "fence", "embedded", "unwrap", "multi_object", "truncated", "lenient_repair",
    "key_case", "drop_extra", "missing", "coerce", "enum_case", "confidence_scale",
    "confidence_clip", "confidence_invalid", "prose_extract",
}  # fmt: skip
STRATEGIES = {"strict", "fence", "embedded", "multi", "repair", "extract", "none"}


def _id(case: Case) -> str:
    return case.id


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_corpus(case: Case) -> None:
    p = parse(case.text, case.schema_obj, multi=case.multi)
    assert same(p.value, case.value), f"value {p.value!r:.300} != {case.value!r:.300}"
    assert p.ok is case.ok, f"ok={p.ok}, errors={p.errors}, missing={p.missing}"
    if case.steps is not None:
        assert p.repair_steps == case.steps, [(r.step, r.detail) for r in p.repairs]
    if case.missing is not None:
        assert p.missing == case.missing
    if case.extras is not None:
        assert p.extras == case.extras
    if case.coerced is not None:
        assert p.coerced == case.coerced
    if case.confidences is not None:
        assert p.confidences == case.confidences
    if case.repaired is not None:
        assert p.repaired_fields == case.repaired
    if case.strategy is not None:
        assert p.strategy == case.strategy
    # invariants that hold for every reply
    assert set(p.repair_steps) <= STEPS
    assert p.strategy in STRATEGIES
    assert all(0.0 <= c <= 1.0 for c in p.confidences.values())
    assert p.ok == (p.strategy != "none" and not p.errors and not p.missing)
    if not p.ok:
        assert p.errors or p.missing, "a not-ok result must say why"
    if p.value is None and case.value is None and case.text is not None:
        assert not p.ok or p.strategy == "strict"


def test_corpus_size_and_kinds() -> None:
    kinds = {c.kind for c in CASES}
    assert len(CASES) >= 80 + 15
    assert {"valid", "fence", "prose", "multi", "syntax", "truncated", "coerce", "enum",
            "keys", "extras", "missing", "confidence", "extract", "bad_input", "real"} <= kinds  # fmt: skip
    assert sum(c.kind == "real" for c in CASES) >= 15
    assert len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------------- Parsed


def test_parsed_properties() -> None:
    p = parse('```json\n{"sentiment": "Positive", "x": 1}\n```', SCHEMAS["SENT"])
    assert p.repair_steps == ["fence", "drop_extra", "enum_case"]  # keys first, then values
    assert not p.clean and p.ok
    assert all(isinstance(r, Repair) for r in p.repairs)
    assert parse('{"sentiment": "positive"}', SCHEMAS["SENT"]).clean


def test_strict_fast_path_is_a_normal_model() -> None:
    fast = parse('{"a": [1, 2]}')
    slow = Parsed(value={"a": [1, 2]}, ok=True, strategy="strict")
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()
    fast.errors.append("mine")  # lists are not shared between results
    assert parse('{"a": 1}').errors == []
    assert Parsed.model_validate_json(fast.model_dump_json()).value == {"a": [1, 2]}


def test_repair_details_name_what_changed() -> None:
    p = parse('{"sentiment": "negative", "reason": "The battery died after', SCHEMAS["SENT_R"])
    (r,) = p.repairs
    assert r.step == "truncated" and "'reason'" in r.detail and "incomplete" in r.detail
    p = parse("{'sentiment': 'positive',}", SCHEMAS["SENT"])
    assert "trailing comma" in p.repairs[0].detail and "single-quoted" in p.repairs[0].detail
    p = parse('{"name": "Ann", "age": "34"}', SCHEMAS["PERSON"])
    assert p.repairs[0].detail == "age: '34' -> 34" and p.coerced == ["age"]


def test_errors_explain_not_ok() -> None:
    p = parse('{"sentiment": "happy"}', SCHEMAS["SENT"])
    assert p.errors == ["sentiment: 'happy' is not one of ['positive', 'negative', 'neutral']"]
    assert parse("", SCHEMAS["SENT"]).errors == ["empty reply"]
    assert "1,000,000" in parse("x" * 1_000_001).errors[0]


def test_pydantic_validators_count() -> None:
    from pydantic import field_validator

    class Strict(BaseModel):
        n: int

        @field_validator("n")
        @classmethod
        def even(cls, v: int) -> int:
            if v % 2:
                raise ValueError("must be even")
            return v

    assert parse('{"n": 4}', Strict).ok
    p = parse('{"n": 3}', Strict)
    assert not p.ok and p.value == {"n": 3} and "must be even" in p.errors[0]


def test_limits_stay_importable_from_structured() -> None:
    from labkit import structured
    from labkit.structured import repair

    assert structured.MAX_SPAN == repair.MAX_SPAN and structured.MAX_LENIENT == repair.MAX_LENIENT
    assert structured.MAX_TEXT == 1_000_000 and structured.MAX_DEPTH == repair.MAX_DEPTH


def test_multi_rejects_unknown_mode() -> None:
    with pytest.raises(InputError, match="multi must be one of"):
        parse("{}", None, multi="second")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [42, 1.5, ["{}"], {"a": 1}])
def test_text_of_wrong_type_is_an_input_error(text: Any) -> None:
    with pytest.raises(InputError, match="text must be str, bytes or None"):
        parse(text)


# ---------------------------------------------------------------------------- schemas

BAD_SCHEMAS: list[tuple[Any, str]] = [
    ("sentiment", "must be a pydantic model class, a dict or None"),
    (42, "must be a pydantic model class"),
    (["positive", "negative"], "must be a pydantic model class"),
    (int, "must be a pydantic model class"),
    ({}, "empty dict"),
    (Loan(decision="deny", reasoning="x"), "pass the class: schema=Loan"),
    (
        {"type": "objekt", "properties": {"a": {"type": "string"}}},
        "'objekt', not a JSON Schema type",
    ),
    ({"type": "object", "properties": ["a", "b"]}, "properties must be a dict"),
    ({"properties": {"a": {"type": "string"}}, "required": "a"}, "required must be a list"),
    ({"properties": {"a": "string"}}, "must be a JSON Schema (a dict)"),
    ({"properties": {"a": {"$ref": "#/$defs/Missing"}}}, "points to nothing"),
    ({"properties": {"a": {"$ref": "https://x/y.json"}}}, "only local references"),
    ({"properties": {"a": {"enum": []}}}, "non-empty list"),
    ({"properties": {"a": {"anyOf": "string"}}}, "anyOf must be a non-empty list"),
    ({"age": 42}, "is not a field type"),
    ({"age": "integr"}, "unknown type name 'integr'"),
    ({"tags": []}, "a list means the allowed values"),
    ({"tags": [{"a": 1}]}, "a list means the allowed values"),
    ({"addr": {}}, "an empty dict is no field type"),
    ({1: str}, "field names must be non-empty strings"),
    ({"type": "objekt"}, "unknown type name 'objekt'"),
]


@pytest.mark.parametrize(("schema", "message"), BAD_SCHEMAS, ids=[m for _, m in BAD_SCHEMAS])
def test_bad_schema_is_an_input_error(schema: Any, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse('{"a": 1}', schema)
    assert message in str(info.value)
    with pytest.raises(InputError):
        to_json_schema(schema)


def test_bad_schema_raises_even_for_an_empty_reply() -> None:
    with pytest.raises(InputError):
        parse(None, {"x": 42})


def test_deeply_nested_schema_is_refused() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(InputError, match="nested deeper"):
        to_json_schema(schema)


def test_field_dict_forms() -> None:
    js = to_json_schema(
        {
            "label": ["a", "b"],
            "n": int,
            "x": "float?",
            "tags": "list[str]",
            "ids": list[int],
            "kind": Literal["k1", "k2"],
            "maybe": int | None,
            "addr": {"city": str},
            "raw": {"type": "string", "maxLength": 5},
            "item": Order,
        }
    )
    assert js is not None
    props = js["properties"]
    assert props["label"] == {"enum": ["a", "b"], "type": "string"}
    assert props["n"] == {"type": "integer"}
    assert props["x"] == {"type": ["number", "null"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["ids"] == {"type": "array", "items": {"type": "integer"}}
    assert props["addr"]["required"] == ["city"]
    assert props["raw"] == {"type": "string", "maxLength": 5}
    assert "Item" in js["$defs"]
    assert js["required"] == ["label", "n", "tags", "ids", "kind", "addr", "raw", "item"]


def test_to_json_schema_forms() -> None:
    assert to_json_schema(None) is None
    model = to_json_schema(Loan)
    assert model is not None and model["required"] == ["decision", "reasoning"]
    model["properties"].clear()  # a private copy: the cached schema is untouched
    assert to_json_schema(Loan)["properties"]  # type: ignore[index]
    person = SCHEMAS["PERSON"]
    assert to_json_schema(person) == person


def test_nested_models_and_optional_fields_parse() -> None:
    p = parse(
        '{"order_id": "K", "items": [{"name": "a", "qty": "3"}], "total": 1, "paid": 0}', Order
    )
    assert p.ok and p.value["items"][0]["qty"] == 3 and p.value["paid"] is False
    assert p.coerced == ["items[0].qty", "paid"]


# ---------------------------------------------------------------------------- prompt side


def test_json_instructions_lists_fields_confidences_and_example() -> None:
    text = json_instructions(SCHEMAS["TICKET"])
    for name in ("category", "priority", "order_id", "product"):
        assert f'"{name}"' in text and f'"{name}_confidence"' in text
    assert 'one of "billing", "shipping", "technical", "account", "other"' in text
    # the shape shows <...> slots, not sample values a model could copy as its answer
    shape = text.splitlines()[-1]
    assert '"category": <"billing" or "shipping" or "technical" or "account" or "other">' in shape
    assert '"priority_confidence": <your confidence, 0 to 1>' in shape
    assert "0.9" not in text and not parse(shape, SCHEMAS["TICKET"]).clean


def test_json_instructions_without_confidence_and_for_models() -> None:
    text = json_instructions(Loan, confidence=False)
    assert "_confidence" not in text and '"decision" (required)' in text
    assert '"amount" (optional, may be null)' in text
    assert json_instructions(None).startswith("Answer with one JSON value only")
    assert "JSON Schema" in json_instructions(SCHEMAS["INTS"])


def test_response_format() -> None:
    assert response_format(None) == {"type": "json_object"}
    rf = response_format(SCHEMAS["SENT_R"])
    assert rf["type"] == "json_object"
    props = rf["schema"]["properties"]
    assert list(props) == ["sentiment", "sentiment_confidence", "reason", "reason_confidence"]
    assert props["sentiment_confidence"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert rf["schema"]["required"] == [
        "sentiment",
        "reason",
        "sentiment_confidence",
        "reason_confidence",
    ]
    plain = response_format(Loan, confidence=False)["schema"]
    assert "decision_confidence" not in plain["properties"]
    assert "decision_confidence" not in (to_json_schema(Loan) or {})["properties"]


def test_a_reply_in_the_requested_format_is_clean() -> None:
    reply = '{"sentiment": "negative", "sentiment_confidence": 0.8, "reason": "broke", "reason_confidence": 0.6}'
    p = parse(reply, SCHEMAS["SENT_R"])
    assert p.clean and p.confidences == {"sentiment": 0.8, "reason": 0.6}
    assert p.value == {"sentiment": "negative", "reason": "broke"}
