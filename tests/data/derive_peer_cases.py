"""Derive tests/data/peer_cases.jsonl from two peers' public test suites (input -> expected value).

Run: `python tests/data/derive_peer_cases.py JSON_REPAIR_CHECKOUT JSONREPAIR_CHECKOUT > tests/data/peer_cases.jsonl`
(two local clones). Only the (input, expected) pairs are kept, not the peers' code:

- json_repair (Python, https://github.com/mangiucugna/json_repair, tests/, MIT licence,
  Copyright (c) 2023 Stefano Baccianella): every `repair_json(x[, return_objects=...,
  skip_json_loads=...]) == y` or `loads(x) == y` assertion whose arguments are literals.
- jsonrepair (JavaScript, https://github.com/josdejong/jsonrepair, src/index.test.ts, ISC licence,
  Copyright (c) 2020-2026 by Jos de Jong): every `expect(jsonrepair(x)).toBe(y)` whose arguments
  are string literals (or literals joined with `+`).

dirty-json (https://github.com/RyanMarcus/dirty-json) is AGPL-3.0: its test strings are not
copied. tests/data/dirty_json_like.jsonl holds cases written here for each of its classes.

Kept: inputs that `json.loads` rejects and whose expected value is an object or array (what an
LLM is asked for). `class` is the peer's own test name; `ambiguous` marks expectations that pick
one of several defensible readings (see `_ambiguous`).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from typing import Any

ATTRIBUTION = {
    "json_repair": "json_repair test suite, MIT licence, (c) 2023 Stefano Baccianella",
    "jsonrepair": "jsonrepair test suite, ISC licence, (c) 2020-2026 Jos de Jong",
}
_KW_OK = {"return_objects", "skip_json_loads", "ensure_ascii"}


def _git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, *args], check=True, capture_output=True, text=True
    ).stdout


def _files(repo: str, prefix: str, suffix: str) -> list[str]:
    names = _git(repo, "ls-tree", "-r", "--name-only", "HEAD").split()
    return [n for n in names if n.startswith(prefix) and n.endswith(suffix)]


def _show(repo: str, path: str) -> str:
    try:
        return _git(repo, "show", f"HEAD:{path}")
    except subprocess.CalledProcessError:
        with open(f"{repo}/{path}", encoding="utf-8") as fh:  # a plain checkout
            return fh.read()


def from_json_repair(repo: str) -> list[dict[str, Any]]:
    out = []
    for path in _files(repo, "tests/test_", ".py"):
        tree = ast.parse(_show(repo, path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
                    continue
                if not isinstance(node.ops[0], ast.Eq) or not isinstance(node.left, ast.Call):
                    continue
                call = node.left
                name = getattr(call.func, "id", getattr(call.func, "attr", ""))
                if name not in ("repair_json", "loads") or len(call.args) != 1:
                    continue
                kws = {k.arg: k.value for k in call.keywords}
                if not set(kws) <= _KW_OK:
                    continue
                try:
                    text = ast.literal_eval(call.args[0])
                    want = ast.literal_eval(node.comparators[0])
                    objects = name == "loads" or (
                        "return_objects" in kws and ast.literal_eval(kws["return_objects"])
                    )
                except ValueError:
                    continue
                if not isinstance(text, str):
                    continue
                if not objects:
                    if not isinstance(want, str):
                        continue
                    try:
                        want = json.loads(want) if want else None
                    except ValueError:
                        continue
                out.append(_case(text, want, "json_repair", fn.name, f"{path}:{node.lineno}"))
    return out


_JS_ESC = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _js_string(src: str, i: int) -> tuple[str, int]:
    """A JS string literal at `i` ('...', "..." or `...` without ${}): (value, end)."""
    q = src[i]
    i += 1
    out = []
    while True:
        c = src[i]
        if c == q:
            return "".join(out), i + 1
        if q == "`" and src.startswith("${", i):
            raise ValueError("template with substitutions")
        if c == "\n" and q != "`":
            raise ValueError("newline in literal")
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = src[i + 1]
        if e == "u" and src[i + 2] == "{":
            end = src.index("}", i)
            out.append(chr(int(src[i + 3 : end], 16)))
            i = end + 1
        elif e == "u":
            out.append(chr(int(src[i + 2 : i + 6], 16)))
            i += 6
        elif e == "x":
            out.append(chr(int(src[i + 2 : i + 4], 16)))
            i += 4
        elif e == "\n":
            i += 2
        else:
            out.append(_JS_ESC.get(e, e))
            i += 2


def _js_expr(src: str, i: int) -> tuple[str, int]:
    """String literals joined by `+`, up to the closing parenthesis: (value, index of ')')."""
    parts = []
    while True:
        while src[i].isspace():
            i += 1
        if src[i] not in "'\"`":
            raise ValueError("not a literal")
        s, i = _js_string(src, i)
        parts.append(s)
        while src[i].isspace():
            i += 1
        if src[i] == "+":
            i += 1
            continue
        while src[i] in ", \n":
            i += 1
        if src[i] != ")":
            raise ValueError("not a plain call")
        return "".join(parts), i


_JS_CALL = re.compile(r"expect\(jsonrepair\(")
_JS_TEST = re.compile(r"test\('([^']+)'")


def from_jsonrepair(repo: str) -> list[dict[str, Any]]:
    src = _show(repo, "src/index.test.ts")
    tests = [(m.start(), m.group(1)) for m in _JS_TEST.finditer(src)]
    out = []
    for m in _JS_CALL.finditer(src):
        try:
            text, j = _js_expr(src, m.end())
            if not src.startswith(")).toBe(", j):
                continue
            want_src, _ = _js_expr(src, j + len(")).toBe("))
            want = json.loads(want_src)
        except (ValueError, IndexError):
            continue
        name = [t for at, t in tests if at < m.start()][-1:] or ["?"]
        line = src.count("\n", 0, m.start()) + 1
        out.append(_case(text, want, "jsonrepair", name[0], f"src/index.test.ts:{line}"))
    return out


_UNQUOTED_VALUE = re.compile(r"""[:\[,]\s*[A-Za-z_]""")


JUDGED = {
    '["': 'a cut-off string: dropped here, kept (empty) by labkit and jsonrepair (\'["foo\' -> ["foo"])',
    '[{"key": "value", "key': "a cut-off key read as a new array: one reading of a cut reply",
    "[{5}s ": "garbage after a brace: any reading is a guess",
}
"""Expected values judged by hand to be one reading among several (why, in a few words)."""


def _several(text: str) -> bool:
    """Two JSON values in a row (`[]{}`, `{..}, {..}`), or two ```json fences."""
    if text.count("```json") > 1:
        return True
    t = text.strip()
    try:
        _, end = json.JSONDecoder().raw_decode(t)
    except ValueError:
        return False
    return t[end:].lstrip().lstrip(",").lstrip()[:1] in ("{", "[")


def _ambiguous(text: str, want: Any) -> str:
    """Why the expected value is one reading among several, or a case where labkit differs on
    purpose ('deliberate: ...', see the README); '' when it is neither.

    Judgement calls the peers themselves make differently: a missing or cut-off value given a
    made-up one ("" or null), a string whose stray quotes are read as text."""
    s = json.dumps(want)
    start = text.lstrip()[:1]
    if text in JUDGED:
        return JUDGED[text]
    if not re.search(r"[\[{(]", text):
        return "deliberate: no bracket in the reply; labkit does not invent the array"
    if re.search(r"(?:^|\n)\s*\(", text):
        return "deliberate: a Python tuple is not JSON; labkit does not read it as an array"
    if start == "{" and isinstance(want, list) and not _several(text):
        return "deliberate: a Python set is not an array; labkit returns no value for it"
    if _several(text):
        return "deliberate: several values in a row; labkit picks one per `multi=` and flags it"
    if start == "[" and isinstance(want, dict):
        return "deliberate: an array written around a code fence; labkit keeps the array, flagged"
    if re.search(r'[{,]\s*"[^"]*"\s*:\s*[^\s,}\]"]*\s*$', text.rstrip()) and (
        '""' in s or "null" in s
    ):
        return "a cut-off key given a made-up value"
    if re.search(r":\s*[,}]", text) and ('""' in s or "null" in s):
        return 'a missing value given a made-up value (json_repair "", the others null)'
    if '\\"' in s and '\\"' not in text:
        return "stray quotes read as text"
    return ""


def _case(text: str, want: Any, suite: str, cls: str, where: str) -> dict[str, Any]:
    return {"input": text, "expected": want, "class": cls, "suite": suite, "source": where,
            "ambiguous": _ambiguous(text, want), "attribution": ATTRIBUTION[suite]}  # fmt: skip


def keep(case: dict[str, Any]) -> bool:
    try:
        json.loads(case["input"])
    except ValueError:
        return isinstance(case["expected"], dict | list)
    return False


def main() -> int:
    cases = from_json_repair(sys.argv[1]) + from_jsonrepair(sys.argv[2])
    seen = set()
    for c in cases:
        key = (c["suite"], c["input"])
        if keep(c) and key not in seen:
            seen.add(key)
            print(json.dumps(c, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
