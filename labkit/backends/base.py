"""The one seam between labkit and a model: `async generate(request) -> Completion`.

Backends know how to reach a model and nothing else: caching, retries, fitting, tracing and
parsing all live in `labkit.client`, so a backend stays a screen long.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..types import Completion, Message, Request

__all__ = ["Backend", "response_format"]


@runtime_checkable
class Backend(Protocol):
    name: str

    async def generate(self, request: Request) -> Completion:
        """One attempt. Raise `labkit.errors.ProviderError` subclasses on failure."""
        ...

    def count_tokens(self, model: str, messages: list[Message]) -> int | None:
        """Prompt tokens as this backend's tokenizer counts them; None when it cannot tell."""
        ...


def response_format(request: Request) -> dict[str, Any] | None:
    """OpenAI's `response_format` for a JSON-mode request (its schema when it has one), shared
    by every OpenAI-style backend so the two transports cannot drift apart."""
    if not request.json_mode:
        return None
    if request.json_schema:
        return {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": request.json_schema},
        }
    return {"type": "json_object"}
