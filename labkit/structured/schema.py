"""Schemas for structured output: one normal form, guidance of a parsed value, and prompts.

Three forms are accepted wherever labkit takes a `schema=` (`SchemaLike`), and all of them are
normalised to one JSON Schema by `to_json_schema`:

- a pydantic model class: its `model_json_schema()` (computed once per class);
- a JSON Schema dict: recognised by `properties`, `$defs`/`$schema`, or a `type` that is a JSON
  type name with only JSON Schema keywords beside it;
- a plain dict of field types: ``{"sentiment": ["positive", "negative"], "score": float,
  "tags": "list[str]", "note": "str?", "address": {"city": str}}``: Python types, type names
  (``"str"``, ``"int"``, ``"float"``, ``"bool"``, ``"list"``, ``"dict"``, ``"any"``), a list of
  allowed values, a nested dict, a JSON Schema fragment, a pydantic model or any typing form
  pydantic understands. A field is required unless it is ``"type?"`` or its type allows None.

Anything else raises `InputError` naming what is wrong and how to fix it.

`Guide` applies a normalised schema to a parsed value (the schema-guidance stage of
`labkit.parse`): keys matched case-insensitively, types coerced, enum case normalised, confidence
fields split out and scaled, extras dropped (unless `additionalProperties` allows them), missing
fields reported. Every change is recorded in a `Log`, never made silently. Supported keywords: type, properties, required,
additionalProperties, items, enum, const, anyOf/oneOf/allOf, $ref (local), minimum/maximum
(exclusive too), minLength/maxLength, pattern, minItems/maxItems.

The prompt side (JSON instructions, native `response_format`) is in `labkit.instructions`.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, get_args, get_origin

from pydantic import BaseModel, TypeAdapter

from ..errors import InputError

__all__ = ["SchemaLike", "to_json_schema"]

SchemaLike = type[BaseModel] | dict[str, Any] | None
Path = tuple[str | int, ...]
"""Where a value sits: ('items', 0, 'qty') is items[0].qty."""

_JSON_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
_KEYWORDS = frozenset(
    """type properties required additionalProperties items prefixItems enum const anyOf oneOf
    allOf not $ref $defs definitions $schema $id title description default examples minimum
    maximum exclusiveMinimum exclusiveMaximum minLength maxLength pattern format minItems
    maxItems uniqueItems minProperties maxProperties patternProperties propertyNames
    contains multipleOf readOnly writeOnly deprecated discriminator""".split()
)
_TYPE_NAMES = {
    "str": "string", "string": "string", "text": "string",
    "int": "integer", "integer": "integer",
    "float": "number", "number": "number",
    "bool": "boolean", "boolean": "boolean",
    "list": "array", "array": "array",
    "dict": "object", "object": "object",
    "null": "null", "none": "null",
    "any": "",
}  # fmt: skip
_PY_TYPES: dict[Any, str] = {
    str: "string", int: "integer", float: "number", bool: "boolean",
    list: "array", dict: "object", type(None): "null",
}  # fmt: skip
_HINT = (
    "pass a pydantic model class, a JSON Schema dict ({'type': 'object', 'properties': {...}}) "
    "or a dict of field types ({'sentiment': ['positive', 'negative'], 'score': float})"
)
_FIELD_HINT = (
    "use a type (str, int, float, bool, list, dict), a type name ('str', 'int?', 'list[str]'), "
    "a list of allowed values, a nested dict of fields or a pydantic model"
)
_TRUE = ("true", "yes", "y", "1", 1)
_FALSE = ("false", "no", "n", "0", 0)
_MAX_SCHEMA_DEPTH = 64
_MAX_VALUE_DEPTH = 200
_OVERALL = "_overall"
"""Key in `Parsed.confidences` for a reply-level `"confidence": 0.8` that names no field."""


# ---------------------------------------------------------------------------- normalisation


def to_json_schema(schema: SchemaLike) -> dict[str, Any] | None:
    """Any accepted schema form as a JSON Schema dict (a private copy), or None for no schema."""
    js = normalise(schema)
    return None if js is None else copy.deepcopy(js)


def normalise(schema: object) -> dict[str, Any] | None:
    """Like `to_json_schema` but may return a shared (cached) dict: callers must not mutate it."""
    if schema is None:
        return None
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return _model_schema(schema)
    if isinstance(schema, BaseModel):
        name = type(schema).__name__
        raise InputError(
            f"schema is an instance of {name}, not a schema; pass the class: schema={name}"
        )
    if isinstance(schema, dict):
        try:
            key = _freeze(schema, 0)
        except (TypeError, RecursionError):
            return _normalise_dict(schema)
        if key not in _CACHE:
            if len(_CACHE) >= 256:
                _CACHE.clear()
            _CACHE[key] = _normalise_dict(schema)
        return _CACHE[key]
    raise InputError(
        f"schema must be a pydantic model class, a dict or None, not "
        f"{type(schema).__name__} ({_short(schema)}); {_HINT}"
    )


_CACHE: dict[Any, dict[str, Any]] = {}
"""Normalised dict schemas by their frozen form: keyed by content, so a schema dict that is
mutated is checked again, never served stale."""


def _freeze(x: Any, depth: int) -> Any:
    """A hashable image of a schema dict (TypeError if it holds something unhashable). Numbers
    are type-tagged, since 1 == 1.0 == True would otherwise make different schemas collide."""
    if depth > _MAX_SCHEMA_DEPTH:
        raise TypeError("too deep")
    if type(x) is dict:
        return (
            "d",
            tuple([(k, v if type(v) is str else _freeze(v, depth + 1)) for k, v in x.items()]),
        )
    if type(x) is list:
        return ("l", tuple([v if type(v) is str else _freeze(v, depth + 1) for v in x]))
    if isinstance(x, type):
        return x
    hash(x)
    return (type(x), x)


def _normalise_dict(schema: dict[Any, Any]) -> dict[str, Any]:
    if not schema:
        raise InputError(
            f"schema is an empty dict; pass schema=None to accept any JSON, or {_HINT}"
        )
    if _looks_like_json_schema(schema):
        _check(schema, schema, "schema", 0)
        return copy.deepcopy(schema)  # cached: the caller may mutate theirs later
    defs: dict[str, Any] = {}
    out = _fields_schema(schema, "schema", 0, defs)
    if defs:
        out["$defs"] = defs
    return out


@lru_cache(maxsize=256)
def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    try:
        return model.model_json_schema()
    except Exception as exc:
        raise InputError(f"cannot build a JSON Schema from {model.__name__}: {exc}") from exc


def _short(x: object) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _looks_like_json_schema(d: dict[Any, Any]) -> bool:
    """A dict is JSON Schema when it says so; otherwise it is a dict of field types."""
    if "$schema" in d or "$defs" in d or "definitions" in d:
        return True
    if isinstance(d.get("properties"), dict):
        return True
    if not all(isinstance(k, str) and k in _KEYWORDS for k in d):
        return False
    t = d.get("type")
    if isinstance(t, str):
        return t in _JSON_TYPES
    if isinstance(t, list):
        return bool(t) and all(isinstance(x, str) and x in _JSON_TYPES for x in t)
    return t is None and any(k in d for k in ("anyOf", "oneOf", "allOf", "$ref", "enum", "const"))


def _check(s: object, root: dict[str, Any], where: str, depth: int) -> None:
    """Reject what is not JSON Schema, naming the place; refs are checked, not followed."""
    if isinstance(s, bool):
        return
    if not isinstance(s, dict):
        raise InputError(f"{where} must be a JSON Schema (a dict), not {_short(s)}")
    if depth > _MAX_SCHEMA_DEPTH:
        raise InputError(f"{where}: schema nested deeper than {_MAX_SCHEMA_DEPTH} levels")
    t = s.get("type")
    for x in t if isinstance(t, list) else ([] if t is None else [t]):
        if not (isinstance(x, str) and x in _JSON_TYPES):
            raise InputError(
                f"{where}.type is {x!r}, not a JSON Schema type: {sorted(_JSON_TYPES)}"
            )
    req = s.get("required")
    if req is not None and not (isinstance(req, list) and all(isinstance(r, str) for r in req)):
        raise InputError(f"{where}.required must be a list of field names, not {_short(req)}")
    if "enum" in s and not (isinstance(s["enum"], list) and s["enum"]):
        raise InputError(f"{where}.enum must be a non-empty list of allowed values")
    subs: list[tuple[str, Any]] = []
    for kw in ("properties", "$defs", "definitions"):
        if kw in s and not isinstance(s[kw], dict):
            raise InputError(f"{where}.{kw} must be a dict of named schemas, not {_short(s[kw])}")
        subs += [(f"{kw}.{k}", v) for k, v in s.get(kw, {}).items()]
    for kw in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if kw in s and not (isinstance(s[kw], list) and s[kw]):
            raise InputError(f"{where}.{kw} must be a non-empty list of schemas")
        subs += [(f"{kw}[{i}]", v) for i, v in enumerate(s.get(kw, ()))]
    for kw in ("items", "additionalProperties", "not", "contains"):
        sub = s.get(kw)
        if isinstance(sub, list):  # the old tuple form of items
            subs += [(f"{kw}[{i}]", v) for i, v in enumerate(sub)]
        elif sub is not None:
            subs.append((kw, sub))
    for name, sub in subs:
        _check(sub, root, f"{where}.{name}", depth + 1)
    ref = s.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
        raise InputError(f"{where}.$ref {ref!r}: only local references ('#/$defs/Name') work")
    if ref is not None and _lookup(root, ref) is None:
        raise InputError(f"{where}.$ref {ref!r} points to nothing; add it under '$defs'")


def _lookup(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/") if ref not in ("#", "#/") else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _fields_schema(
    d: dict[Any, Any], where: str, depth: int, defs: dict[str, Any]
) -> dict[str, Any]:
    if depth > _MAX_SCHEMA_DEPTH:
        raise InputError(f"{where}: schema nested deeper than {_MAX_SCHEMA_DEPTH} levels")
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in d.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: field names must be non-empty strings, not {name!r}")
        sub, optional = _field(spec, f"{where}[{name!r}]", depth + 1, defs)
        props[name] = sub
        if not optional:
            required.append(name)
    return {"type": "object", "properties": props, "required": required}


def _field(spec: Any, where: str, depth: int, defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """One field type -> (JSON Schema, optional?)."""
    if isinstance(spec, str):
        name = spec.strip()
        optional = name.endswith("?")
        name = name.rstrip("?").strip()
        m = re.fullmatch(r"(?i)(?:list|array)\[(.+)\]", name)
        if m:
            item, _ = _field(m.group(1), where, depth + 1, defs)
            out: dict[str, Any] = {"type": "array", "items": item}
        elif name.lower() in _TYPE_NAMES:
            t = _TYPE_NAMES[name.lower()]
            out = {"type": t} if t else {}
        else:
            raise InputError(f"{where}: unknown type name {spec!r}; {_FIELD_HINT}")
        if optional and out.get("type") not in (None, "null"):
            out["type"] = [out["type"], "null"]
        return out, optional
    if isinstance(spec, list):
        if not spec or not all(x is None or isinstance(x, str | int | float) for x in spec):
            what = f"strings or numbers, not {_short(spec)}"
            raise InputError(f"{where}: a list means the allowed values and must hold {what}")
        out = {"enum": list(spec)}
        if all(isinstance(x, str) for x in spec):
            out["type"] = "string"
        return out, None in spec
    if isinstance(spec, dict):
        if not spec:
            raise InputError(f"{where}: an empty dict is no field type; {_FIELD_HINT}")
        if _looks_like_json_schema(spec):
            _check(spec, spec, where, depth)
            return spec, False
        return _fields_schema(spec, where, depth, defs), False
    if spec in _PY_TYPES:
        return {"type": _PY_TYPES[spec]}, spec is type(None)
    if spec is Any:
        return {}, False
    if isinstance(spec, type) or get_origin(spec) is not None:
        try:
            js = TypeAdapter(spec).json_schema(ref_template="#/$defs/{model}")
        except Exception as exc:
            raise InputError(f"{where}: {spec!r} is not a usable field type ({exc})") from exc
        defs.update(js.pop("$defs", {}))
        return js, type(None) in get_args(spec)
    raise InputError(f"{where}: {_short(spec)} is not a field type; {_FIELD_HINT}")


# ---------------------------------------------------------------------------- guidance


@dataclass
class Log:
    """What the pipeline changed, as it goes (`merge` keeps the log of the anyOf branch taken)."""

    repairs: list[tuple[str, str]] = field(default_factory=list)
    coerced: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    confidences: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, detail: str, path: Path = ()) -> None:
        """Record a step; a step naming a top-level field flags that field as repaired."""
        self.repairs.append((step, detail))
        if path and isinstance(path[0], str):
            self.flag(path[0])

    def flag(self, name: str) -> None:
        if name not in self.flagged:
            self.flagged.append(name)

    def merge(self, other: Log) -> None:
        self.repairs += other.repairs
        self.coerced += other.coerced
        self.errors += other.errors
        self.missing += other.missing
        self.extras += other.extras
        for name in other.flagged:
            self.flag(name)
        self.confidences.update(other.confidences)

    @property
    def quiet(self) -> bool:
        return not (self.repairs or self.errors or self.missing)


def fmt(path: Path) -> str:
    """('items', 0, 'qty') -> 'items[0].qty'."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "$"


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEP = re.compile(r"[\s\-./]+")


