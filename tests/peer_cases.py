"""Malformed-JSON cases from peers' test suites, and how a parse result is scored against them.

Data: tests/data/peer_cases.jsonl (json_repair, MIT; jsonrepair, ISC; pairs derived by
tests/data/derive_peer_cases.py, attribution on every row) and tests/data/dirty_json_like.jsonl
(written here after the classes of dirty-json's tests, which are AGPL-3.0 and not copied).

Scoring (shared by tests/test_peer_suites.py and bench/bench_structured.py):
- exact: the value equals the expected one, type-exact (`same`).
- unflagged wrong: the value is not the expected one, `ok` is True, and a top-level field (or
  array index `[i]`) that differs is not in `repaired_fields` (nor is `$`, the whole value). A
  field the expected value has and ours lacks counts as flagged when a `truncated` step says
  what was dropped, or when as many differing fields of ours are flagged (a renamed field). Ambiguous cases (the peers' own judgement calls) are not scored for
  exactness, but a value different from the peer's must still be flagged.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structured_corpus import same

DATA = Path(__file__).parent / "data"
SUITES = ("json_repair", "jsonrepair", "dirty-json")


@dataclass(frozen=True)
class PeerCase:
    input: str
    expected: Any
    cls: str
    suite: str
    source: str
    ambiguous: str


def load() -> list[PeerCase]:
    out = []
    for name in ("peer_cases.jsonl", "dirty_json_like.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out.append(PeerCase(r["input"], r["expected"], r["class"], r["suite"], r["source"],
                                r["ambiguous"]))  # fmt: skip
    return out


def _diff(got: Any, want: Any) -> tuple[list[str], list[str]]:
    """(differing top-level fields present in `got`, fields only `want` has)."""
    if isinstance(got, dict) and isinstance(want, dict):
        present = [k for k in got if k not in want or not same(got[k], want[k])]
        return present, [k for k in want if k not in got]
    if isinstance(got, list) and isinstance(want, list):
        present = [f"[{i}]" for i, v in enumerate(got) if i >= len(want) or not same(v, want[i])]
        return present, [f"[{i}]" for i in range(len(got), len(want))]
    return ["$"], []


def unflagged_wrong(parsed: Any, want: Any) -> bool:
    """A wrong value returned as ok with the wrong part not flagged."""
    if not parsed.ok or same(parsed.value, want):
        return False
    flagged = set(parsed.repaired_fields)
    if "$" in flagged:
        return False
    present, absent = _diff(parsed.value, want)
    if any(f not in flagged for f in present):
        return True
    # a flagged field that differs may be the missing one under another name or shape
    return len(absent) > len(present) and "truncated" not in parsed.repair_steps


@functools.cache
def adversarial_1mb(n: int = 1_000_000) -> list[str]:
    """Inputs up to 1 MB built to hurt a parser (deep nesting, unclosed strings, many
    objects or brackets, random JSON punctuation): parse must return on each."""
    rnd = random.Random(15)
    texts = [
        "[" * n,
        '{"a": ' * (n // 6),
        '{"a": "' + '\\"' * (n // 2),
        "{" + '"k": 1, ' * (n // 8),
        '{"k": 1} ' * (n // 9),
        "lorem {ipsum} [dolor] sit' amet\" " * (n // 33),
        "}]" * (n // 2) + '{"a": 1}',
        "```json\n" * (n // 8),
        "{'a': '" + "':'" * (n // 3),
        '{"a": "b}' + " " * (n - 9),
        "{" + "a: b, " * (n // 6) + "}",
        "[" + "x, " * (n // 3) + "]",
        '{"a": [' + '"s", ' * (n // 5),
        "".join(rnd.choices("{}[]\",:'ab1 \n", k=n)),
    ]
    return [t[:n] for t in texts]
