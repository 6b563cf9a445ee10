"""The data that flows through the call path: `Request` in, `Completion` out.

Kept free of imports from the rest of labkit so backends, cache and tracing can all use it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Completion",
    "Event",
    "EventKind",
    "Message",
    "Request",
    "Usage",
    "check_params",
    "mend_text",
    "trusted",
]

Message = dict[str, Any]

# Generation parameters that change what the model writes. Only these reach the cache key and
# the backend; transport settings (timeout, retries, api_base, api_key) never do.
OUTPUT_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "min_p",
        "logit_bias",
        "n",
    }
)


_M = TypeVar("_M", bound=BaseModel)
_new = object.__new__
_set = object.__setattr__


def trusted(cls: type[_M], fields: dict[str, Any]) -> _M:
    """A pydantic model from values labkit built itself, without validation: `fields` holds
    every field, each of its declared type. For the hot path of every call (a parse result,
    a request), where validation cost more than the work itself and pydantic's own
    `model_construct` is slower still."""
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    _set(obj, "__pydantic_fields_set__", set(fields))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def mend_text(text: str) -> str:
    """`text`, or, when UTF-8 cannot encode it (a lone surrogate, as some models write), a copy
    with those code points backslash-escaped ("\\ud800"). No UTF-8 sink (SQLite, parquet, CSV,
    HTTP bodies, pandas' Arrow strings) can hold them, so labkit mends text where it enters:
    replies, prompts and dataset fields. Returns `text` itself when it is fine."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _number(lo: float, hi: float, lo_open: bool = False) -> Any:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return (lo < v if lo_open else lo <= v) and v <= hi  # NaN fails both

    return ok


def _integer(lo: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _stop(v: Any) -> bool:
    return isinstance(v, str) or (
        isinstance(v, list | tuple) and all(isinstance(s, str) for s in v) and len(v) <= 4
    )


# Allowed values of the output parameters, checked before any request is built: a provider
# would reject most of these only after a round trip (some never do, and silently clamp).
_PARAM_RULES: dict[str, tuple[Any, str]] = {
    "max_tokens": (_integer(1), "a positive int (1 or more)"),
    "temperature": (_number(0.0, 2.0), "a number in [0, 2]"),
    "top_p": (_number(0.0, 1.0, lo_open=True), "a number in (0, 1]"),
    "top_k": (_integer(0), "an int >= 0 (0 = off)"),
    "min_p": (_number(0.0, 1.0), "a number in [0, 1]"),
    "presence_penalty": (_number(-2.0, 2.0), "a number in [-2, 2]"),
    "frequency_penalty": (_number(-2.0, 2.0), "a number in [-2, 2]"),
    "repeat_penalty": (_number(0.0, float("inf"), lo_open=True), "a number > 0"),
    "seed": (_integer(-(2**63)), "an int"),
    "n": (_integer(1), "a positive int"),
    "stop": (_stop, "a string or a list of at most 4 strings"),
    "logit_bias": (lambda v: isinstance(v, dict), "a {token id: bias} mapping"),
}


def check_params(params: Any) -> None:
    """Raise `InvalidParameter` for an output parameter of the wrong type or out of range
    (None means "not set" and passes)."""
    for name, value in params.items():
        rule = _PARAM_RULES.get(name)
        if rule is not None and value is not None and not rule[0](value):
            from .errors import InvalidParameter

            raise InvalidParameter(name, value, rule[1])


class Usage(BaseModel):
    """Token counts as the provider reported them (or the local tokenizer counted them)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    """Input tokens, cached ones included."""
    completion_tokens: int = 0
    """Output tokens."""
    cached_tokens: int = 0
    """Input tokens served from the provider's prompt cache (billed cheaper)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Request(BaseModel):
    """What a backend needs to produce one completion. Built by the client, never by users."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: str
    """The resolved, pinned model id (for example 'openai/gpt-4o-mini-2024-07-18')."""
    messages: list[Message]
    params: dict[str, Any] = Field(default_factory=dict)
    """Output-affecting generation parameters (see OUTPUT_PARAMS)."""
    json_schema: dict[str, Any] | None = None
    """JSON Schema of the expected output, when structured output was asked for."""
    json_mode: bool = False
    """Use the provider's native JSON mode (only when the registry says it has one)."""
    sample: int = 0
    """Repeat index: the same request with another sample index is another cache entry."""
    transport: dict[str, Any] = Field(default_factory=dict, exclude=True)
    """api_base, api_key, timeout, extra headers: how to reach the model, never cached/traced."""


class Completion(BaseModel):
    """One answer from the call path, fresh or from the cache."""

    # Non-finite floats as JSON's usual constants (as `json.dumps` writes them), not null.
    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, ser_json_inf_nan="constants"
    )

    text: str
    """The model's raw reply text."""
    model: str
    """The pinned model id that produced it."""
    alias: str | None = None
    """The name the caller asked for, when it was an alias."""
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    """From litellm's price map for remote models; 0 for the local model."""
    latency_s: float = 0.0
    """Total wall time of the successful attempt (the original one, for a cache hit)."""
    ttft_s: float | None = None
    """Time to first token, measured by streaming."""
    finish_reason: str | None = None
    cache_hit: bool = False
    attempts: int = 1
    """Backend attempts made for this answer (retries and fallbacks included)."""
    trace_id: str | None = None
    cache_key: str | None = None
    raw: Any = None
    """The provider's response as JSON-safe data."""
    fallback_from: str | None = None
    """The model this answer replaced, when a fallback served it."""
    parsed: Any = None
    """A `labkit.structured.Parsed` when `schema=` was given (typed loosely so the cache-hit
    path never imports the parser). An entry read straight from a cache store holds its
    stored parse record here, as plain data, until the client checks it against a call's
    schema."""
    origin: dict[str, Any] | None = None
    """Where this answer was first produced: the attempt's trace row id, call id, run/item ids
    and time. Stored with the cache entry, so a grid resumed after a crash can write the
    attempt rows that were still queued when the process died."""

    def __str__(self) -> str:
        return self.text

    @property
    def value(self) -> Any:
        """Shortcut to the parsed value (None without a schema)."""
        return self.parsed.value if self.parsed is not None else None

    def to_cache(self) -> str:
        """The part worth storing, as JSON text; per-call fields are reset on a hit. Written by
        pydantic; a lone surrogate, which UTF-8 cannot hold, is written `\\u`-escaped by `json`
        instead."""
        try:
            return self.model_dump_json(exclude=_PER_CALL)
        except ValueError:  # pydantic's serialisation error: a lone surrogate
            return json.dumps(self.model_dump(exclude=_PER_CALL, mode="json"))


_PER_CALL = {"trace_id", "cache_hit", "parsed", "alias", "cache_key"}


class EventKind(StrEnum):
    """What the policy layer did around a call; each one becomes a trace row under the call."""

    RETRY = "retry"
    """An attempt failed with a retryable error and another will follow."""
    WAIT = "wait"
    """The policy slept (backoff, Retry-After, rate-limit bucket)."""
    FALLBACK = "fallback"
    """The next model of the fallback chain is taken."""
    BREAKER = "breaker"
    """A circuit breaker changed state (detail: from, to, reason)."""
    RATE_LIMIT = "rate_limit"
    """Concurrency or rate limits changed or delayed a call."""
    CONTEXT = "context"
    """Context-window use was near or over the limit."""


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: EventKind
    model: str
    detail: dict[str, Any] = Field(default_factory=dict)