@lru_cache(maxsize=4096)
def norm_key(key: str) -> str:
    """'Loan Amount', 'loanAmount', 'LOAN-AMOUNT' -> 'loan_amount'."""
    return _SEP.sub("_", _CAMEL.sub("_", key.strip().strip("\"'*_`:"))).lower()


def _norm_word(s: str) -> str:
    return re.sub(r"[\s\-]+", "_", s.strip().strip("\"'`*.!,;:").strip()).lower()


_NUM = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def to_number(text: str) -> int | float | None:
    """'34' -> 34, ' 3.5 ' -> 3.5, '$1,200' -> 1200; anything else -> None."""
    t = text.strip().replace("_", "")
    t = re.sub(r"^[$€£¥]\s*", "", t)
    if _THOUSANDS.fullmatch(t):
        t = t.replace(",", "")
    if not _NUM.fullmatch(t):
        return None
    try:
        return int(t) if t.lstrip("+-").isdigit() else float(t)
    except ValueError:
        return None


def resolve(s: Any, root: dict[str, Any]) -> Any:
    """Follow `$ref`s (bounded, so a ref cycle cannot loop)."""
    for _ in range(32):
        if not (isinstance(s, dict) and "$ref" in s):
            return s
        target = _lookup(root, s["$ref"])
        if target is None:
            return {}
        extra = {k: v for k, v in s.items() if k != "$ref"}
        s = {**target, **extra} if extra else target
    return {}


