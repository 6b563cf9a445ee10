"""The prompt side of structured output: a schema as prompt text or as a native JSON mode.

`json_instructions` writes the instructions for models without a JSON mode; `response_format`
builds the OpenAI / llama.cpp `response_format` for models with one. Both ask for a
``<field>_confidence`` number in 0..1 next to each top-level field, which `labkit.parse` splits
out into `Parsed.confidences`.
"""

from __future__ import annotations

import json
from typing import Any

from .schema import SchemaLike, normalise, properties, resolve, to_json_schema

__all__ = [
    "copies_example",
    "format_line",
    "json_instructions",
    "legacy_example",
    "response_format",
]


def _branches(s: dict[str, Any], root: dict[str, Any]) -> list[Any]:
    """The alternatives of a union, null last (so examples show the real type)."""
    alts = s.get("anyOf") or s.get("oneOf") or []
    t = s.get("type")
    if isinstance(t, list):
        alts = [{**s, "type": x} for x in t]
    return sorted(alts, key=lambda b: resolve(b, root) in ({"type": "null"}, {**s, "type": "null"}))


def _example(s: Any, root: dict[str, Any], depth: int = 0) -> Any:
    s = resolve(s, root)
    if not isinstance(s, dict) or depth > 6:
        return "..."
    if s.get("examples") and isinstance(s["examples"], list):
        return s["examples"][0]
    if "const" in s or s.get("enum"):
        return s.get("const", (s.get("enum") or [None])[0])
    if _branches(s, root):
        return _example(_branches(s, root)[0], root, depth + 1)
    if s.get("type") == "object" or "properties" in s:
        return {k: _example(v, root, depth + 1) for k, v in (s.get("properties") or {}).items()}
    if s.get("type") == "array" or "items" in s:
        return [_example(s.get("items", {}), root, depth + 1)]
    t = s.get("type")
    return {"integer": 0, "number": 0.0, "boolean": True, "null": None}.get(str(t), "...")


def _describe(s: Any, root: dict[str, Any]) -> str:
    s = resolve(s, root)
    if not isinstance(s, dict):
        return "any JSON value"
    if s.get("enum"):
        return "one of " + ", ".join(json.dumps(x) for x in s["enum"])
    if _branches(s, root):
        return " or ".join(_describe(b, root) for b in _branches(s, root))
    t = s.get("type")
    if t == "array" or "items" in s:
        return f"a list of ({_describe(s.get('items', {}), root)})"
    if t == "object" or "properties" in s:
        return f"an object like {json.dumps(_example(s, root))}"
    names = {"string": "a string", "integer": "an integer", "number": "a number",
             "boolean": "true or false", "null": "null"}  # fmt: skip
    out = names.get(t, "any JSON value") if isinstance(t, str) else "any JSON value"
    return out + (
        f" from {s['minimum']} to {s['maximum']}" if "minimum" in s and "maximum" in s else ""
    )


def _placeholder(s: Any, root: dict[str, Any]) -> str:
    """A slot in the format line that cannot pass for an answer: ``<"a" or "b">``, ``<a string>``."""
    r = resolve(s, root)
    if isinstance(r, dict) and r.get("enum"):
        return "<" + " or ".join(json.dumps(x) for x in r["enum"]) + ">"
    return f"<{_describe(s, root)}>"


_CONFIDENCE_SLOT = "<your confidence, 0 to 1>"
LEGACY_CONFIDENCE = 0.9
"""The confidence labkit's format example showed before it used placeholders (replies that
copied it are flagged by `copies_example`)."""


def format_line(schema: SchemaLike, *, confidence: bool = True) -> str | None:
    """The one-line shape of the reply shown in the instructions (None without named fields)."""
    js = normalise(schema)
    if js is None or not (props := properties(js)):
        return None
    parts = []
    for name, sub in props.items():
        parts.append(f"{json.dumps(name)}: {_placeholder(sub, js)}")
        if confidence:
            parts.append(f"{json.dumps(name + '_confidence')}: {_CONFIDENCE_SLOT}")
    return "{" + ", ".join(parts) + "}"


