"""Context measurement: count tokens and check a request fits the model's limits.

The client counts a request's tokens (`count_tokens`), asks `require_fit` whether it fits the
model's context window and output limit, and on `ContextOverflow` either takes the next model of
the fallback chain or, through `labkit.chunking.map_chunks`, splits the input into chunks that
fit (the splitting and merging live there, beside their only user).

Estimates, used only when no tokenizer is at hand, err on the high side (so a chunk that is
"estimated to fit" really fits): `CHARS_PER_TOKEN` characters per token, each whitespace word
costing at least one token, plus the per-message framing of the OpenAI chat format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ContextOverflow, InputError, OutputLimitExceeded
from .types import Event, EventKind

__all__ = [
    "CHARS_PER_TOKEN",
    "Fit",
    "OutputLimitExceeded",
    "check_fit",
    "count_tokens",
    "estimate_tokens",
    "require_fit",
]

CHARS_PER_TOKEN = 4
"""English text averages about 4 characters per BPE token (OpenAI's rule of thumb)."""
MESSAGE_OVERHEAD_TOKENS = 4
"""Role and separators around each chat message."""
REPLY_PRIMING_TOKENS = 3
"""The assistant header the model's reply starts with."""

TokenCounter = Callable[[list[dict[str, Any]]], int | None]
"""A backend's own counter; it returns None when it cannot count for this model."""


# ------------------------------------------------------------------------------------ counting


def _content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a multimodal list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return "" if content is None else str(content)


def estimate_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """chars / CHARS_PER_TOKEN (rounded up) plus the chat framing; used when nothing can count."""
    chars = sum(
        len(_content_text(m.get("content"))) + len(str(m.get("role", ""))) + len(m.get("name", ""))
        for m in messages
    )
    framing = MESSAGE_OVERHEAD_TOKENS * len(messages) + (REPLY_PRIMING_TOKENS if messages else 0)
    return math.ceil(chars / CHARS_PER_TOKEN) + framing


def token_upper_bound(messages: Sequence[dict[str, Any]]) -> int | None:
    """A count no tokenizer exceeds for text-only messages: UTF-8 bytes plus generous framing.

    Byte-level BPE and byte-fallback SentencePiece never make more tokens than bytes, so a
    request whose bound fits needs no exact count (the call path then records the provider's
    own prompt token count instead). None when a message holds anything but a string.
    """
    total = 0
    for m in messages:
        content = m.get("content")
        if not isinstance(content, str):
            return None
        total += len(content.encode()) + len(str(m.get("role", ""))) + len(m.get("name", ""))
        total += 4 * MESSAGE_OVERHEAD_TOKENS
    return total + 4 * REPLY_PRIMING_TOKENS


def count_tokens(
    model_id: str, messages: list[dict[str, Any]], counter: TokenCounter | None = None
) -> int:
    """Prompt tokens of `messages` for `model_id`.

    `counter` wins when the backend has one (the local llama.cpp model counts with its own
    tokenizer) and returns a number. Otherwise litellm's `token_counter`, imported only here so
    `import labkit` stays fast; it never downloads a tokenizer: where litellm would fetch one
    from the Hugging Face Hub (Llama, Cohere ids), tiktoken's approximation counts instead, as
    a count must not stall the call path for seconds offline. If litellm is missing or cannot
    count for this model, `estimate_tokens`.
    """
    counted = counter(messages) if counter is not None else None
    if counted is not None:
        return int(counted)
    try:
        from .backends.litellm_backend import import_litellm

        litellm = import_litellm()
    except ImportError:
        return estimate_tokens(messages)
    try:
        kwargs = _no_download(litellm, model_id)
        return int(litellm.token_counter(model=model_id, messages=messages, **kwargs))
    except Exception:  # unknown model, odd content shape, tokenizer not available
        return estimate_tokens(messages)


_DOWNLOADED_TOKENIZERS = frozenset({"cohere", "llama2", "llama3"})
"""litellm's tokenizer kinds that come from the Hub (anthropic and deepseek ship with it)."""


def _no_download(litellm: Any, model_id: str) -> dict[str, Any]:
    """token_counter arguments that keep litellm from fetching a tokenizer for `model_id`."""
    utils = getattr(litellm, "utils", None)
    kind = getattr(utils, "huggingface_tokenizer_kind", None)
    encoding = getattr(utils, "get_default_encoding", None)
    if kind is None or encoding is None or kind(model_id) not in _DOWNLOADED_TOKENIZERS:
        return {}  # nothing to download, or a litellm version that decides by itself
    return {"custom_tokenizer": {"type": "openai_tokenizer", "tokenizer": encoding()}}


# ----------------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class Fit:
    """Whether a request fits one model; unknown limits (None) are taken as no limit."""

    model: str
    prompt_tokens: int
    max_tokens: int | None
    context_window: int | None
    max_output_tokens: int | None
    fits: bool
    near_limit: bool
    """Fits, but prompt + max_tokens uses at least `warn_ratio` of the window."""
    used: float | None
    """(prompt_tokens + max_tokens) / context_window; None when the window is unknown."""
    reason: Literal["context", "output"] | None = None
    """Why it does not fit: the context window, or the output limit."""

    def error(self) -> ContextOverflow | None:
        """The typed error for a misfit, None when it fits."""
        if self.reason == "output":
            assert self.max_tokens is not None and self.max_output_tokens is not None
            return OutputLimitExceeded(
                self.model, self.prompt_tokens, self.max_tokens, self.max_output_tokens
            )
        if self.reason == "context":
            assert self.context_window is not None
            return ContextOverflow(
                self.model, self.prompt_tokens, self.max_tokens or 0, self.context_window
            )
        return None

    def event(self) -> Event | None:
        """A CONTEXT event for the trace when near or over the limit, else None."""
        if self.fits and not self.near_limit:
            return None
        detail = {
            "fits": self.fits,
            "near_limit": self.near_limit,
            "reason": self.reason,
            "prompt_tokens": self.prompt_tokens,
            "max_tokens": self.max_tokens,
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "used": self.used,
        }
        return Event(kind=EventKind.CONTEXT, model=self.model, detail=detail)


def check_fit(
    model_id: str,
    prompt_tokens: int,
    max_tokens: int | None,
    context_window: int | None,
    max_output_tokens: int | None,
    warn_ratio: float = 0.9,
) -> Fit:
    """Does `prompt_tokens` plus `max_tokens` fit the window, and `max_tokens` the output limit?

    max_tokens=None (the provider's default) reserves nothing for the reply: the provider then
    stops the answer when the window is full rather than refusing the request.
    """
    if not 0 < warn_ratio <= 1:
        raise InputError(f"warn_ratio must be in (0, 1], got {warn_ratio}")
    needed = prompt_tokens + (max_tokens or 0)
    used = needed / context_window if context_window else None
    reason: Literal["context", "output"] | None = None
    if max_tokens is not None and max_output_tokens and max_tokens > max_output_tokens:
        reason = "output"
    elif context_window and needed > context_window:
        reason = "context"
    fits = reason is None
    return Fit(
        model=model_id,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        context_window=context_window,
        max_output_tokens=max_output_tokens,
        fits=fits,
        near_limit=fits and used is not None and used >= warn_ratio,
        used=used,
        reason=reason,
    )


def require_fit(
    model_id: str,
    prompt_tokens: int,
    max_tokens: int | None,
    context_window: int | None,
    max_output_tokens: int | None,
    warn_ratio: float = 0.9,
) -> Fit:
    """`check_fit`, raising `ContextOverflow` (or `OutputLimitExceeded`) on a misfit."""
    fit = check_fit(
        model_id, prompt_tokens, max_tokens, context_window, max_output_tokens, warn_ratio
    )
    error = fit.error()
    if error is not None:
        raise error
    return fit
