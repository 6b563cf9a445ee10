from __future__ import annotations

import random
import re
import uuid

import pytest

from labkit.redact import Redactor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe@example.com now", "mail [EMAIL] now"),
        ("call +1 415-555-0132 today", "call [PHONE] today"),
        ("call (415) 555-0132", "call [PHONE]"),
        ("card 4111 1111 1111 1111 exp", "card [CARD] exp"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("order 1234567890123 shipped", "order 1234567890123 shipped"),  # fails Luhn: kept
        ("card:4111111111111111.", "card:[CARD]."),
        # a Luhn-valid digit run inside a hex id is part of the id, not a card
        ("id 18ecbd3e99c5378623631376a789eb24", "id 18ecbd3e99c5378623631376a789eb24"),
        ("key sk-proj-abcdefghijklmnopqrstuvwx", "key [API_KEY]"),
        ("anthropic sk-ant-api03-abcdefghijklmnop", "anthropic [API_KEY]"),
        ("Authorization: Bearer abc.def.ghi123456", "Authorization: Bearer [SECRET]"),
        ('api_key="hunter2hunter2"', 'api_key="[SECRET]"'),
        ("aws AKIAABCDEFGHIJKLMNOP", "aws [API_KEY]"),
        ("nothing to see, order #A-1234", "nothing to see, order #A-1234"),
        # any letter case `(?i)` accepts, also the ones that fold oddly (long s, dotless i)
        ("AUTHORIZATION: BEARER abc.def.ghi123456", "AUTHORIZATION: Bearer [SECRET]"),
        ('ApI-KeY: "hunter2hunter2"', 'ApI-KeY: "[SECRET]"'),
        ("ſecret=hunter2hunter2", "ſecret=[SECRET]"),
        ("apı_key=hunter2hunter2", "apı_key=[SECRET]"),
        ("call 415.555.0132", "call [PHONE]"),  # exactly nine digits
    ],
)
def test_builtin_rules(text: str, expected: str) -> None:
    assert Redactor()(text) == expected


def test_user_patterns_and_callable_run_after_builtins() -> None:
    r = Redactor([r"EMP-\d{5}"], func=lambda s: s.replace("Jane", "[NAME]"))
    assert r("Jane EMP-12345 jane@example.com") == "[NAME] [REDACTED] [EMAIL]"


def test_redact_obj_walks_nested_data_without_mutating_it() -> None:
    data = {"messages": [{"role": "user", "content": "me@example.org"}], "n": 3}
    out = Redactor().redact_obj(data)
    assert out == {"messages": [{"role": "user", "content": "[EMAIL]"}], "n": 3}
    assert data["messages"][0]["content"] == "me@example.org"


def test_deep_nesting_does_not_recurse() -> None:
    deep: list[object] = ["a@b.co"]
    for _ in range(5000):
        deep = [deep]
    out = Redactor().redact_obj(deep)
    for _ in range(5000):
        out = out[0]
    assert out == ["[EMAIL]"]


def test_hex_ids_survive_redaction() -> None:
    """Trace ids, hashes and UUIDs travel in meta (chunk_calls, call ids) and must come back
    intact: a digit run inside them is not a card or a phone number."""
    rng = random.Random(7)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(20_000)]
    ids += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5_000)]
    # make sure the sample holds the shape that used to fail: 13+ digits in a row, Luhn-valid
    assert any(re.search(r"\d{13,}", i) for i in ids)
    r = Redactor()
    assert [i for i in ids if r(i) != i] == []
