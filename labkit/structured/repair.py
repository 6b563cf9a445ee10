"""The repair stage of `labkit.parse`: find where a JSON-looking span ends, close a cut-off
reply, fix syntax without guessing, and let json_repair do the rest while checking, field by
field, which of its values are a guess (see `labkit.structured` for the pipeline)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import accumulate
from operator import sub as _minus
from typing import Any

from .schema import Log

MAX_SPAN = 200_000
"""Largest JSON-looking span the repair stage looks at (cut-off replies are closed up to this)."""
MAX_LENIENT = 64_000
"""Largest span handed to json_repair, which is pure Python (~1-5 µs a character): this cap is
what keeps the lenient stage well under a second."""
MAX_DEPTH = 64
"""Deepest nesting the repair stage accepts (json_repair recurses once per level)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


DECODER = json.JSONDecoder(parse_constant=_no_constant)
"""The strict decoder: NaN and Infinity are not JSON."""
_LAX = json.JSONDecoder(parse_constant=_no_constant, strict=False)
"""Also accepts raw control characters (a newline typed inside a string)."""

_TOKEN = re.compile(r""""(?:[^"\\]|\\.)*+(")?|[{}\[\]']|//|/\*""", re.S)
_SQ_END = re.compile(r"(?:[^'\\\n]|\\.)*'", re.S)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


@dataclass
class _Span:
    """One JSON object/array candidate found in a segment of the reply."""

    start: int
    end: int
    fenced: bool
    value: Any = None
    strict: bool = True
    truncated: bool = False
    text: str = ""
    log: Log = field(default_factory=Log)
    raw_flagged: set[str] = field(default_factory=set)
    stack: list[str] = field(default_factory=list)
    """For a cut-off span: the brackets still open at its end."""
    open_at: int = -1
    """For a cut-off span: where its unterminated string starts (relative to the span)."""
    several: bool = False
    """The repaired span held several objects (its value is their list)."""
    joined: bool = False
    """Only whitespace or a comma separates it from the candidate before it (or it is in a
    later code fence): values in a row, not a value quoted in prose."""


def _too_deep(s: str, limit: int) -> bool:
    """Nesting deeper than `limit`, found without recursion or a per-character Python loop:
    strings are cut out, then depth = prefix sum - its running minimum, all in C."""
    if s.count("[") + s.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", s))
    sums = list(accumulate(map(_DEPTH_STEP.__getitem__, brackets)))
    floors = accumulate(sums, min, initial=0)
    next(floors)
    return max(map(_minus, sums, floors), default=0) > limit


def _prev_char(s: str, j: int) -> str:
    """The last non-space character before `j` ('' at the start)."""
    j -= 1
    while j >= 0 and s[j].isspace():
        j -= 1
    return s[j] if j >= 0 else ""


def _span_end(s: str, i: int) -> tuple[int, list[str], int]:
    """End of the bracketed span at `i`, quote- and comment-aware; (-1, stack, open_string_at)
    when the text ends first (a cut-off reply). A single quote opens a string only where a value
    or key may start, so apostrophes in unquoted text do not derail the scan."""
    stack: list[str] = []
    pos = i
    while True:
        m = _TOKEN.search(s, pos)
        if m is None:
            return -1, stack, -1
        c, j, pos = m.group(), m.start(), m.end()
        if c[0] == '"':
            if m.group(1) is None:
                return -1, stack, j
        elif c in "{[":
            stack.append(c)
        elif c in "}]":
            opener = "{" if c == "}" else "["
            if opener in stack:  # pop down to its opener; a stray closer is ignored
                del stack[len(stack) - 1 - stack[::-1].index(opener) :]
            if not stack:
                return pos, [], -1
        elif c == "'":
            if _prev_char(s, j) not in ("{", "[", ",", ":"):
                continue
            end = _SQ_END.match(s, pos)
            if end is None:
                return -1, stack, j
            pos = end.end()
        elif c == "//":
            nl = s.find("\n", j)
            pos = len(s) if nl < 0 else nl
        else:
            close = s.find("*/", j + 2)
            pos = len(s) if close < 0 else close + 2