@lru_cache(maxsize=1024)
def _norm_map(names: tuple[str, ...]) -> dict[str, str]:
    """Normalised key -> field name, for one object's fields (shared: do not mutate)."""
    return {norm_key(n): n for n in names}


def properties(js: dict[str, Any] | None) -> dict[str, Any]:
    """Top-level fields of an object schema ({} for anything else)."""
    if js is None:
        return {}
    s = resolve(js, js)
    props = s.get("properties") if isinstance(s, dict) else None
    return props if isinstance(props, dict) else {}


def wants(js: dict[str, Any] | None) -> str | None:
    """'object', 'array' or None (anything) for the top level of a schema."""
    if js is None:
        return None
    s = resolve(js, js)
    if not isinstance(s, dict):
        return None
    t = s.get("type")
    if t == "object" or (t is None and "properties" in s):
        return "object"
    return "array" if t == "array" or (t is None and "items" in s) else None


def _conf_like(path: Path, s: dict[str, Any]) -> bool:
    """A number field holding a probability: named *confidence*/*probability* or bounded 0..1."""
    name = path[-1] if path and isinstance(path[-1], str) else ""
    if "confidence" in name.lower() or "probability" in name.lower():
        return True
    return s.get("minimum") == 0 and s.get("maximum") == 1


