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

__all__ = ["json_instructions", "response_format"]


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


def json_instructions(schema: SchemaLike, *, confidence: bool = True) -> str:
    """Prompt text asking for exactly this JSON, for models without a native JSON mode."""
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
        "Answer with one JSON object only: no prose before or after it, no code fences, no "
        "comments. Use exactly these keys:"
    ]
    example: dict[str, Any] = {}
    for name, sub in props.items():
        sub_r = resolve(sub, js)
        desc = sub_r.get("description") if isinstance(sub_r, dict) else None
        need = "required" if name in required else "optional, may be null"
        lines.append(f'- "{name}" ({need}): {_describe(sub, js)}' + (f". {desc}" if desc else ""))
        example[name] = _example(sub, js)
        if confidence:
            lines.append(
                f'- "{name}_confidence": a number from 0 to 1, how sure you are of "{name}"'
            )
            example[f"{name}_confidence"] = 0.9
    lines.append("Example of the format (placeholder values):")
    lines.append(json.dumps(example))
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