# ---------------------------------------------------------------------------- repair

_TRAILING_COMMA = re.compile(r",\s*[}\]]")
_SINGLE_QUOTES = re.compile(r"""[{\[,:]\s*'""")
_COMMENTS = re.compile(r"(?m)(?:^|[\s,{\[])(?://|/\*|#)")
_PY_LITERALS = re.compile(r"[:\[,]\s*(?:True|False|None)\b")
_BARE_KEYS = re.compile(r"[{,]\s*[A-Za-z_$][\w$]*\s*:")
_NO_COMMA = re.compile(r"""(?:["\d\]}]|true|false|null)\s+"[^"\n]*"\s*:""")
_BARE_VALUES = re.compile(r""":\s*(?!(?:true|false|null)\b)[A-Za-z][\w .-]*\s*[,}\n]""")
_DANGLING_KEY = re.compile(r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z_$][\w$]*)\s*:?\s*$""")


_CUT_LITERAL = re.compile(r"[:\[,]\s*(t|tr|tru|f|fa|fal|fals|n|nu|nul)$")


def _diagnose(piece: str) -> list[str]:
    """Name the usual syntax faults, for the log (json_repair does not always say)."""
    found = [
        ("trailing comma", _TRAILING_COMMA),
        ("single-quoted strings", _SINGLE_QUOTES),
        ("comments", _COMMENTS),
        ("Python literals (True/False/None)", _PY_LITERALS),
        ("unquoted keys", _BARE_KEYS),
        ("missing commas", _NO_COMMA),
        ("unquoted values", _BARE_VALUES),
    ]
    return [name for name, rx in found if rx.search(piece)]


def _close(piece: str, stack: list[str], open_at: int) -> tuple[str, str, bool]:
    """Close a cut-off span: (closed text, what was done, was the cut inside a value?).

    `stack` and `open_at` are `_span_end`'s state at the end of the text."""
    did: list[str] = []
    t = piece
    in_value = False
    if open_at >= 0:
        before = piece[:open_at].rstrip()
        if stack and stack[-1] == "{" and before[-1:] in ("{", ","):
            t = before
            did.append("dropped the cut-off key")
        else:
            t = piece + piece[open_at]
            did.append("closed the open string")
            in_value = True
    t = t.rstrip()
    lit = _CUT_LITERAL.search(t) if open_at < 0 else None
    if lit:
        word = next(w for w in ("true", "false", "null") if w.startswith(lit.group(1)))
        t = t[: lit.start(1)] + word
        did.append(f"completed the cut-off {lit.group(1)!r} as {word}")
        in_value = True
    if stack and stack[-1] == "{" and t.endswith(":"):
        t = _DANGLING_KEY.sub("", t).rstrip()
        did.append("dropped the key with no value")
    elif stack and stack[-1] == "{" and not in_value:
        m = _DANGLING_KEY.search(t)
        if m and m.group().rstrip()[-1:] != ":" and t[: m.start()].rstrip()[-1:] in ("{", ","):
            t = t[: m.start()].rstrip()
            did.append("dropped the key with no value")
    if t.endswith(","):
        t = t[:-1].rstrip()
        did.append("dropped a trailing comma")
    if not in_value and not did:
        in_value = bool(t) and (t[-1].isalnum() or t[-1] in ".-+")
    if len(stack) > 1:
        in_value = True
    closers = "".join("}" if c == "{" else "]" for c in reversed(stack))
    did.append(f"closed {len(closers)} bracket(s)")
    return t + closers, ", ".join(did), in_value


# ---------------------------------------------------------------------------- no-guess repair

