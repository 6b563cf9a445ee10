"""labkit.parse on cases others wrote: the malformed inputs of json_repair's, jsonrepair's and
dirty-json's test suites (tests/peer_cases.py says where they come from and how they are scored),
plus the failure classes of issue 15 written here, and 1 MB adversarial inputs.

The rule every case must keep: a value that is not the expected one is never returned as
`ok=True` with the differing field unflagged. Exactness is held per suite to json_repair's own
count on the same unambiguous cases (json_repair runs here, in the same test)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from peer_cases import SUITES, PeerCase, adversarial_1mb, load, unflagged_wrong
from structured_corpus import same

from labkit.structured import parse

CASES = load()


def _id(c: PeerCase) -> str:
    return f"{c.suite}:{c.source}:{c.input[:30]!r}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_no_unflagged_wrong_value(case: PeerCase) -> None:
    p = parse(case.input)
    assert not unflagged_wrong(p, case.expected), (
        f"{p.value!r:.200} returned ok with {p.repaired_fields} flagged; expected "
        f"{case.expected!r:.200}"
    )
    if same(p.value, case.expected) or not p.ok:
        return
    assert p.repairs, "a changed value must say what was repaired"


@pytest.mark.parametrize("suite", SUITES)
def test_exact_at_least_as_often_as_json_repair(suite: str) -> None:
    import json_repair

    cases = [c for c in CASES if c.suite == suite and not c.ambiguous]
    assert len(cases) >= 40
    ours = theirs = 0
    for c in cases:
        ours += same(parse(c.input).value, c.expected)
        with contextlib.suppress(Exception):  # json_repair raising counts as a miss
            theirs += same(json_repair.loads(c.input), c.expected)
    assert ours >= theirs, f"{suite}: labkit {ours}/{len(cases)}, json_repair {theirs}"


def test_data_rows_carry_attribution() -> None:
    assert {c.suite for c in CASES} == set(SUITES)
    for name in ("peer_cases.jsonl", "dirty_json_like.jsonl"):
        from peer_cases import DATA

        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert row["attribution"] and row["suite"] in SUITES
            with pytest.raises(ValueError):
                json.loads(row["input"])  # only malformed inputs


# ---------------------------------------------------------------------------- issue 15 classes

# (reply, expected value, fields that must be flagged, ok)
CLASSES: list[tuple[str, Any, set[str], bool]] = [
    # a missing closing quote, not a cut-off reply: the closer is not part of the string
    ('{"city":"Lyon}', {"city": "Lyon"}, {"city"}, True),
    ('{"tags": ["red]}', {"tags": ["red"]}, {"tags"}, True),
    # a code fence inside a string value does not beat the object around it
    (
        '{"answer": "Use:\n```\n[3, 4]\n```", "score": 2}',
        {"answer": "Use:\n```\n[3, 4]\n```", "score": 2},
        set(),
        True,
    ),
    # a premature or mismatched closer keeps what follows it
    ('{"a": ["x", "y"}, "b": ["z"]}', {"a": ["x", "y"], "b": ["z"]}, {"a"}, True),
    ('{"k": 1}, "m": 2}', {"k": 1, "m": 2}, {"m"}, True),
    # numeric and odd bare keys, a leading comma, a missing opening quote
    ('{7: ["p"], 8: ["q"]}', {"7": ["p"], "8": ["q"]}, {"7", "8"}, True),
    ("[c, d]", ["c", "d"], {"[0]", "[1]"}, True),
    ('Answer: {1: ["a"], 2: ["b"]}', {"1": ["a"], "2": ["b"]}, {"1", "2"}, True),
    ("Sure: [a, [1, 2]]", ["a", [1, 2]], {"[0]"}, True),
    ('{, "note": "hey"}', {"note": "hey"}, set(), True),
    ('{b":"bar"}', {"b": "bar"}, {"b"}, True),
    # a cut-off literal is completed (and flagged), never kept as a string
    ('{"done": fal', {"done": False}, {"done"}, True),
    # NaN is no JSON number: whatever it becomes is flagged
    ('{"x": NaN, "y": 1}', None, {"x"}, True),
    # whitespace and newlines inside strings are kept as written
    ('{"code": "return 1\n", "n": 2,}', {"code": "return 1\n", "n": 2}, set(), True),
    ('{"pad": "  a  ", n: 2}', {"pad": "  a  ", "n": 2}, set(), True),
    # ... also where json_repair had to fix something else (it trims strings): put back
    ('{"code": "return 1\n", "v": yes}', {"code": "return 1\n", "v": "yes"}, {"v"}, True),
    # two values with no comma between them: a syntax fix, nothing guessed
    ('{"a": 1 "b": [{} {}]}', {"a": 1, "b": [{}, {}]}, set(), True),
    # no value written: null, flagged, never an invented ""
    ('{"score": }', {"score": None}, {"score"}, True),
    ('{"a": 1, "score": , "b": 2}', {"a": 1, "score": None, "b": 2}, {"score"}, True),
    # several objects in a row: one is picked and the choice is flagged
    ('{"a": 1}\n{"a": 2}', {"a": 1}, {"$"}, True),
]


@pytest.mark.parametrize(("text", "want", "flags", "ok"), CLASSES, ids=[c[0][:30] for c in CLASSES])
def test_issue_classes(text: str, want: Any, flags: set[str], ok: bool) -> None:
    p = parse(text)
    if want is not None:
        assert same(p.value, want), p.value
    assert flags <= set(p.repaired_fields), (p.repaired_fields, p.repairs)
    assert p.ok is ok
    if flags:
        named = " ".join(r.detail for r in p.repairs)
        assert all(f == "$" or repr(f) in named for f in flags), named


def test_prose_around_one_object_flags_nothing() -> None:
    for text in ('Note [1]: see {"a": 2}', 'Use {name} here. Answer: {"a": [1]}'):
        p = parse(text)
        assert p.ok and p.repaired_fields == [] and p.repair_steps == ["embedded"]


def test_a_guess_lowers_the_confidence_of_its_field() -> None:
    schema = {"city": str, "n": int}
    text = '{"city": "Lyon}, "city_confidence": 0.8, "n": 1, "n_confidence": 0.9}'
    plain = parse('{"city": "Lyon", "city_confidence": 0.8, "n": 1, "n_confidence": 0.9}', schema)
    assert plain.confidences == {"city": 0.8, "n": 0.9}
    cut = parse('{"n": 1, "n_confidence": 0.9, "city_confidence": 0.8, "city": "Ly', schema)
    assert "city" in cut.repaired_fields and cut.confidences["city"] < 0.8
    assert cut.confidences["n"] == 0.9
    p = parse(text, schema)
    assert p.repaired_fields and all(p.confidences[f] < plain.confidences[f] for f in p.confidences
                                     if f in p.repaired_fields)  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [true, null], "c": {"d": "e"}}',
        '[1, 2.5, "x", {"y": []}]',
        '{"s": "```json\\n[1]\\n```"}',
        '  {"k": "v"}  ',
    ],
)
def test_valid_json_is_never_altered(text: str) -> None:
    p = parse(text)
    assert p.clean and same(p.value, json.loads(text))


# ---------------------------------------------------------------------------- 1 MB inputs


@pytest.mark.parametrize("i", range(len(adversarial_1mb())))
def test_one_megabyte_adversarial_inputs_return(i: int) -> None:
    text = adversarial_1mb()[i]
    assert len(text) <= 1_000_000
    p = parse(text)  # must return, not raise or hang (timing lives in bench/)
    assert p.ok == (p.strategy != "none" and not p.errors and not p.missing)
    assert p.ok or p.errors or p.missing