def confidence(raw: Any, label: str, path: Path, log: Log) -> float | None:
    """A confidence as 0..1: '87%' and 0-100 scores are scaled, out-of-range values clipped.

    Numbers in (1, 100] are read as a 0-100 score (so 1.5 is 1.5 %, a documented choice);
    anything outside 0..100 after that is clipped. Words ('high') are dropped, never guessed.
    """
    text = raw.strip() if isinstance(raw, str) else ""
    pct = text.endswith("%")
    n = to_number(text.rstrip("%")) if text else raw
    if raw is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n):
        log.add("confidence_invalid", f"{label}: {_short(raw)} is not a number; dropped", path)
        return None
    x = float(n)
    if text and not pct:
        log.add("coerce", f"{label}: confidence {raw!r} -> {x}", path)
    if pct or 1 < x <= 100:
        x = round(x / 100, 10)
        how = "a percentage" if pct else "a 0-100 score"
        log.add("confidence_scale", f"{label}: {raw!r} read as {how} -> {x}", path)
    if not 0 <= x <= 1:
        clipped = min(1.0, max(0.0, x))
        log.add("confidence_clip", f"{label}: {raw!r} is outside 0..1, clipped to {clipped}", path)
        x = clipped
    return x


_PLAIN = frozenset({"type", "title", "description", "default", "examples", "format", "enum"})
_PY_OF = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
          "null": (type(None),)}  # fmt: skip