_RELAX = re.compile(
    r"""(?P<dq>"(?:[^"\\]|\\.)*")|(?P<sq>'(?:[^'\\\n]|\\.)*')|(?P<com>//[^\n]*|/\*.*?\*/|\#[^\n]*)
    |(?P<num>-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.]))|(?P<word>[A-Za-z_$][\w$]*)
    |(?P<punct>[{}\[\]:,])|(?P<ws>\s+)|(?P<dots>\.\.\.|…)|(?P<bad>.)""",
    re.S | re.X,
)
ELIDED = "an elided '...' member dropped (the value is incomplete)"
_SQ_INNER = re.compile(r'\\(.)|"', re.S)
_PY = {"True": "true", "False": "false", "None": "null"}
_ENDS = {"}", "]", "true", "false", "null"}
_ENDS_WITH = tuple('"-0123456789')
_COLON_NEXT = re.compile(r"\s*:")


def _sq_to_dq(m: re.Match[str]) -> str:
    esc = m.group(1)
    return '\\"' if esc is None else ("'" if esc == "'" else "\\" + esc)


def relax(text: str) -> tuple[Any, list[str]] | None:
    """Decode `text` after fixes that change no value: single quotes, Python literals, comments,
    unquoted keys, trailing or missing commas, raw control characters in strings. (value, faults fixed),
    or None when anything else is wrong (then only a guess could repair it)."""
    try:
        return DECODER.decode(text), []
    except RecursionError:
        return None
    except ValueError:
        if len(text) > MAX_LENIENT:  # the token loop below is Python: bounded like json_repair
            return None
    out: list[str] = []
    faults: dict[str, None] = {}
    last = -1  # index in `out` of the last significant token
    elided = False
    for m in _RELAX.finditer(text):
        kind, tok, pos = m.lastgroup, m.group(), m.end()
        if kind == "bad":
            return None
        if kind == "ws":
            out.append(tok)
            continue
        if kind == "com":
            faults["comments"] = None
            continue
        if kind == "dots":  # `[1, 2, ...]`: the model elided members; the value is incomplete
            if out[last:][:1] not in (["{"], ["["], [","]):
                return None
            faults[ELIDED] = None
            elided = True
            continue
        if elided and tok == "," and out[last:][:1] in (["{"], ["["], [","]):
            elided = False
            continue
        elided = False
        starts = kind in ("dq", "sq", "num", "word") or tok in ("{", "[")
        if starts and last >= 0 and (out[last] in _ENDS or out[last][:1] in _ENDS_WITH):
            out.append(",")  # `{} {}`, `"a" "b"`, `1 "k": 2`: two values with no comma
            last = len(out) - 1
            faults["missing commas"] = None
        if kind == "sq":
            tok = '"' + _SQ_INNER.sub(_sq_to_dq, tok[1:-1]) + '"'
            faults["single-quoted strings"] = None
        elif kind == "word" and tok not in ("true", "false", "null"):
            if tok in _PY:
                tok = _PY[tok]
                faults["Python literals (True/False/None)"] = None
            elif _COLON_NEXT.match(text, pos) and out[last:][:1] in (["{"], [","]):
                tok = json.dumps(tok)
                faults["unquoted keys"] = None
            else:
                return None
        elif tok in "}]" and last >= 0 and out[last] == ",":
            out[last] = ""
            faults["trailing comma"] = None
        out.append(tok)
        last = len(out) - 1
    fixed = "".join(out)
    try:
        return DECODER.decode(fixed), list(faults)
    except RecursionError:
        return None
    except ValueError:
        pass
    try:
        value = _LAX.decode(fixed)
    except (ValueError, RecursionError):
        return None
    if _control_in_key(value):
        return None
    return value, [*faults, "raw control characters in strings (kept as written)"]


def _control_in_key(v: Any) -> bool:
    """A key holding a raw newline or tab: more likely a typing slip than a chosen key."""
    if isinstance(v, dict):
        return any(not k.isprintable() or _control_in_key(x) for k, x in v.items())
    return isinstance(v, list) and any(map(_control_in_key, v))


