"""Every remote provider, through litellm. Imported lazily: `import labkit` and cache hits never
pay for litellm's import, and `LITELLM_LOCAL_MODEL_COST_MAP` keeps that import off the network.

Always streams, so time to first token is measured; the chunks are rebuilt into one response
for usage (cached tokens included) and litellm's price map gives the cost. litellm's own
retries are switched off: the policy layer owns retrying, so every attempt is traced.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import (
    AuthError,
    BadRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from ..types import Completion, Message, Request, Usage
from .base import response_format

__all__ = [
    "LiteLLMBackend",
    "import_litellm",
    "litellm_model_info",
    "litellm_ready",
    "litellm_token_count",
    "model_map",
]


_ready = False


def import_litellm() -> Any:
    global _ready
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    _ready = True
    return litellm


def litellm_ready() -> bool:
    """Whether `import_litellm` has finished (litellm is not merely being imported elsewhere)."""
    return _ready


_MAP_FILE = "model_prices_and_context_window_backup.json"
# Providers whose map entries `litellm.get_model_info` returns as stored, looked up by the bare
# name or "provider/name" (checked entry by entry against litellm in test_openai_compat.py).
_PLAIN_PROVIDERS = frozenset({"openai", "azure"})
_bundled: dict[str, Any] | None = None


def model_map() -> dict[str, Any]:
    """litellm's model map (prices, windows, capabilities). While litellm is not imported and
    its local map is in use (labkit's default), read from the JSON file litellm ships, without
    importing litellm: the import takes seconds (7 s on a 2-core machine), and on the lean
    transport's path nothing else needs it, so a grid's first call no longer stalls the loop
    for it. Once litellm is imported, its live `model_cost` (which `register_model` edits)."""
    global _bundled
    litellm = sys.modules.get("litellm")
    if litellm is not None and isinstance(getattr(litellm, "model_cost", None), dict):
        return dict(litellm.model_cost)
    if _bundled is None:
        local = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "True").lower() == "true"
        spec = importlib.util.find_spec("litellm") if local else None
        places = list(spec.submodule_search_locations or []) if spec is not None else []
        path = Path(places[0]) / _MAP_FILE if places else None
        if path is None or not path.is_file():
            return dict(import_litellm().model_cost)
        with path.open(encoding="utf-8") as f:
            _bundled = {k: v for k, v in json.load(f).items() if isinstance(v, dict)}
    return _bundled


def litellm_model_info(model: str) -> dict[str, Any]:
    """litellm's capabilities and prices for `model`, as ModelInfo fields ({} when unknown).
    OpenAI and Azure models are read from `model_map()` (no litellm import); anything else
    asks `litellm.get_model_info`, which knows each provider's naming rules."""
    provider, _, bare = model.partition("/")
    info: Any = None
    if provider in _PLAIN_PROVIDERS and bare and "litellm" not in sys.modules:
        table = model_map()
        for key in (bare, model):
            entry = table.get(key)
            if entry is not None and entry.get("litellm_provider") == provider:
                # as get_model_info reads an entry: a price the map leaves out is 0
                info = {"input_cost_per_token": 0, "output_cost_per_token": 0, **entry}
                break
    if info is None:
        litellm = import_litellm()
        try:
            info = litellm.get_model_info(model)
        except Exception:
            return {}
    return {
        "context_window": info.get("max_input_tokens") or info.get("max_tokens"),
        "max_output_tokens": info.get("max_output_tokens"),
        "json_mode": bool(info.get("supports_response_schema")) or None,
        "input_cost_per_token": info.get("input_cost_per_token"),
        "output_cost_per_token": info.get("output_cost_per_token"),
        "cached_input_cost_per_token": info.get("cache_read_input_token_cost"),
    }


def litellm_token_count(model: str, messages: list[Message]) -> int | None:
    """Prompt tokens by litellm's tokenizer for `model`; None when it cannot tell."""
    litellm = import_litellm()
    try:
        return int(litellm.token_counter(model=model, messages=messages))
    except Exception:
        return None


def litellm_reply_token_count(model: str, text: str) -> int | None:
    """Reply tokens as litellm's chunk builder counts a stream that reported no usage: the text
    alone, without the framing a message adds; None when it cannot tell."""
    litellm = import_litellm()
    try:
        return int(litellm.token_counter(model=model, text=text, count_response_tokens=True))
    except Exception:
        return None


class LiteLLMBackend:
    name = "litellm"

    async def generate(self, request: Request) -> Completion:
        litellm = import_litellm()
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "num_retries": 0,
            "max_retries": 0,
            **request.params,
            **{k: v for k, v in request.transport.items() if v is not None},
        }
        if (fmt := response_format(request)) is not None:
            kwargs["response_format"] = fmt
        start = time.perf_counter()
        ttft: float | None = None
        chunks: list[Any] = []
        try:
            stream = await litellm.acompletion(**kwargs)
            async for chunk in stream:
                if ttft is None and _has_content(chunk):
                    ttft = time.perf_counter() - start
                chunks.append(chunk)
            if not chunks:
                raise ProviderUnavailable(
                    "malformed or empty response: the stream carried no chunks", model=request.model
                )
            full = litellm.stream_chunk_builder(chunks, messages=request.messages)
            if full is None:
                raise ProviderUnavailable("empty stream: no chunks received", model=request.model)
        except ProviderError:
            raise
        except Exception as exc:
            raise _classify(exc, request.model) from exc
        latency = time.perf_counter() - start
        usage = getattr(full, "usage", None)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        # stream_chunk_builder has already priced the response; pricing it again costs more
        # CPU per call than the rest of labkit's path.
        cost = (getattr(full, "_hidden_params", None) or {}).get("response_cost")
        if cost is None:
            try:
                cost = litellm.completion_cost(completion_response=full, model=request.model)
            except Exception:
                cost = 0.0
        cost = float(cost or 0.0)
        choice = full.choices[0]
        return Completion(
            text=choice.message.content or "",
            model=request.model,
            usage=Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                cached_tokens=cached,
            ),
            cost_usd=cost,
            latency_s=latency,
            ttft_s=ttft if ttft is not None else latency,
            finish_reason=choice.finish_reason,
            raw=full.model_dump(mode="json"),
        )

    def count_tokens(self, model: str, messages: list[Message]) -> int | None:
        return litellm_token_count(model, messages)