def _exact(v: Any, s: Any) -> bool:
    """`v` already fits a simple schema (a bare type or enum): the common case, checked cheaply.
    Numbers outside 0..1 take the slow path, which knows whether the field is a confidence."""
    if type(s) is not dict or not s.keys() <= _PLAIN:
        return False
    if "enum" in s:
        return any(v == a and type(v) is type(a) for a in s["enum"])
    t = s.get("type")
    return type(t) is str and type(v) in _PY_OF.get(t, ()) and (t != "number" or 0 <= v <= 1)


class Guide:
    """Applies one normalised schema to one value, writing every change to a `Log`."""

    def __init__(self, root: dict[str, Any], log: Log, raw_flagged: set[str] | None = None):
        self.root = root
        self.log = log
        self.raw_flagged = raw_flagged or set()

    def top(self, value: Any) -> Any:
        """The top level: objects also get confidence splitting and single-key unwrapping."""
        s = resolve(self.root, self.root)
        if isinstance(value, dict) and isinstance(s, dict) and "properties" in s:
            value = self._unwrap(value, s["properties"])
            return self._object(value, s, (), 0, top=True)
        return self.coerce(value, s, (), 0)

    def _unwrap(self, value: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
        """`{"result": {...fields...}}` -> the inner object, when no field is at the top.
        Confidence keys beside the wrapper are kept; other siblings become extras."""
        if not props or any(k in props for k in value):
            return value
        names = _norm_map(tuple(props))
        if any(isinstance(k, str) and norm_key(k) in names for k in value):
            return value
        inner = [
            k for k, v in value.items()
            if isinstance(v, dict) and any(isinstance(i, str) and norm_key(i) in names for i in v)
        ]  # fmt: skip
        if len(inner) != 1:
            return value
        (key,) = inner
        self.log.add("unwrap", f"fields were wrapped in {{{key!r}: ...}}; took the inner object")
        siblings = {k: v for k, v in value.items() if k != key}
        return {**value[key], **siblings}

    def coerce(self, v: Any, s: Any, path: Path, depth: int) -> Any:
        log = self.log
        s = resolve(s, self.root)
        if _exact(v, s):
            return v
        if s is True or not isinstance(s, dict) or not s:
            if s is False:
                log.errors.append(f"{fmt(path)}: no value is allowed here")
            return v
        if depth > _MAX_VALUE_DEPTH:
            log.errors.append(f"{fmt(path)}: nested deeper than {_MAX_VALUE_DEPTH}; not checked")
            return v
        for sub in s.get("allOf", ()):
            v = self.coerce(v, sub, path, depth + 1)
        branches = s.get("anyOf") or s.get("oneOf")
        if branches:
            return self._any_of(v, branches, path, depth)
        if "const" in s or "enum" in s:
            return self._enum(v, s["enum"] if "enum" in s else [s["const"]], path)
        t = s.get("type")
        if t is None:
            t = "object" if "properties" in s else ("array" if "items" in s else None)
        if isinstance(t, list):
            return self._any_of(v, [{**s, "type": x} for x in t], path, depth)
        if t is None:
            return v
        v = self._to_type(v, t, s, path, depth)
        self._constraints(v, t, s, path)
        return v

    def _any_of(self, v: Any, branches: list[Any], path: Path, depth: int) -> Any:
        if any(_exact(v, resolve(b, self.root)) for b in branches):
            return v
        fallback: tuple[Any, Log] | None = None
        for b in branches:
            trial = Guide(self.root, Log(), self.raw_flagged)
            out = trial.coerce(v, b, path, depth + 1)
            if trial.log.quiet:
                self.log.merge(trial.log)
                return out
            if fallback is None and not trial.log.errors and not trial.log.missing:
                fallback = (out, trial.log)
        if fallback is not None:
            self.log.merge(fallback[1])
            return fallback[0]
        self.log.errors.append(f"{fmt(path)}: {_short(v)} matches none of the allowed forms")
        return v

    def _enum(self, v: Any, allowed: list[Any], path: Path) -> Any:
        if any(v == a and type(v) is type(a) for a in allowed):
            return v
        if isinstance(v, str):
            key = _norm_word(v)
            hits = [a for a in allowed if isinstance(a, str) and _norm_word(a) == key]
            if len(hits) == 1:
                self.log.add("enum_case", f"{fmt(path)}: {v!r} -> {hits[0]!r}", path)
                return hits[0]
            n = to_number(v)
            if n is not None and any(n == a and not isinstance(a, bool) for a in allowed):
                self.log.add("coerce", f"{fmt(path)}: {v!r} -> {n!r}", path)
                self.log.coerced.append(fmt(path))
                return n
        self.log.errors.append(f"{fmt(path)}: {_short(v)} is not one of {allowed}")
        return v

    def _to_type(self, v: Any, t: str, s: dict[str, Any], path: Path, depth: int) -> Any:
        """`v` as JSON type `t`, coerced when that loses nothing; an error when it cannot be."""
        if t in ("object", "array") and isinstance(v, str) and v.lstrip()[:1] in ("{", "["):
            v = self._embedded_json(v, dict if t == "object" else list, path)
        if t == "object" and isinstance(v, dict):
            return self._object(v, s, path, depth, top=False)
        if t == "array" and v is not None and not isinstance(v, dict):
            if not isinstance(v, list):
                self._changed(path, f"{_short(v)} -> [{_short(v)}] (wrapped in a list)")
                v = [v]
            items = s.get("items")
            if isinstance(items, dict) and items:
                return [self.coerce(x, items, (*path, i), depth + 1) for i, x in enumerate(v)]
            return v
        if t == "string" and isinstance(v, str | int | float):
            if not isinstance(v, str):
                self._changed(path, f"{v!r} -> {json.dumps(v)!r}")
            return v if isinstance(v, str) else json.dumps(v)
        word = v.strip().lower() if isinstance(v, str) else v
        if t == "boolean" and (type(v) is bool or word in _TRUE + _FALSE):
            if type(v) is bool:
                return v
            self._changed(path, f"{v!r} -> {word in _TRUE!r}")
            return word in _TRUE
        if t == "null" and (v is None or word in ("null", "none")):
            if v is not None:
                self._changed(path, f"{v!r} -> None")
            return None
        if t in ("integer", "number") and not isinstance(v, bool):
            text = v.strip() if isinstance(v, str) else ""
            n = to_number(text.rstrip("%")) if text else v
            if isinstance(n, int | float) and math.isfinite(n) and not isinstance(n, bool):
                if text.endswith("%"):
                    if _conf_like(path, s):
                        self.log.coerced.append(fmt(path))
                        return confidence(v, fmt(path), path, self.log)
                elif t == "number" or float(n).is_integer():
                    num = n if t == "number" else int(n)
                    if isinstance(v, str) or type(num) is not type(v):
                        self._changed(path, f"{v!r} -> {num!r}")
                    return self._scale(num, s, path) if t == "number" else num
        self.log.errors.append(f"{fmt(path)}: expected {t}, got {_short(v)}")
        return v

    def _embedded_json(self, v: str, kind: type, path: Path) -> Any:
        try:
            out = json.loads(v)
        except (ValueError, RecursionError):
            return v
        if isinstance(out, kind):
            self._changed(path, f"parsed the JSON {kind.__name__} inside a string")
            return out
        return v

    def _changed(self, path: Path, detail: str) -> None:
        self.log.add("coerce", f"{fmt(path)}: {detail}", path)
        self.log.coerced.append(fmt(path))

    def _scale(self, x: int | float, s: dict[str, Any], path: Path) -> Any:
        if _conf_like(path, s) and not 0 <= x <= 1:
            return confidence(x, fmt(path), path, self.log)
        return x

    def _constraints(self, v: Any, t: str, s: dict[str, Any], path: Path) -> None:
        """Bounds, lengths and patterns: reported, never changed (except confidence clipping)."""
        kinds = {"integer": int | float, "number": int | float, "string": str, "array": list}
        if isinstance(v, bool) or t not in kinds or not isinstance(v, kinds[t]):
            return
        n = v if isinstance(v, int | float) else len(v)
        low, high = (("minimum", "maximum") if t in ("integer", "number") else
                     ("minLength", "maxLength") if t == "string" else ("minItems", "maxItems"))  # fmt: skip
        if not s.get(low, -math.inf) <= n <= s.get(high, math.inf) or (
            isinstance(v, int | float)
            and not s.get("exclusiveMinimum", -math.inf) < v < s.get("exclusiveMaximum", math.inf)
        ):
            what = f"{v!r}" if isinstance(v, int | float) else f"length {n}"
            self.log.errors.append(f"{fmt(path)}: {what} is outside the allowed range")
        pattern = s.get("pattern")
        if isinstance(v, str) and isinstance(pattern, str):
            try:
                if re.search(pattern, v) is None:
                    self.log.errors.append(f"{fmt(path)}: {_short(v)} does not match {pattern!r}")
            except re.error:
                pass

    def _object(
        self,
        v: dict[str, Any],
        s: dict[str, Any],
        path: Path,
        depth: int,
        *,
        top: bool,
    ) -> dict[str, Any]:
        log = self.log
        props: dict[str, Any] = s.get("properties") or {}
        # no declared fields: any key is welcome; declared fields: extras dropped unless allowed
        addl = s.get("additionalProperties", None if props else True)
        out: dict[str, Any] = {}
        rest: list[tuple[str, Any]] = []
        for k, x in v.items():
            if k in props:
                out[k] = x
                if top and k in self.raw_flagged:
                    log.flag(k)
            else:
                rest.append((k, x))
        dropped: list[str] = []
        if rest:
            by_norm = _norm_map(tuple(props))
            for k, x in rest:
                nk = norm_key(k)
                p = by_norm.get(nk)
                if p is not None and p not in out:
                    out[p] = x
                    log.add("key_case", f"{fmt((*path, k))!r} matched field {p!r}", (*path, p))
                    if top and k in self.raw_flagged:
                        log.flag(p)
                elif top and props and self._confidence_key(nk, k, x, by_norm, len(props)):
                    continue
                elif addl is True or isinstance(addl, dict):
                    out[k] = (
                        self.coerce(x, addl, (*path, k), depth + 1) if isinstance(addl, dict) else x
                    )
                else:
                    dropped.append(fmt((*path, k)))
        if dropped:
            log.extras += dropped
            log.add("drop_extra", "dropped field(s) not in the schema: " + ", ".join(dropped))
        for p in list(out):
            if p in props:
                out[p] = self.coerce(out[p], props[p], (*path, p), depth + 1)
        absent = [fmt((*path, r)) for r in s.get("required") or () if r not in out]
        if absent:
            log.missing += absent
            log.add("missing", "required field(s) absent: " + ", ".join(absent))
        return out

    def _confidence_key(self, nk: str, key: str, x: Any, by_norm: dict[str, str], n: int) -> bool:
        """Split `<field>_confidence`, a `confidence` object or a bare `confidence` number
        (the only field's, else `_overall`) into the log; False if `key` is none of these."""
        base = nk.removesuffix("_confidence")
        if base != nk and base in by_norm:
            pairs = [(by_norm.get(base), x, key)]
        elif nk not in ("confidence", "confidences"):
            return False
        elif isinstance(x, dict):
            pairs = [(by_norm.get(norm_key(str(k))), v, f"{key}.{k}") for k, v in x.items()]
        else:
            pairs = [(next(iter(by_norm.values())) if n == 1 else _OVERALL, x, key)]
        for name, raw, label in pairs:
            if name is None:
                self.log.extras.append(label)
                self.log.add("drop_extra", f"dropped a confidence for an unknown field: {label}")
            elif (c := confidence(raw, label, (), self.log)) is not None:
                self.log.confidences[name] = c
        return True