def legacy_example(schema: SchemaLike, *, confidence: bool = True) -> dict[str, Any]:
    """The example object earlier versions showed (first enum value, 0.9 confidences); kept
    so that replies which copied it in older runs are still recognised."""
    js = normalise(schema)
    out: dict[str, Any] = {}
    if js is None:
        return out
    props = properties(js)
    for name, sub in props.items():
        out[name] = _example(sub, js)
        if confidence:
            out[f"{name}_confidence"] = LEGACY_CONFIDENCE
    return out


def copies_example(output: str | None, schema: SchemaLike, *, legacy: bool = False) -> bool:
    """Whether a reply parrots the format line instead of answering: it contains one of the
    ``<...>`` slots, which no real answer does.

    With `legacy`, also a reply holding the old example object verbatim (first enum value,
    0.9 confidences). That is only evidence for runs made with the old instructions, and even
    then a right answer can look the same, so it is off by default; a variant that copied the
    old example shows up as collapsed predictions instead.
    """
    js = normalise(schema)
    if js is None or not (props := properties(js)) or not isinstance(output, str):
        return False
    slots = [_placeholder(sub, js) for sub in props.values()] + [_CONFIDENCE_SLOT]
    if any(slot in output for slot in slots):
        return True
    return legacy and json.dumps(legacy_example(schema)) in output


def json_instructions(schema: SchemaLike, *, confidence: bool = True) -> str:
    """Prompt text asking for exactly this JSON, for models without a native JSON mode.

    It is appended after the user's prompt, so it says how the prompt's own answer ("answer
    with one word") fits into the object instead of contradicting it, and it shows the shape
    with ``<...>`` slots rather than sample values: a small model copies sample values (the
    old example's "positive" / 0.9 came back as answers), and a copied slot is easy to flag.
    """
    js = normalise(schema)
    if js is None:
        return "Answer with one JSON value only: no prose, no code fences, no comments."
    props = properties(js)
    if not props:
        return (
            "Answer with JSON only (no prose, no code fences, no comments) matching this JSON "
            f"Schema:\n{json.dumps(js)}"
        )
    required = set(resolve(js, js).get("required") or ())
    lines = [
        "Give your answer as one JSON object and nothing else: no prose before or after it, no "
        "code fences, no comments. Whatever the task above asks you to answer (a word, a label, "
        "a number) goes into the matching key. Use exactly these keys:"
    ]
    for name, sub in props.items():
        sub_r = resolve(sub, js)
        desc = sub_r.get("description") if isinstance(sub_r, dict) else None
        need = "required" if name in required else "optional, may be null"
        lines.append(f'- "{name}" ({need}): {_describe(sub, js)}' + (f". {desc}" if desc else ""))
        if confidence:
            lines.append(
                f'- "{name}_confidence": a number from 0 to 1, how sure you are of "{name}"'
            )
    lines.append("Shape of the reply (replace each <...> with your own answer; do not copy it):")
    lines.append(str(format_line(schema, confidence=confidence)))
    return "\n".join(lines)


def response_format(schema: SchemaLike, *, confidence: bool = True) -> dict[str, Any]:
    """A native JSON-mode `response_format` (OpenAI / llama.cpp style) with confidence fields."""
    js = to_json_schema(schema)
    if js is None:
        return {"type": "json_object"}
    props = properties(js)
    if confidence and props:
        target = resolve(js, js)
        new_props: dict[str, Any] = {}
        required = list(target.get("required") or ())
        for name, sub in props.items():
            new_props[name] = sub
            new_props[f"{name}_confidence"] = {"type": "number", "minimum": 0, "maximum": 1}
            if name in required:
                required.append(f"{name}_confidence")
        target["properties"] = new_props
        target["required"] = required
    return {"type": "json_object", "schema": js}
