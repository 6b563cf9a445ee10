"""Map a prompt over a long document: split by tokens, one call per chunk, merge the answers.

Every chunk goes through the ordinary call path (`Client.agenerate`: cache, policy, fit check,
trace), so retries, fallbacks and cached answers work per chunk, and a re-run after a failure
pays only for the chunks that failed. The chunk calls carry `parent_id`, and one `kind="parent"`
trace row (written when the map ends) holds the totals, so a trace browser shows one document
as one unit::

    text -> chunk_text (model tokenizer, else high-side estimate; `overlap` tokens shared)
         -> agenerate(template with {{document}} = chunk, parent_id=P) per chunk, concurrently
         -> merge: schema -> merge_structured (lists concatenated, scalars by confidence)
                   no schema -> the chunk texts in order
         -> trace row kind="parent", call_id=P, meta={"chunks": n, ...}

The default chunk size fills the model's context window: window - the template's own tokens
(schema instructions included) - the reply's `max_tokens` - `CHUNK_MARGIN_TOKENS`. It is sized
for the model asked for; a fallback with a smaller window answers ContextOverflow for a chunk,
which the policy treats like any other reason to take the next model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from .client import default_client
from .context import CHARS_PER_TOKEN, count_tokens
from .errors import InputError, LabkitError
from .prompts import template_variables
from .trace_rows import trace_row
from .tracing import new_id
from .types import Completion
from .usage import Totals

if TYPE_CHECKING:
    from .client import CacheMode, Client
    from .structured import SchemaLike

__all__ = [
    "CHUNK_MARGIN_TOKENS",
    "DEFAULT_OVERLAP",
    "DEFAULT_REPLY_TOKENS",
    "Chunk",
    "ChunkedResult",
    "amap_chunks",
    "chunk_text",
    "map_chunks",
    "merge_structured",
]

CHUNK_MARGIN_TOKENS = 16
"""Kept free in every chunk's window: token boundaries shift by a few where the chunk meets the
template, and the chunk number variables are counted as one digit."""
DEFAULT_OVERLAP = 64
"""Tokens consecutive chunks share by default (capped at a quarter of the chunk size), so a
sentence cut at a boundary is still seen whole in one of the two chunks."""
DEFAULT_REPLY_TOKENS = 512
"""Reply room reserved when no max_tokens is given (at most a quarter of the window)."""
CHUNK_VARIABLES = ("chunk_number", "chunk_count")
"""Optional template variables filled per chunk: 1-based position and number of chunks."""


@dataclass(frozen=True)
class ChunkedResult:
    """The merged answer of one document and everything it was built from."""

    value: Any
    """With a schema: the merged dict (`merge_structured`); without: the chunk texts in order."""
    confidences: dict[str, float]
    """Per-field confidences of the merged value ({} without a schema)."""
    chunks: list[Chunk]
    completions: list[Completion | None]
    """One per chunk, in order; None where that chunk's call failed (see `errors`)."""
    parent_id: str
    """call_id of the parent trace row; every chunk call's trace rows carry it as parent_id."""
    totals: Totals
    """Sums over the chunk calls; `wall_s` is the whole map, chunking and merging included."""
    errors: dict[int, LabkitError] = field(default_factory=dict)
    """Chunk index -> the error its call ended with (only with on_error="keep")."""
    unparsed: list[int] = field(default_factory=list)
    """Chunks whose reply held no usable object for the schema (left out of the merge)."""

    @property
    def ok(self) -> bool:
        return not self.errors


def _ab_key(text: str, given: str | None, item_id: str | None) -> str:
    """One A/B arm for the whole document: chunks of one text must not split across arms."""
    if given is not None:
        return given
    return item_id or hashlib.sha256(text.encode()).hexdigest()[:16]


