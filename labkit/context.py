"""Context measurement: count tokens, check a request fits, chunk long text, merge chunk results.

The client counts a request's tokens (`count_tokens`), asks `require_fit` whether it fits the
model's context window and output limit, and on `ContextOverflow` either takes the next model of
the fallback chain or, through `labkit.chunking.map_chunks`, splits the input with `chunk_text`,
runs the prompt over every chunk and folds the structured answers back together with
`merge_structured`.

Estimates, used only when no tokenizer is at hand, err on the high side (so a chunk that is
"estimated to fit" really fits): `CHARS_PER_TOKEN` characters per token, each whitespace word
costing at least one token, plus the per-message framing of the OpenAI chat format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .errors import ContextOverflow, InputError, OutputLimitExceeded
from .types import Event, EventKind

__all__ = [
    "CHARS_PER_TOKEN",
    "Chunk",
    "Fit",
    "OutputLimitExceeded",
    "check_fit",
    "chunk_text",
    "count_tokens",
    "estimate_tokens",
    "merge_structured",
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


# ----------------------------------------------------------------------------------- chunking


@dataclass(frozen=True)
class Chunk:
    """One piece of a long text, in order; consecutive chunks share `overlap` tokens."""

    index: int
    total: int
    """Number of chunks the text was split into (for prompts like "part 2 of 5")."""
    text: str
    start: int
    """Offset of the chunk in the source, in `unit`s."""
    end: int
    """End offset (exclusive): source[start:end] in chars, or tokens[start:end]."""
    unit: Literal["char", "token"]
    tokens: int
    """Token count: exact with a tokenizer, a high-side estimate without one."""
    estimated: bool


_WORD = re.compile(r"\S+")


def _word_cost(n_chars: int) -> int:
    """Estimated tokens of one whitespace word: at least 1, CHARS_PER_TOKEN chars per token."""
    return max(1, math.ceil(n_chars / CHARS_PER_TOKEN))


def chunk_text(
    text: str,
    max_tokens: int,
    overlap: int = 0,
    *,
    tokenize: Callable[[str], list[int]] | None = None,
    detokenize: Callable[[list[int]], str] | None = None,
) -> list[Chunk]:
    """Split `text` into chunks of at most `max_tokens` tokens, each sharing `overlap` tokens with
    the previous one so facts on a boundary are seen whole at least once.

    With `tokenize`/`detokenize` (the model's own tokenizer) the split is exact, on token ids.
    Without, whitespace words are packed greedily with a high-side estimate of their tokens (see
    `_word_cost`); chunks then start and end on word boundaries and keep the source's own
    spacing, the overlap is the fewest whole words reaching `overlap` estimated tokens (never
    the whole previous chunk), and a word too long for one chunk (a URL, base64) is cut.
    """
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise InputError(f"overlap must be in [0, max_tokens={max_tokens}), got {overlap!r}")
    if (tokenize is None) != (detokenize is None):
        raise InputError("pass tokenize and detokenize together (or neither, to estimate)")
    if tokenize is not None and detokenize is not None:
        return _chunk_tokens(tokenize(text), max_tokens, overlap, detokenize)
    return _chunk_words(text, max_tokens, overlap)


def _chunk_tokens(
    ids: list[int], max_tokens: int, overlap: int, detokenize: Callable[[list[int]], str]
) -> list[Chunk]:
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(ids):
        end = min(start + max_tokens, len(ids))
        spans.append((start, end))
        if end == len(ids):
            break
        start = end - overlap
    return [
        Chunk(i, len(spans), detokenize(ids[a:b]), a, b, "token", b - a, False)
        for i, (a, b) in enumerate(spans)
    ]


def _chunk_words(text: str, max_tokens: int, overlap: int) -> list[Chunk]:
    piece = max_tokens * CHARS_PER_TOKEN  # longest word piece that still fits one chunk
    words: list[tuple[int, int]] = []
    for m in _WORD.finditer(text):
        a, b = m.span()
        while b - a > piece:
            words.append((a, a + piece))
            a += piece
        words.append((a, b))
    costs = [_word_cost(b - a) for a, b in words]
    chunks: list[Chunk] = []
    i = 0
    while i < len(words):
        j, used = i, 0
        while j < len(words) and (j == i or used + costs[j] <= max_tokens):
            used += costs[j]
            j += 1
        a, b = words[i][0], words[j - 1][1]
        chunks.append(Chunk(len(chunks), 0, text[a:b], a, b, "char", used, True))
        if j == len(words):
            break
        k, shared = j, 0  # walk back over the words the next chunk repeats
        while k - 1 > i and shared < overlap:
            k -= 1
            shared += costs[k]
        i = k
    return [replace(c, total=len(chunks)) for c in chunks]


# ----------------------------------------------------------------------------------- merging


def _item_key(item: Any) -> str:
    """Dedupe key for a list item: strings ignore case and spacing, others compare as JSON."""
    if isinstance(item, str):
        return " ".join(item.split()).casefold()
    return json.dumps(item, sort_keys=True, default=str)


def merge_structured(
    values: list[dict[str, Any]], confidences: list[dict[str, float]]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Fold the structured answers of consecutive chunks into one, with its confidences.

    Rules, per field (a None or missing value is "not found in this chunk" and never wins):
    lists are concatenated in chunk order and deduplicated (first spelling kept); nested dicts
    are merged by these same rules; any other value is taken from the chunk that is most
    confident about it (the earliest on a tie). Confidences are keyed by field name, nested
    fields by dotted path ("address.city", falling back to "address"); a missing confidence
    counts as 0, and `confidences` may be [] when the answers carry none. Returned confidences:
    the winner's for a scalar, the highest contributor's for a list or dict.
    """
    if confidences and len(confidences) != len(values):
        raise InputError(
            f"{len(values)} values but {len(confidences)} confidence dicts; pass one per value "
            "(or [] for none)"
        )
    confs = confidences or [{} for _ in values]
    given = {key for c in confs for key in c}
    merged, out = _merge_level(list(values), confs, "")
    return merged, {k: v for k, v in out.items() if "." not in k or k in given}


def _confidence(conf: dict[str, float], path: str) -> float:
    while path:
        if path in conf:
            return float(conf[path])
        path = path.rpartition(".")[0]
    return 0.0


def _merge_level(
    values: list[dict[str, Any]], confs: list[dict[str, float]], prefix: str
) -> tuple[dict[str, Any], dict[str, float]]:
    fields: dict[str, None] = {}
    for value in values:
        fields.update(dict.fromkeys(value))
    merged: dict[str, Any] = {}
    out: dict[str, float] = {}
    for name in fields:
        path = f"{prefix}{name}"
        found = [
            (v[name], c) for v, c in zip(values, confs, strict=True) if v.get(name) is not None
        ]
        if not found:
            merged[name] = None  # every chunk saw the field and none had a value
            continue
        scores = [_confidence(c, path) for _, c in found]
        if all(isinstance(x, list) for x, _ in found):
            seen: dict[str, Any] = {}
            for items, _ in found:
                for item in items:
                    seen.setdefault(_item_key(item), item)
            merged[name], out[path] = list(seen.values()), max(scores)
        elif all(isinstance(x, dict) for x, _ in found):
            sub, sub_out = _merge_level([x for x, _ in found], [c for _, c in found], f"{path}.")
            merged[name], out[path] = sub, max(scores)
            out.update(sub_out)
        else:
            best = max(range(len(found)), key=lambda i: (scores[i], -i))
            merged[name], out[path] = found[best][0], scores[best]
    return merged, out