_MEMBER = re.compile(
    r""""(?:[^"\\]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|//[^\n]*|/\*.*?(?:\*/|\Z)|[{}\[\],]""", re.S
)
_EMPTY_VALUE = re.compile(r"""\s*(?:"[^"]*"|'[^']*'|[\w$]+)\s*:\s*""")


def _members(text: str) -> list[str]:
    """The top-level members of the object/array `text` starts with, as written (not parsed)."""
    depth, start, out = 0, 0, []
    for m in _MEMBER.finditer(text):
        c = m.group()
        if c in ("{", "["):
            depth += 1
            if depth == 1:
                start = m.end()
        elif c in ("}", "]"):
            depth -= 1
            if depth <= 0:
                out.append(text[start : m.start()])
                return [x for x in out if x.strip()]
        elif c == "," and depth == 1:
            out.append(text[start : m.start()])
            start = m.end()
    out.append(text[start:])
    return [x for x in out if x.strip()]


def _same(a: Any, b: Any) -> bool:
    """Type-exact equality (1 is not 1.0 or True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _as_written(repaired: Any, written: Any) -> Any:
    """`written` when the engine only trimmed its whitespace (json_repair strips the ends of
    strings: `"return 1\n"` -> `"return 1"`), else `repaired`."""
    if isinstance(repaired, str) and isinstance(written, str) and repaired == written.strip():
        return written
    return repaired


def guessed(text: str, value: Any) -> tuple[list[str], list[str]]:
    """Which top-level fields of `value` (repaired from `text` by a lenient engine) are not
    written in `text` as they came out: (guessed fields, fields with no value given).

    A field counts as written when its member, cut from `text` without parsing, decodes by
    itself with `relax` to exactly that value (a string the engine trimmed is put back as
    written). Array elements are named `[i]`; `$` means the
    whole value (not the kind of container `text` starts with)."""
    chunks = _members(text)
    if isinstance(value, dict) and text[:1] == "{":
        written, empty = set(), []
        for c in chunks:
            if _EMPTY_VALUE.fullmatch(c):
                got = relax("{" + c + "null}")
                if got is not None and isinstance(got[0], dict):
                    empty += list(got[0])
                continue
            got = relax("{" + c + "}")
            if got is not None and isinstance(got[0], dict) and len(got[0]) == 1:
                ((k, v),) = got[0].items()
                if k in value and _same(_as_written(value[k], v), v):
                    value[k] = v
                    written.add(k)
        guesses = [k for k in value if k not in written]
        if len(chunks) != len(value) or (value and not written):
            guesses.append("$")  # members merged, split or dropped: the layout is a guess
        return guesses, [k for k in empty if value.get(k) == ""]
    if isinstance(value, list) and text[:1] == "[":
        bad = []
        for i, v in enumerate(value):
            got = relax("[" + chunks[i] + "]") if i < len(chunks) else None
            if got is None or not isinstance(got[0], list) or len(got[0]) != 1:
                bad.append(f"[{i}]")
            elif _same(_as_written(v, got[0][0]), got[0][0]):
                value[i] = got[0][0]
            else:
                bad.append(f"[{i}]")
        whole = len(chunks) != len(value) or (value and len(bad) == len(value))
        return bad + (["$"] if whole else []), []
    return ["$"], []


def _repair(span: _Span) -> None:
    """Turn a JSON-looking span into a value, logging each step in `span.log`; every field whose
    value is a guess goes to `span.raw_flagged` and is named in the log."""
    piece, log = span.text, span.log
    if len(piece) > MAX_SPAN:
        log.errors.append(f"a {len(piece):,}-character JSON candidate is over the repair limit")
        return
    if _too_deep(piece, MAX_DEPTH):
        log.errors.append(f"JSON nested deeper than {MAX_DEPTH} levels; not repaired")
        return
    text, did, cut_in_value = piece, "", False
    if '"' not in piece and "“" in piece:
        text = piece.replace("“", '"').replace("”", '"')
        log.add("lenient_repair", "curly quotes “ ” used as JSON quotes were straightened")
    elif "'" not in piece and '"' not in piece and "‘" in piece:
        text = piece.replace("‘", "'").replace("’", "'")
        log.add("lenient_repair", "curly quotes ‘ ’ used as JSON quotes were straightened")
    kind = dict if piece.startswith("{") else list
    unclosed = span.truncated and _quote_missing(piece, span.open_at)
    if span.truncated and not unclosed:
        state = (span.stack, span.open_at) if text is piece else _span_end(text, 0)[1:]
        text, did, cut_in_value = _close(text, *state)
        got = relax(text)
        if got is not None:
            _truncated(span, got[0], did, cut_in_value)
            _relaxed(span, got[1])
            return
    elif not span.truncated:
        got = relax(text)
        if got is not None and isinstance(got[0], kind):
            _relaxed(span, got[1] or ["the syntax"])
            span.value, span.strict = got[0], False
            return
    if len(text) > MAX_LENIENT:
        log.errors.append(f"a {len(text):,}-character JSON candidate is over the json_repair limit")
        return
    try:
        import json_repair

        value = json_repair.repair_json(text, return_objects=True, skip_json_loads=True)
    except (ValueError, RecursionError, TypeError, IndexError) as exc:
        log.errors.append(f"json_repair could not repair the JSON: {exc}")
        return
    several = kind is dict and isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if several and value:
        span.several = True  # json_repair read several objects from this span
    elif not isinstance(value, kind):
        log.errors.append(
            f"json_repair did not recover a JSON {'object' if kind is dict else 'array'}"
        )
        return
    if span.truncated and not unclosed:
        _truncated(span, value, did + "; json_repair did the rest", cut_in_value)
    log.add("lenient_repair", "json_repair fixed: " + ("; ".join(_diagnose(text)) or "the syntax"))
    guesses, empty = guessed(text, value) if not span.several else (["$"], [])
    if unclosed:
        log.add("lenient_repair", "a string had no closing quote; where it ends is a guess")
        guesses = [*guesses, "$"]
    if empty and isinstance(value, dict):
        value.update(dict.fromkeys(empty))
        named = ", ".join(map(repr, empty))
        log.add("lenient_repair", f"no value was written for {named}; set to null")
    if guesses:
        span.raw_flagged.update(guesses)
        guesses = list(dict.fromkeys(guesses))
        named = ", ".join("the layout" if g == "$" else repr(g) for g in guesses)
        log.add("lenient_repair", f"guessed, not as written: {named}")
    span.value, span.strict = value, False


def _relaxed(span: _Span, faults: list[str]) -> None:
    """Log what `relax` fixed; elided members make the whole value a guess (`$`)."""
    if ELIDED in faults:
        span.raw_flagged.add("$")
        span.log.add("lenient_repair", ELIDED)
        faults = [f for f in faults if f != ELIDED]
    if faults:
        span.log.add("lenient_repair", "syntax fixed, no value changed: " + "; ".join(faults))


def _quote_missing(piece: str, open_at: int) -> bool:
    """An unterminated string whose text ends in a closer (`{"a": "b}`): more likely a missing
    closing quote than a reply cut off inside the string; json_repair decides where it ends."""
    if open_at < 0:
        return False
    return piece[open_at + 1 :].rstrip().rstrip("`").rstrip()[-1:] in ("}", "]")


def _truncated(span: _Span, value: Any, did: str, cut_in_value: bool) -> None:
    where = "after a complete value"
    if cut_in_value and isinstance(value, dict) and value:
        last = next(reversed(value))
        span.raw_flagged.add(last)
        where = f"inside the value of {last!r}, which may be incomplete"
    elif cut_in_value and isinstance(value, list) and value:
        span.raw_flagged.add(f"[{len(value) - 1}]")
        where = "inside the last element, which may be incomplete"
    span.log.add("truncated", f"reply was cut off {where}; {did}")
    span.value, span.strict = value, False
