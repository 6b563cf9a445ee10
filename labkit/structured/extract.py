"""Turn an LLM reply into the best honest structured value, and say exactly what it took.

`parse(text, schema)` returns a `Parsed`: the value, whether it is valid (`ok`), and a repair log
precise enough to tune the prompt instead of hiding the problem.

Pipeline, strict first (a stage runs only when the ones before it found nothing usable):

1. strict     `json.loads` of the whole reply. Valid JSON is returned untouched; without a
              schema nothing else runs (this path costs about one `json.loads`).
2. fence      ```json blocks (closed or not); their content is preferred over the prose.
3. embedded   JSON objects/arrays inside prose, found by the C decoder (`raw_decode`) at each
              `{`/`[`, so a stray brace in prose costs nothing and strings are never mis-split.
4. multi      several objects in one reply: `multi="first"|"last"|"merge"` (merge: later
              objects win conflicts, which are flagged). With a schema, objects sharing no field
              with it (an echoed input, an example) are ignored when another one does.
5. repair     JSON-looking spans that do not decode (`labkit.repair`): a cut-off reply is closed
              by us (so the log says exactly what was cut; spans up to 200 KB); faults that
              change no value (single quotes, Python literals, comments, bare keys, missing or
              trailing commas, raw newlines in strings) are fixed without guessing; the rest
              goes to `json_repair` (spans up to 64 KB: pure Python) and each of its top-level
              values is checked against what the reply wrote: those that differ are guesses,
              flagged. Nesting deeper than 64 is refused before any recursive code runs;
              replies over 1 MB get the strict stage only.
6. schema     (with a schema) keys matched case-insensitively, types coerced (`"34"` -> 34),
              enum case normalised, 0-100 scores and `"87%"` scaled to 0..1 for confidence
              fields, extras dropped, missing required fields reported; see `labkit.schema`.
7. extract    (with a schema, when no JSON was found) `Key: value` lines, `the sentiment is
              negative` sentences, or a short bare answer that fits exactly one field
              (`Positive.`). A value is only read where the field is named or the whole reply
              is the answer, never because it occurs somewhere in the text.

Repair steps (`Repair.step`), a fixed vocabulary:
``decode`` bytes were not clean UTF-8 / a BOM was dropped; ``fence`` taken from a code fence;
``embedded`` prose around the JSON ignored; ``unwrap`` the object was wrapped (`{"result": {...}}`
or a JSON string holding JSON); ``multi_object`` several objects, one picked or merged;
``truncated`` the reply was cut off and closed; ``lenient_repair`` syntax fixed (by us when no
value changes, else by json_repair, naming every value it had to guess);
``key_case`` a key matched a field case-insensitively; ``drop_extra`` fields not in the schema
dropped; ``missing`` required fields absent; ``coerce`` a value's type changed; ``enum_case`` an
enum value's spelling normalised; ``confidence_scale`` a percentage or 0-100 score scaled;
``confidence_clip`` a confidence outside 0..1 clipped; ``confidence_invalid`` a confidence that
is no number (`"high"`) dropped, never guessed; ``prose_extract`` values read from prose.

Confidences: for each schema field `x`, a key `x_confidence` (any case) or an entry of a nested
`"confidence": {"x": 0.9}` object goes to `Parsed.confidences["x"]` and leaves `value`; a bare
`"confidence": 0.8` goes to the only field, or to `"_overall"`. Without a schema nothing is split
(a key `x_confidence` may be a real field). Splitting them is the convention, not a repair.

Flagged fields (`Parsed.repaired_fields`): a top-level field is flagged when its value is not
exactly what the model wrote as valid JSON, or was guessed: it was coerced, enum-normalised,
scaled, matched by key case, read from prose, resolved in a merge conflict, was the value the
reply was cut off inside, or is a value json_repair produced that the reply does not spell out
(an unquoted value, a string whose end quote was missing, a value for a key that had none, which
becomes null). Elements of a top-level array are named `[i]`; `$` flags the whole value: its
layout was guessed (members merged, split or dropped) or it is one of several values in a row.
`ok` never rests on an unflagged guess, and a guessed field's confidence is multiplied by
`GUESS_DISCOUNT`. Syntax-only repairs around it (fences, prose, trailing commas, quotes,
comments) do not flag it: they change nothing the model said about that field. Reports should
discount flagged fields (or their confidences); dropped and missing fields are listed separately.
"""