async def amap_chunks(
    text: str,
    *,
    template: str,
    variable: str = "document",
    model: str | None = None,
    schema: SchemaLike | None = None,
    client: Client | None = None,
    chunk_tokens: int | None = None,
    overlap: int | None = None,
    variables: Mapping[str, Any] | None = None,
    concurrency: int = 8,
    cache: CacheMode = "use",
    on_error: Literal["raise", "keep"] = "raise",
    **generate_kwargs: Any,
) -> ChunkedResult:
    """Run `template` over `text` in chunks through the call path and merge the answers.

    `template` must contain `{{<variable>}}` (the chunk goes there) and may use
    `{{chunk_number}}` / `{{chunk_count}}`; `variables` fills its other placeholders.
    `chunk_tokens` defaults to what fits the model's window (module docstring); consecutive
    chunks share `overlap` tokens (default `DEFAULT_OVERLAP`, at most a quarter of a chunk; an
    explicit value is used as given). At most `concurrency` chunk calls run at once (the policy's
    own limits still apply). `generate_kwargs` go to every chunk call (system, temperature,
    max_tokens, run_id, item_id, profile, ...); a `parent_id` there becomes the parent row's own
    parent, so a map can hang under a larger unit of work.

    on_error="raise" (default): if any chunk call fails, the parent row is written with
    status="error" and the first chunk's error is raised (a note names the chunk and the parent
    trace; answered chunks stay cached, so a re-run only repeats the failed ones).
    on_error="keep": return the partial result, with `errors` and `ok` saying what is missing.
    """
    started = time.perf_counter()
    if client is None:
        client = default_client()
    if on_error not in ("raise", "keep"):
        raise InputError(f"on_error must be 'raise' or 'keep', got {on_error!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency must be a positive integer, got {concurrency!r}")
    if variable not in template_variables(template):
        raise InputError(
            f"the template has no {{{{{variable}}}}} placeholder for the chunk; add it, or pass "
            f"variable=<the placeholder's name> (found: {sorted(template_variables(template))})"
        )
    fixed = dict(variables or {})
    kw = dict(generate_kwargs)
    outer_parent = kw.pop("parent_id", None)
    kw["ab_key"] = _ab_key(text, kw.pop("ab_key", None), kw.get("item_id"))
    # The request with a placeholder instead of the chunk: resolves the model and measures the
    # template exactly as the chunk calls will send it (system prompt, schema instructions).
    shape = {**fixed, **dict.fromkeys(CHUNK_VARIABLES, "0"), variable: "{{" + variable + "}}"}
    probe = client.prepare(template=template, variables=shape, model=model, schema=schema, **kw)
    res = probe.resolution
    backend = client.backend_for(res.model)
    tokenizer: Callable[[], tuple[Any, Any]] | None = getattr(backend, "tokenizer", None)

    def split() -> tuple[list[Chunk], dict[str, Any]]:
        # In a worker thread: a local tokenizer may load the model or wait for its lock.
        tok = detok = None
        if callable(tokenizer):
            tok, detok = tokenizer()
        info: dict[str, Any] = {"tokenizer": "model" if tok is not None else "estimate"}
        size = chunk_tokens
        if size is None:
            size, sizing = _fit_chunk(client, res.model, probe.messages, backend, probe.params)
            info |= sizing
        elif not isinstance(size, int) or size < 1:
            raise InputError(f"chunk_tokens must be a positive integer, got {size!r}")
        shared = min(DEFAULT_OVERLAP, size // 4) if overlap is None else overlap
        if not isinstance(shared, int) or not 0 <= shared < size:
            raise InputError(
                f"overlap={shared!r} must be a non-negative integer below the chunk size of "
                f"{size} tokens; lower overlap, or pass a larger chunk_tokens="
            )
        info |= {"chunk_tokens": size, "overlap": shared}
        return chunk_text(text, size, shared, tokenize=tok, detokenize=detok), info

    chunks, sizing = await asyncio.to_thread(split)
    parent_id = new_id()
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk: Chunk) -> Completion:
        filled = {**fixed, variable: chunk.text}
        filled |= {"chunk_number": chunk.index + 1, "chunk_count": chunk.total}
        async with gate:
            return await client.agenerate(
                template=template,
                variables=filled,
                model=model,
                schema=schema,
                parent_id=parent_id,
                cache=cache,
                **kw,
            )

    outcomes = await asyncio.gather(*(one(c) for c in chunks), return_exceptions=True)
    completions: list[Completion | None] = []
    errors: dict[int, LabkitError] = {}
    crash: BaseException | None = None
    for i, out in enumerate(outcomes):
        if isinstance(out, Completion):
            completions.append(out)
            continue
        completions.append(None)
        if isinstance(out, LabkitError):
            errors[i] = out
        elif crash is None:
            crash = out  # a bug or a cancellation: traced below, then raised as is
    done = [c for c in completions if c is not None]
    value: dict[str, Any] | list[str]
    if schema is not None:
        value, confidences, unparsed = _merge(completions)
    else:
        value, confidences, unparsed = [c.text for c in done], {}, []
    totals = Totals.of(completions, wall_s=time.perf_counter() - started)
    result = ChunkedResult(
        value=value,
        confidences=confidences,
        chunks=chunks,
        completions=completions,
        parent_id=parent_id,
        totals=totals,
        errors=errors,
        unparsed=unparsed,
    )
    failed: BaseException | None = crash or (errors[min(errors)] if errors else None)
    meta: dict[str, Any] = {"chunks": len(chunks), "variable": variable, **sizing}
    meta |= {
        "failed": sorted(i for i, c in enumerate(completions) if c is None),
        "unparsed": unparsed,
        "chunk_calls": [c.trace_id if c is not None else None for c in completions],
        "latency_s_sum": totals.latency_s_sum,
        "cache_hits": totals.cache_hits,
    }
    row = trace_row(
        "parent",
        "error" if failed is not None else "ok",
        totals=totals,
        call_id=parent_id,
        parent_id=outer_parent,
        run_id=kw.get("run_id"),
        item_id=kw.get("item_id"),
        alias=res.alias,
        model=res.model,
        prompt=probe.messages,
        response=json.dumps(value, default=str),
        params=probe.params,
        cache_hit=bool(done) and totals.cache_hits == len(chunks),
        parse_ok=(not unparsed and failed is None) if schema is not None else None,
        error_type=type(failed).__name__ if failed is not None else None,
        error=_failure_text(completions, failed) if failed is not None else None,
        meta=meta,
    )
    client.tracer.record(**row)
    if crash is not None:
        raise crash
    if errors and on_error == "raise":
        first = min(errors)
        kept = " (their answers are cached: a re-run repeats only the failed ones)"
        errors[first].add_note(
            f"labkit.map_chunks: chunk {first + 1} of {len(chunks)} failed "
            f"({len(errors)} in all); the answered chunks are traced under parent_id="
            f"{parent_id}{kept if cache != 'off' and client.cache is not None else ''}. "
            "Pass on_error='keep' for the partial result."
        )
        raise errors[first]
    return result


