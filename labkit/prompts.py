"""Prompt templates: `{{name}}` placeholders, so JSON examples inside a prompt need no escaping."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import MessagesError, TemplateError
from .types import Message, mend_text

__all__ = ["build_messages", "render", "template_variables"]

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


def template_variables(template: str) -> set[str]:
    """Names a template needs, e.g. {'text'} for 'Classify: {{text}}'."""
    return {m.group(1) for m in _VAR.finditer(template)}


def render(template: str, variables: Mapping[str, Any] | None = None) -> str:
    """Fill `{{name}}` placeholders; every missing name is reported at once."""
    variables = variables or {}
    missing = [name for name in template_variables(template) if name not in variables]
    if missing:
        raise TemplateError(missing, template)
    return _VAR.sub(lambda m: str(variables[m.group(1)]), template)


def build_messages(
    prompt: str | None = None,
    *,
    messages: list[Message] | None = None,
    template: str | None = None,
    variables: Mapping[str, Any] | None = None,
    system: str | None = None,
) -> list[Message]:
    """Normalise the three ways of asking (prompt, template+variables, messages) into messages."""
    given = sum(x is not None for x in (prompt, messages, template))
    if given != 1:
        raise MessagesError(
            f"pass exactly one of prompt=, template= (with variables=) or messages= (got {given})"
        )
    if messages is not None:
        out = _check_messages(messages)
        if variables:
            out = [
                {**m, "content": render(m["content"], variables)}
                if isinstance(m.get("content"), str)
                else m
                for m in out
            ]
    else:
        source = template if template is not None else str(prompt)
        text = render(source, variables) if template is not None or variables else source
        out = [{"role": "user", "content": text}]
    if system is not None:
        out = [{"role": "system", "content": render(system, variables or {})}, *out]
    for m in out:  # a lone surrogate cannot travel as UTF-8: sent (and keyed) escaped
        content = m.get("content")
        if isinstance(content, str) and (mended := mend_text(content)) is not content:
            m["content"] = mended
    return out


def _check_messages(messages: object) -> list[Message]:
    if not isinstance(messages, list) or not messages:
        raise MessagesError(f"expected a non-empty list, got {type(messages).__name__}")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise MessagesError(f"expected a dict, got {type(m).__name__}", i)
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise MessagesError(f"role {role!r} is not one of {sorted(_ROLES)}", i)
        if not isinstance(content, str | list):
            raise MessagesError(f"content must be a string, got {type(content).__name__}", i)
        out.append(dict(m))
    return out