def _has_content(chunk: Any) -> bool:
    try:
        return bool(chunk.choices and chunk.choices[0].delta.content)
    except AttributeError:
        return False


def _headers(exc: Any) -> dict[str, str]:
    for attr in ("litellm_response_headers", "headers"):
        h = getattr(exc, attr, None)
        if h:
            return {str(k).lower(): str(v) for k, v in dict(h).items()}
    response = getattr(exc, "response", None)
    h = getattr(response, "headers", None)
    return {str(k).lower(): str(v) for k, v in dict(h).items()} if h else {}


def _classify(exc: Exception, model: str) -> ProviderError:
    """Map litellm/openai/httpx exceptions onto labkit's retryable / non-retryable types."""
    from ..ratelimit import retry_after_from_headers

    litellm = import_litellm()
    status = getattr(exc, "status_code", None)
    message = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
    kw: dict[str, Any] = {"model": model, "status": status, "raw": type(exc).__name__}
    if isinstance(exc, litellm.ContextWindowExceededError):
        return BadRequest(f"context window exceeded: {message}", **kw)
    if isinstance(exc, litellm.RateLimitError) or status == 429:
        return RateLimited(message, retry_after=retry_after_from_headers(_headers(exc)), **kw)
    if isinstance(exc, litellm.Timeout) or "timeout" in type(exc).__name__.lower():
        return ProviderTimeout(message, **kw)
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError) or status in (
        401,
        403,
    ):
        return AuthError(f"{message}. Check the API key environment variable for this model.", **kw)
    if isinstance(exc, litellm.BadRequestError | litellm.NotFoundError) or status in (
        400,
        404,
        422,
    ):
        return BadRequest(message, **kw)
    # 5xx, connection errors, malformed bodies and anything unexpected: worth another try.
    return ProviderUnavailable(message, **kw)