def map_chunks(
    text: str,
    *,
    template: str,
    variable: str = "document",
    model: str | None = None,
    schema: SchemaLike | None = None,
    client: Client | None = None,
    chunk_tokens: int | None = None,
    overlap: int | None = None,
    variables: Mapping[str, Any] | None = None,
    concurrency: int = 8,
    cache: CacheMode = "use",
    on_error: Literal["raise", "keep"] = "raise",
    **generate_kwargs: Any,
) -> ChunkedResult:
    """Blocking `amap_chunks` (runs on the client's own loop; works inside Jupyter too)."""
    if client is None:
        client = default_client()
    result: ChunkedResult = client.run(
        amap_chunks(
            text,
            template=template,
            variable=variable,
            model=model,
            schema=schema,
            client=client,
            chunk_tokens=chunk_tokens,
            overlap=overlap,
            variables=variables,
            concurrency=concurrency,
            cache=cache,
            on_error=on_error,
            **generate_kwargs,
        )
    )
    return result


def _fit_chunk(
    client: Client,
    model: str,
    messages: list[dict[str, Any]],
    backend: Any,
    params: Mapping[str, Any],
) -> tuple[int, dict[str, Any]]:
    """Largest chunk that fits `model`'s window beside the template and the reply."""
    caps = client.registry.capabilities(model)
    window = caps.context_window
    if window is None:
        raise InputError(
            f"{model}: its context window is unknown, so the chunk size cannot be derived; "
            "pass chunk_tokens=, or register the model with context_window= in the registry"
        )
    counter = getattr(backend, "count_tokens", None)
    template_tokens = count_tokens(
        model, messages, counter=(lambda m: counter(model, m)) if callable(counter) else None
    )
    max_tokens = params.get("max_tokens") or caps.params.get("max_tokens")
    reply = int(max_tokens) if max_tokens else min(DEFAULT_REPLY_TOKENS, window // 4)
    if caps.max_output_tokens is not None and not max_tokens:
        reply = min(reply, caps.max_output_tokens)
    size = window - template_tokens - reply - CHUNK_MARGIN_TOKENS
    if size < 1:
        raise InputError(
            f"{model}: the template ({template_tokens} tokens) plus {reply} reply tokens leave no "
            f"room for a chunk in the {window}-token window; shorten the template, lower "
            "max_tokens, or pick a model with a larger window"
        )
    sizing = {"window": window, "template_tokens": template_tokens, "reply_tokens": reply}
    return size, sizing


def _merge(
    completions: list[Completion | None],
) -> tuple[dict[str, Any], dict[str, float], list[int]]:
    """merge_structured over the chunks whose reply parsed to an object; the rest are listed."""
    values: list[dict[str, Any]] = []
    confidences: list[dict[str, float]] = []
    unparsed: list[int] = []
    for i, done in enumerate(completions):
        if done is None:
            continue
        parsed = done.parsed
        value = parsed.value if parsed is not None else None
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if not isinstance(value, dict):
            unparsed.append(i)
            continue
        values.append(value)
        confidences.append(dict(parsed.confidences) if parsed is not None else {})
    merged, confs = merge_structured(values, confidences)
    return merged, confs, unparsed


def _failure_text(completions: list[Completion | None], failed: BaseException) -> str:
    missing = [i + 1 for i, c in enumerate(completions) if c is None]
    return (
        f"{len(missing)} of {len(completions)} chunk(s) failed (chunk(s) {missing}); "
        f"first: {type(failed).__name__}: {failed}"
    )


# ------------------------------------------------------------- splitting and merging


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
