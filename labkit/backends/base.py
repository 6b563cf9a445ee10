"""The one seam between labkit and a model: `async generate(request) -> Completion`.

Backends know how to reach a model and nothing else: caching, retries, fitting, tracing and
parsing all live in `labkit.client`, so a backend stays a screen long.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..types import Completion, Message, Request

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    name: str

    async def generate(self, request: Request) -> Completion:
        """One attempt. Raise `labkit.errors.ProviderError` subclasses on failure."""
        ...

    def count_tokens(self, model: str, messages: list[Message]) -> int | None:
        """Prompt tokens as this backend's tokenizer counts them; None when it cannot tell."""
        ...