from __future__ import annotations

import json
import re
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError
from ..types import trusted
from .repair import (
    DECODER,
    MAX_DEPTH,
    _repair,
    _Span,
    _span_end,
    _too_deep,
)
from .schema import (
    Guide,
    Log,
    SchemaLike,
    norm_key,
    normalise,
    properties,
    resolve,
    wants,
)

__all__ = ["MAX_TEXT", "Parsed", "Repair", "parse"]

MAX_TEXT = 1_000_000
"""Replies longer than this (characters) only get the strict stage."""
GUESS_DISCOUNT = 0.5
"""A field whose value is a guess keeps half the confidence the model gave it."""
MAX_SPANS = 32
"""Most candidate objects/arrays collected from one reply."""


class Repair(BaseModel):
    """One step the parser had to take; `step` is from the fixed vocabulary in the module doc."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str
    detail: str


class Parsed(BaseModel):
    """The result of `parse`: the value and everything that had to change to get it."""

    model_config = ConfigDict(extra="forbid")

    value: Any = None
    """Cleaned value (confidence fields removed); None when nothing could be recovered."""
    ok: bool = False
    """A value was recovered and it validates against the schema (no missing required field)."""
    repairs: list[Repair] = Field(default_factory=list)
    """Every step taken, in order, with detail."""
    missing: list[str] = Field(default_factory=list)
    """Required fields absent from the reply (dotted paths for nested ones)."""
    extras: list[str] = Field(default_factory=list)
    """Fields not in the schema, dropped from `value`."""
    coerced: list[str] = Field(default_factory=list)
    """Fields whose value type was changed (`"34"` -> 34)."""
    confidences: dict[str, float] = Field(default_factory=dict)
    """Per-field confidences in 0..1, split out of the reply."""
    repaired_fields: list[str] = Field(default_factory=list)
    """Top-level fields whose value needed repair or was guessed (see the module doc); `[i]` is
    an element of a top-level array, `$` the whole value."""
    errors: list[str] = Field(default_factory=list)
    """Why `ok` is False: validation failures, or why nothing could be recovered."""
    strategy: str = "none"
    """Furthest stage needed: strict | fence | embedded | multi | repair | extract | none."""

    @property
    def repair_steps(self) -> list[str]:
        """Distinct step names, in the order they first happened."""
        return list(dict.fromkeys(r.step for r in self.repairs))

    @property
    def clean(self) -> bool:
        """Valid as the model wrote it: ok and nothing repaired."""
        return self.ok and not self.repairs


def _strict(value: Any) -> Parsed:
    """The result for untouched valid JSON without a schema: the hot path."""
    return trusted(Parsed, {
        "value": value, "ok": True, "repairs": [], "missing": [], "extras": [], "coerced": [],
        "confidences": {}, "repaired_fields": [], "errors": [], "strategy": "strict",
    })  # fmt: skip


_DECODER = DECODER
_scan_once = _DECODER.scan_once  # type: ignore[attr-defined]
_MULTI = ("first", "last", "merge")


def parse(
    text: str | bytes | None,
    schema: SchemaLike = None,
    *,
    multi: Literal["first", "last", "merge"] = "first",
) -> Parsed:
    """Recover the best honest value from a model reply; never raises for a bad reply.

    Raises `InputError` only for a bad `schema`, `multi` or a `text` of the wrong type.
    """
    if schema is None and type(text) is str:
        try:
            value, end = _scan_once(text, 0)
        except (StopIteration, ValueError, RecursionError):
            pass  # leading whitespace, invalid or too deep: the full pipeline decides
        else:
            if (end == len(text) or text[end:].isspace()) and multi in _MULTI:
                return _strict(value)
    js = normalise(schema)
    if multi not in _MULTI:
        raise InputError(f"multi must be one of {_MULTI}, not {multi!r}")
    model = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
    return _Run(js, model, multi).parse(text)


# ---------------------------------------------------------------------------- scanning

_FENCE = re.compile(r"```(?:[ \t]*[\w+.-]*[ \t]*\n)?(.*?)(?:```|\Z)", re.S)
_JSONISH = re.compile(
    r"""\{\s*(?:["'}“/#]|[A-Za-z_$][\w$-]*\s*:)|\[\s*(?:[\[{"'“\]\d.-]|true|false|null)"""
)


def _decode_at(s: str, i: int) -> tuple[Any, int, int]:
    """Decode the value starting at `i`: (value, end, -1) or (None, -1, position it failed at).

    Decodes a window that grows 8x while the failure could be the window's own cut. The window
    matters: `JSONDecodeError` counts lines from the start of the string it is given, so
    decoding the whole reply at every `{` would be quadratic in its length.
    """
    width = 2048
    while True:
        chunk = s[i : i + width]
        try:
            value, end = _DECODER.raw_decode(chunk)
        except json.JSONDecodeError as exc:
            cut = i + width < len(s)
            if cut and (exc.pos >= len(chunk) - 16 or exc.msg.startswith("Unterminated string")):
                width *= 8
                continue
            return None, -1, i + exc.pos
        except (ValueError, RecursionError):
            return None, -1, i
        return value, i + end, -1


_STARTS = re.compile(r"""\{\s*["}]|\[\s*[\[{"\]\d.tfn-]""")
_CANDIDATE = re.compile(f"(?={_STARTS.pattern}|{_JSONISH.pattern})")


_CONTINUES = re.compile(r"""\s*,\s*(?:"[^"\n]*"|'[^'\n]*')\s*:?\s*\S""")
"""After a closed object: `, "key": ...` means the object went on (a premature closer)."""


def _scan(seg: str, fenced: bool, budget: list[int]) -> list[_Span]:
    """Candidates in one segment: decodable values, and JSON-looking spans that are not. A
    segment that starts with `{` or `[` is a candidate there whatever follows (`{2: 2}`)."""
    spans: list[_Span] = []
    pos = 0
    lead = len(seg) - len(seg.lstrip())
    first = lead if seg[lead : lead + 1] in ("{", "[") else -1
    while len(spans) < MAX_SPANS and budget[0] > 0:
        m = _CANDIDATE.search(seg, pos)
        forced = pos <= first and (m is None or m.start() > first)
        if m is None and not forced:
            break
        i = first if forced else m.start()  # type: ignore[union-attr]
        if not forced:
            outer = _enclosing(seg, pos, i)
            forced = outer >= 0
            i = outer if forced else i
        if _STARTS.match(seg, i):
            value, end, failed_at = _decode_at(seg, i)
            if end >= 0 and not _continues(seg, i, end):
                spans.append(_Span(i, end, fenced, value=value))
                pos = end
                continue
            budget[0] -= max(failed_at, end) - i + 1
        if not forced and _JSONISH.match(seg, i) is None:
            pos = i + 1
            continue
        end, stack, open_at = _span_end(seg, i)
        if end >= 0 and _continues(seg, i, end):
            end, stack, open_at = max(seg.rfind("}"), seg.rfind("]")) + 1, [], -1
        stop = len(seg) if end < 0 else end
        spans.append(
            _Span(i, stop, fenced, strict=False, truncated=end < 0, text=seg[i:stop],
                  stack=stack, open_at=open_at - i if open_at >= 0 else -1)
        )  # fmt: skip
        pos = stop
    for a, b in pairwise(spans):
        b.joined = not seg[a.end : b.start].strip().strip(",").strip()
    return spans


_INSIDE = re.compile(r"""\s*(?:(?:"[^"\n]*"?|'[^'\n]*'?|[^\s"',:{}\[\]]+"?)\s*[:,]\s*|,\s*)*+""")
"""What may stand between an unrecognised opener and a value inside it: keys (`1:`, `we!rd:`,
`a":`), bare words and commas (`[a, [1]]`), a leading comma."""


def _enclosing(seg: str, pos: int, i: int) -> int:
    """The outermost `{`/`[` after `pos` that the candidate at `i` sits inside, when the text
    between them is keys or bare values (`{1: ["a"], 2: ["b"]}`: the object, not `["a"]`);
    -1 when there is none. The candidate patterns miss such openers; their inner values must
    not be taken for the answer."""
    outer = -1
    while True:
        j = max(seg.rfind("{", pos, i), seg.rfind("[", pos, i))
        if j < 0 or i - j > 2000 or _INSIDE.fullmatch(seg, j + 1, i) is None:
            return outer
        outer = i = j


def _continues(seg: str, i: int, end: int) -> bool:
    """The object closed at `end` goes on with more members and a later closer."""
    return (
        seg[i] == "{"
        and _CONTINUES.match(seg, end) is not None
        and max(seg.rfind("}"), seg.rfind("]")) >= end
    )


# ---------------------------------------------------------------------------- prose extraction

_BULLET = r"""^[ \t>*#\-•+]*(?:\d+[.)]\s*)?[*_`"']*"""


def _key_pattern(name: str) -> str:
    words = [re.escape(w) for w in re.split(r"[_\s]+", norm_key(name)) if w]
    return r"[\s_-]*".join(words)


class _Extractor:
    """Schema-guided reading of a reply that holds no JSON: `Key: value` lines, `the <field>
    is <value>` sentences (enum/number/bool fields, value as the first word), or a short bare
    answer that fits exactly one field. Never a value that merely occurs somewhere."""

    def __init__(self, js: dict[str, Any]):
        self.js = js
        self.props = properties(js)

    def run(self, text: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        keys = [k for name in self.props for k in (name, f"{name}_confidence")]
        if "confidence" not in self.props:
            keys.append("confidence")
        for key in keys:
            rx = re.compile(
                _BULLET + _key_pattern(key) + r"""[*_`"']*[ \t]*[:=][ \t]*(.+?)[ \t]*$""",
                re.I | re.M,
            )
            m = rx.search(text)
            if m:
                found[key] = self._value(m.group(1), self.props.get(key))
        for name, sub in self.props.items():
            if name not in found:
                rx = re.compile(
                    rf"\b{_key_pattern(name)}\b[^.\n]{{0,40}}?\b(?:is|was|would be|should be)"
                    r"\s+([^.\n]{1,60})",
                    re.I,
                )
                m = rx.search(text)
                v = None if m is None else self._leading(m.group(1), sub)
                if v is not None:
                    found[name] = v
        if not any(k in self.props for k in found):
            found.update(self._bare(text))
        return found if any(k in self.props for k in found) else {}

    def _value(self, raw: str, sub: Any) -> Any:
        v = raw.strip().strip("*_`").strip()
        if len(v) > 1 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1].strip()
        if v.lower() in ("null", "none", "n/a", "-"):
            return None
        s = resolve(sub, self.js) if sub is not None else {}
        if not isinstance(s, dict):
            return v
        if s.get("type") == "array":
            return [x.strip().strip("\"'") for x in re.split(r"[,;]", v) if x.strip()]
        if s.get("type") == "string" and "enum" not in s:
            return v
        lead = self._leading(v, sub)
        return lead if lead is not None else v.rstrip(".,;").strip()

    def _allowed(self, s: dict[str, Any]) -> list[Any]:
        branches = [b for b in s.get("anyOf") or () if isinstance(b, dict)]
        return list(s.get("enum") or [e for b in branches for e in b.get("enum") or ()])

    def _leading(self, chunk: str, sub: Any) -> Any:
        """The field's value as the first word(s) of `chunk`, or None."""
        s = resolve(sub, self.js)
        if not isinstance(s, dict):
            return None
        t = chunk.strip().lstrip("*_`\"' ")
        allowed = sorted((a for a in self._allowed(s) if isinstance(a, str)), key=len, reverse=True)
        if allowed:
            for a in allowed:
                if re.match(rf"{re.escape(a)}(?![\w-])", t, re.I):
                    return t[: len(a)]
            return None
        kind = s.get("type")
        pattern = {
            "integer": r"[$€£]?[+-]?\d[\d,]*(?:\.\d+)?%?",
            "number": r"[$€£]?[+-]?\d[\d,]*(?:\.\d+)?%?",
            "boolean": r"(?:true|false|yes|no)\b",
        }.get(kind if isinstance(kind, str) else "")
        m = re.match(pattern, t, re.I) if pattern else None
        return m.group() if m else None

    def _bare(self, text: str) -> dict[str, Any]:
        """A short one-line reply that is exactly a value of one field (`Positive.`)."""
        t = text.strip().strip("*_`\"'").strip().rstrip(".!").strip().strip("*_`\"'")
        if not t or len(t) > 40 or "\n" in t:
            return {}
        hits = []
        for name, sub in self.props.items():
            lead = self._leading(t, sub)
            if lead is not None and len(lead) == len(t):
                hits.append((name, lead))
        return dict(hits) if len(hits) == 1 else {}


# ---------------------------------------------------------------------------- the run


class _Run:
    """One `parse` call with a schema or a non-trivial reply."""

    def __init__(self, js: dict[str, Any] | None, model: type[BaseModel] | None, multi: str):
        self.js = js
        self.model = model
        self.multi = multi
        self.log = Log()
        self.raw_flagged: set[str] = set()
        self.guesses: set[str] = set()
        """Flagged fields whose value is a guess (not prose read or a coercion): their
        confidence is discounted."""
        self.want = wants(js)
        self.filtered = ""

    def fail(self, why: str) -> Parsed:
        self.log.errors.append(why)
        return self.result(None, "none")

    def parse(self, text: object) -> Parsed:
        if text is None:
            return self.fail("no reply (text is None)")
        if isinstance(text, bytes | bytearray | memoryview):
            text = self._decode(bytes(text))
        elif not isinstance(text, str):
            raise InputError(f"text must be str, bytes or None, not {type(text).__name__}")
        assert isinstance(text, str)
        if text.startswith("\ufeff"):
            text = text[1:]
            self.log.add("decode", "dropped a byte-order mark")
        if not text.strip():
            return self.fail("empty reply")
        for _ in range(2):
            try:
                value = _DECODER.decode(text)
            except RecursionError:
                return self.fail("JSON nested too deeply to decode")
            except ValueError:
                break
            if self._fits(value):
                return self.finish(value, "strict")
            if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
                self.log.add("unwrap", "the reply was a JSON string holding JSON; decoded it")
                text = value
                continue
            if isinstance(value, list) and self.want == "object":
                picked = self._filter([_Span(0, len(text), False, value=value)])
                if picked:
                    return self.choose(picked, "multi", array=True)
            break
        if len(text) > MAX_TEXT:
            return self.fail(
                f"reply is {len(text):,} characters; above {MAX_TEXT:,} only strict JSON is accepted"
            )
        if _too_deep(text, 10 * MAX_DEPTH):
            return self.fail(
                f"JSON-like text nested deeper than {10 * MAX_DEPTH} levels; not scanned"
            )
        return self.scan(text)

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        self.log.add("decode", f"bytes were not UTF-8; {bad} undecodable sequence(s) replaced")
        return text

    def _fits(self, value: Any) -> bool:
        if self.want == "object":
            return isinstance(value, dict)
        return isinstance(value, list) if self.want == "array" else True

    def scan(self, text: str) -> Parsed:
        budget = [4 * len(text) + 10_000]
        spans: list[_Span] = []
        for m in _FENCE.finditer(text) if not self._fence_in_value(text) else ():
            seg = m.group(1)
            for k, sp in enumerate(_scan(seg, True, budget)):
                sp.joined = sp.joined or (k == 0 and bool(spans))
                sp.log.add("fence", "took the JSON from a code fence")
                if seg[: sp.start].strip() or seg[sp.end :].strip():
                    sp.log.add("embedded", "ignored text around the JSON inside the code fence")
                spans.append(sp)
        if not spans:
            for sp in _scan(text, False, budget):
                if text[: sp.start].strip() or text[sp.end :].strip():
                    sp.log.add("embedded", "ignored prose around the JSON")
                spans.append(sp)
        for sp in spans:
            if not sp.strict:
                _repair(sp)
        usable = []
        for sp in spans:
            if sp.several:
                usable += [
                    _Span(sp.start, sp.end, sp.fenced, value=v, strict=False, log=sp.log)
                    for v in sp.value
                ]
            elif sp.strict or sp.value is not None:
                usable.append(sp)
        picked = self._filter(usable)
        if picked:
            stage = "fence" if all(sp.fenced for sp in picked) else "embedded"
            return self.choose(picked, stage)
        for sp in spans:
            self.log.errors += sp.log.errors
        if budget[0] <= 0:
            self.log.errors.append(
                "scan budget exhausted; later parts of the reply were not searched"
            )
        if self.js is not None and properties(self.js):
            found = _Extractor(self.js).run(text)
            if found:
                names = [k for k in found if not k.endswith("confidence")]
                self.log.add("prose_extract", "no JSON; read from the prose: " + ", ".join(names))
                self.raw_flagged.update(found)
                self.log.errors.clear()
                return self.finish(found, "extract")
        what = "no JSON object or array" if not spans else "no usable JSON"
        return self.fail(f"{what} found in the reply ({len(text):,} characters)")

    @staticmethod
    def _fence_in_value(text: str) -> bool:
        """The reply is a JSON value from its first character and its first code fence is inside
        it (in a string value): the value wins over the fence."""
        at = text.find("```")
        lead = len(text) - len(text.lstrip())
        if at < 0 or text[lead : lead + 1] not in ("{", "["):
            return False
        end = _span_end(text, lead)[0]
        return end < 0 or at < end

    def _filter(self, spans: list[_Span]) -> list[_Span]:
        """Keep the candidates of the wanted kind; with a schema, those sharing a field with it."""
        if self.want == "object" or (
            self.want is None and any(isinstance(s.value, dict) for s in spans)
        ):
            out = [s for s in spans if isinstance(s.value, dict)]
            if (
                self.want is None
                and any(not isinstance(s.value, dict) for s in spans)
                and all(s.joined for s in spans[1:])
            ):
                self.guesses.add("$")  # an array beside the object(s): which was meant?
                self.raw_flagged.add("$")
                self.filtered = "ignored JSON arrays beside the object(s)"
            if not out and self.want == "object":
                out = [
                    _Span(s.start, s.end, s.fenced, value=x, strict=s.strict, log=s.log)
                    for s in spans if isinstance(s.value, list) for x in s.value if isinstance(x, dict)
                ]  # fmt: skip
        elif self.want == "array":
            out = [s for s in spans if isinstance(s.value, list)]
        else:
            out = list(spans)
        if len(out) > 1:
            out = [s for s in out if s.value] or out[:1]
        props = properties(self.js)
        if props and len(out) > 1:
            names = {norm_key(p) for p in props}
            names |= {f"{n}_confidence" for n in names}
            sharing = [
                s
                for s in out
                if isinstance(s.value, dict)
                and any(isinstance(k, str) and norm_key(k) in names for k in s.value)
            ]
            if sharing and len(sharing) < len(out):
                self.filtered = (
                    f"ignored {len(out) - len(sharing)} object(s) sharing no field with the schema"
                )
                out = sharing
        return out

    def choose(self, spans: list[_Span], stage: str, array: bool = False) -> Parsed:
        where = "elements of the JSON array" if array else "JSON values in the reply"
        chosen = (
            spans
            if len(spans) == 1 or self.multi == "merge"
            else [spans[-1 if self.multi == "last" else 0]]
        )
        for s in {id(s.log): s for s in chosen}.values():  # split spans share one log
            self.log.merge(s.log)
            self.raw_flagged |= s.raw_flagged
            self.guesses |= s.raw_flagged
        value = chosen[0].value
        if array and len(spans) == 1:
            self.log.add("multi_object", "the reply was a JSON array holding one object; took it")
        elif (
            len(spans) > 1
            and self.multi == "merge"
            and all(isinstance(s.value, dict) for s in spans)
        ):
            value = {}
            conflicts: list[str] = []
            for s in spans:
                for k, v in s.value.items():
                    if k in value and value[k] != v and k not in conflicts:
                        conflicts.append(k)
                    value[k] = v
            self.raw_flagged.update(conflicts)
            self.guesses.update(conflicts)
            extra = f"; later values won for {', '.join(map(repr, conflicts))}" if conflicts else ""
            self.log.add("multi_object", f"merged {len(spans)} {where}{extra}")
        elif len(spans) > 1:
            how = "last" if self.multi == "last" else "first"
            note = " (merge needs objects)" if self.multi == "merge" else ""
            self.log.add("multi_object", f"found {len(spans)} {where}; took the {how}{note}")
            self.raw_flagged.add("$")  # which one was meant is a guess
            self.guesses.add("$")
        if self.filtered:
            self.log.add("multi_object", self.filtered)
        if array or len(spans) > 1 or self.filtered:
            stage = "multi"
        if any(not s.strict for s in chosen):
            stage = "repair"
        return self.finish(value, stage)

    def finish(self, value: Any, stage: str) -> Parsed:
        log = self.log
        if self.js is not None:
            value = Guide(self.js, log, self.raw_flagged).top(value)
            if "$" in self.raw_flagged:
                log.flag("$")
            if (
                self.model is not None
                and not log.errors
                and not log.missing
                and isinstance(value, dict)
            ):
                try:
                    self.model.model_validate(value)
                except ValidationError as exc:
                    for e in exc.errors():
                        where = ".".join(str(p) for p in e["loc"]) or "$"
                        log.errors.append(f"{where}: {e['msg']}")
        else:
            for k in sorted(self.raw_flagged):
                log.flag(k)
        return self.result(value, stage)

    def result(self, value: Any, stage: str) -> Parsed:
        log = self.log
        props = properties(self.js)
        flagged = [f for f in log.flagged if not props or f in props or f == "$"]
        if isinstance(value, dict) and self.js is not None:
            flagged = [f for f in flagged if f in value or f == "$"]
        guesses = self.guesses
        confidences = {
            k: c * GUESS_DISCOUNT if k in guesses or "$" in guesses else c
            for k, c in log.confidences.items()
        }
        ok = stage != "none" and not log.errors and not log.missing
        repairs = [trusted(Repair, {"step": st, "detail": d}) for st, d in log.repairs]
        return trusted(Parsed, {
            "value": value, "ok": ok, "repairs": repairs, "missing": log.missing,
            "extras": log.extras, "coerced": log.coerced, "confidences": confidences,
            "repaired_fields": flagged, "errors": log.errors, "strategy": stage,
        })  # fmt: skip
