"""The lean transport for endpoints that speak OpenAI's chat-completions API (OpenAI, Azure
OpenAI, and any `api_base` server: vLLM, llama.cpp, OpenRouter, Together, Groq, DeepSeek, ...).

Why it exists: litellm's streamed path costs ~20 ms of CPU per call (chunk objects, the chunk
builder, pricing), which caps a grid near 50 calls/s per core. Here one pooled aiohttp session
per event loop posts the request and the SSE lines are parsed straight into a `Completion`
(~0.5 ms per call). aiohttp, not httpx: on the loopback server a raw aiohttp client spends
well under half of a raw httpx client's CPU per streamed call (`bench/bench_grid.py --httpx`).

litellm stays the source of model facts (prices, windows), looked up once per model, and the
error types are the ones `LiteLLMBackend` raises for the same HTTP answers. The API key goes
in a header only; it is scrubbed from any text that reaches an exception.

Usable on its own: `await OpenAICompatBackend().generate(request)` with `api_base` / `api_key`
in `request.transport`. The pool closes with its loop under `asyncio.run`; on a loop that lives
on, `await backend.aclose()` when done (`Client.close` does that for its loop).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import (
    AuthError,
    BadRequest,
    ConfigError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from ..types import Completion, Message, Request, Usage
from .base import response_format

__all__ = ["OpenAICompatBackend"]

_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_API_KEY"}
_BASE_ENV = {"openai": ("OPENAI_API_BASE", "OPENAI_BASE_URL"), "azure": ("AZURE_API_BASE",)}
_OPENAI_BASE = "https://api.openai.com/v1"
_AZURE_API_VERSION = "2024-10-21"
_DEFAULT_TIMEOUT = 600.0  # litellm's default, so both paths give up at the same moment
# How long an answer that is complete ([DONE] read) waits for the end of its response body.
_DRAIN_S = 1.0
# The C scanner behind `json.loads`, called directly on an event's payload: `loads` detects the
# encoding of bytes and matches whitespace on both sides, which cost more than the scan itself.
_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
# Phrases providers use for a prompt longer than the window (OpenAI, Azure, vLLM, llama.cpp).
_OVERFLOW = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "exceeds the available context",
    "too many tokens",
)


class OpenAICompatBackend:
    """One pooled aiohttp session per event loop; streamed SSE parsed directly."""

    name = "openai_compat"

    def __init__(
        self, model_info: Callable[[str], Any] | None = None, *, trust_env: bool | None = None
    ) -> None:
        """`model_info(model)` gives prices (a ModelInfo or a mapping); by default the built-in
        registry merged over litellm's model map. Called once per model. `trust_env`: honour
        HTTP(S)_PROXY (default: when one is set); False for a server on loopback."""
        self._model_info = model_info
        self._trust_env = trust_env
        self._prices: dict[str, tuple[float, float, float]] = {}
        self._sessions: dict[asyncio.AbstractEventLoop, tuple[Any, Any]] = {}

    # ------------------------------------------------------------------ pool
    async def _session(self) -> Any:
        loop = asyncio.get_running_loop()
        pooled = self._sessions.get(loop)
        if pooled is not None and not pooled[0].closed:
            return pooled[0]
        import aiohttp

        for old in [lp for lp in self._sessions if lp.is_closed()]:
            self._sessions.pop(old)[0].detach()  # its loop is gone: nothing left to await
        proxied = self._trust_env
        if proxied is None:
            proxied = any(
                os.environ.get(k)
                for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
            )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            trust_env=proxied,  # honour proxy variables as httpx does, at no cost otherwise
            read_bufsize=2**20,  # buffered before aiohttp pauses the socket (long answers)
        )
        # A started async generator whose `finally` closes the session: loops that shut down
        # their async generators (asyncio.run does) close the pool with them, so standalone
        # use needs no aclose(). Held here, since the loop keeps only a weak reference.
        closer = _close_on_shutdown(session)
        await closer.__anext__()
        self._sessions[loop] = (session, closer)
        return session

    async def aclose(self) -> None:
        """Close the session of the running loop (call it on the loop that used the backend)."""
        pooled = self._sessions.pop(asyncio.get_running_loop(), None)
        if pooled is not None:
            await pooled[1].aclose()

    # ------------------------------------------------------------- a request
    def _target(self, request: Request) -> tuple[str, dict[str, str], str]:
        """(url, headers, key) for the request; the key is only ever put in a header."""
        t = request.transport
        provider, _, wire_model = request.model.partition("/")
        if not wire_model:
            provider, wire_model = "openai", request.model
        base = t.get("api_base") or t.get("base_url")
        for env in _BASE_ENV.get(provider, ()):
            base = base or os.environ.get(env)
        key = t.get("api_key") or os.environ.get(_KEY_ENV.get(provider, ""), "") or ""
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        headers.update(t.get("extra_headers") or {})
        if provider == "azure":
            if not base:
                raise ConfigError(
                    f"{request.model}: Azure needs its endpoint; set `api_base` for this model "
                    "in labkit.yaml or the AZURE_API_BASE environment variable"
                )
            version = t.get("api_version") or os.environ.get("AZURE_API_VERSION")
            url = (
                f"{base.rstrip('/')}/openai/deployments/{wire_model}/chat/completions"
                f"?api-version={version or _AZURE_API_VERSION}"
            )
            if key:
                headers["api-key"] = key
            return url, headers, key
        if not key and not base:
            raise AuthError(
                "no API key: set the environment variable named by `api_key_env` for this "
                f"model (default {_KEY_ENV.get(provider, 'OPENAI_API_KEY')})",
                model=request.model,
                status=401,
            )
        if key:
            headers["authorization"] = f"Bearer {key}"
        return f"{(base or _OPENAI_BASE).rstrip('/')}/chat/completions", headers, key

    def _body(self, request: Request) -> bytes:
        wire_model = request.model.partition("/")[2] or request.model
        body: dict[str, Any] = {
            "model": wire_model,
            "messages": request.messages,
            **request.params,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if (fmt := response_format(request)) is not None:
            body["response_format"] = fmt
        return json.dumps(body).encode()

    async def generate(self, request: Request) -> Completion:
        import aiohttp

        url, headers, key = self._target(request)
        data = self._body(request)
        timeout = float(request.transport.get("timeout") or _DEFAULT_TIMEOUT)
        session = await self._session()
        start = time.perf_counter()
        try:
            async with await _post(session, url, data, headers, timeout) as resp:
                if resp.status >= 400:
                    raise _http_error(
                        request.model, resp.status, resp.headers, await resp.read(), key
                    )
                if "json" in (resp.content_type or ""):  # a server that ignored stream=True
                    state = _Stream.whole(json.loads(await resp.read()))
                    ttft = None
                else:
                    state = _Stream()
                    ttft = await state.read(resp.content, start)
                    try:
                        await _drain(resp.content)
                    except aiohttp.ClientPayloadError as exc:
                        if state.error is None:  # after an error event, that is the answer
                            raise ProviderUnavailable(
                                "the server cut the response short after [DONE] "
                                f"({_scrub(str(exc), key)[:120]}); llama.cpp's server does so "
                                "when a new request interrupts one in flight: start it with "
                                "--interrupt_requests False, or run at concurrency 1",
                                model=request.model,
                                raw=type(exc).__name__,
                            ) from None
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise ProviderTimeout(
                f"no complete answer within {timeout:g}s (timeout=)",
                model=request.model,
                raw=type(exc).__name__,
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable(
                f"connection failed: {_scrub(str(exc) or type(exc).__name__, key)[:300]}",
                model=request.model,
                raw=type(exc).__name__,
            ) from None
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ProviderUnavailable(
                f"malformed response body: {_scrub(str(exc), key)[:300]}",
                model=request.model,
                raw=type(exc).__name__,
            ) from None
        latency = time.perf_counter() - start
        if state.error is not None:
            raise _body_error(request.model, state.error, key)
        if state.created is None:
            raise ProviderUnavailable(
                "malformed or empty response: the stream carried no chunks", model=request.model
            )
        if state.usage is None:
            from .litellm_backend import import_litellm, litellm_ready

            if not litellm_ready():
                # The first stream without usage (llama.cpp's server sends none) is counted by
                # litellm's tokenizer, and importing litellm takes seconds of CPU. Done off the
                # loop, so the other calls in flight are not frozen for it (nor their latency
                # charged with the wait): the loop's longest pause was 7.6 s, now 0.3 s.
                await asyncio.to_thread(import_litellm)
        try:
            usage = self._usage(request, state)
        except (ValueError, TypeError, AttributeError) as exc:  # e.g. "prompt_tokens": "many"
            raise ProviderUnavailable(
                f"malformed usage in the response: {_scrub(str(exc), key)[:300]}",
                model=request.model,
                raw=type(exc).__name__,
            ) from None
        return Completion(
            text=state.text,
            model=request.model,
            usage=usage,
            cost_usd=self._cost(request.model, usage),
            latency_s=latency,
            ttft_s=ttft if ttft is not None else latency,
            finish_reason=state.finish_reason,
            raw=state.response(usage),
        )

    def _usage(self, request: Request, state: _Stream) -> Usage:
        u = state.usage
        if u is None:  # the server did not report usage: count as litellm's chunk builder does
            from .litellm_backend import litellm_reply_token_count

            return Usage(
                prompt_tokens=self.count_tokens(request.model, request.messages) or 0,
                completion_tokens=litellm_reply_token_count(request.model, state.text) or 0,
            )
        details = u.get("prompt_tokens_details")
        if not isinstance(details, dict):  # a malformed breakdown is ignored, as litellm does
            details = {}
        return Usage(
            prompt_tokens=int(u.get("prompt_tokens") or 0),
            completion_tokens=int(u.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )

    def _cost(self, model: str, usage: Usage) -> float:
        prices = self._prices.get(model)
        if prices is None:
            prices = self._prices[model] = self._lookup_prices(model)
        per_in, per_out, per_cached = prices
        fresh = usage.prompt_tokens - usage.cached_tokens
        return fresh * per_in + usage.cached_tokens * per_cached + usage.completion_tokens * per_out

    def _lookup_prices(self, model: str) -> tuple[float, float, float]:
        if self._model_info is None:
            from ..models import Registry

            self._model_info = Registry().capabilities
        info = self._model_info(model)
        get = info.get if isinstance(info, dict) else lambda k: getattr(info, k, None)
        per_in = float(get("input_cost_per_token") or 0.0)
        per_out = float(get("output_cost_per_token") or 0.0)
        cached = get("cached_input_cost_per_token")
        return per_in, per_out, per_in if cached is None else float(cached)

    def count_tokens(self, model: str, messages: list[Message]) -> int | None:
        from .litellm_backend import litellm_token_count

        return litellm_token_count(model, messages)


async def _close_on_shutdown(session: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await session.close()


class _Stream:
    """The state of one streamed answer, filled line by line (choice 0 only, as litellm)."""

    __slots__ = ("created", "error", "finish_reason", "id", "model", "parts", "ttft", "usage")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.error: dict[str, Any] | None = None
        self.ttft: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @classmethod
    def whole(cls, body: dict[str, Any]) -> _Stream:
        state = cls()
        if "error" in body:
            state.error = body["error"]
            return state
        choice = body["choices"][0]
        state.parts.append(choice["message"].get("content") or "")
        state.finish_reason = choice.get("finish_reason")
        state.usage = body.get("usage")
        state.id, state.model, state.created = body.get("id"), body.get("model"), body["created"]
        return state

    async def read(self, content: Any, start: float) -> float | None:
        """Consume `data:` lines until [DONE]; returns the time to the first content.

        Reads whatever has arrived and splits it into lines here: one await per network read
        instead of one per line (two per event): ~0.06 ms of CPU less per call on the bench grid."""
        tail: list[bytes] = []  # a line not yet ended, in the pieces it arrived in
        async for data in content.iter_any():
            if b"\n" not in data:
                tail.append(data)
                continue
            if tail:
                tail.append(data)
                data = b"".join(tail)
                tail = []
            *lines, rest = data.split(b"\n")
            if rest:
                tail.append(rest)
            for line in lines:
                if line.startswith(b"data:") and self._event(line, start):
                    return self.ttft
        if tail:  # the stream ended without a final newline
            line = b"".join(tail)
            if line.startswith(b"data:"):
                self._event(line, start)
        return self.ttft

    def _event(self, line: bytes, start: float) -> bool:
        """Take one `data:` line (other lines are separators, comments, `event:`); True at the
        end of the answer ([DONE] or an error object)."""
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return True
        chunk = _json(payload)
        if "error" in chunk:
            self.error = chunk["error"]
            return True
        if self.created is None:
            self.id, self.model = chunk.get("id"), chunk.get("model")
            self.created = chunk.get("created") or int(time.time())
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                if self.ttft is None:
                    self.ttft = time.perf_counter() - start
                self.parts.append(piece)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return False

    def response(self, usage: Usage) -> dict[str, Any]:
        """The answer as a non-streamed chat.completion, like litellm's rebuilt response."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": self.finish_reason,
                    "message": {"role": "assistant", "content": self.text},
                }
            ],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            },
        }


async def _post(
    session: Any, url: str, data: bytes, headers: dict[str, str], timeout: float
) -> Any:
    """The response (its headers read) to the POST; sent once more, on another connection,
    when the connection it went out on was closed before any answer. Mostly that is a pooled
    connection the server had just closed (an idle keep-alive timing out as the request left;
    uvicorn closes one after 5 s), which never read the request. A server that dropped a
    request it had read gets what the policy's retry would send anyway, without the back-off.
    aiohttp resends only idempotent methods itself."""
    import aiohttp

    def send() -> Any:
        return session.post(
            url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    try:
        return await send()
    except aiohttp.ClientConnectorError:  # no connection at all: nothing stale to replace
        raise
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return await send()


async def _drain(content: Any) -> None:
    """Read the response body to its end after the answer is complete. The end of a chunked
    body often comes in a packet after `[DONE]`, and aiohttp closes a connection whose
    response was not read to its end instead of pooling it: `llama_cpp.server` took 5-8
    connections for 10 calls in a row instead of 1, the loopback server 134-186 for 2,000
    calls at concurrency 50 instead of 50 (`bench_transport`). On a real provider each new one
    is a TCP and TLS handshake.
    Bounded by `_DRAIN_S`: a server that keeps the stream open after `[DONE]` costs a new
    connection, never the answer. A body cut before its end raises, as on litellm's path:
    `llama_cpp.server` ends an answer another request interrupted with `[DONE]` and no
    content, then drops the connection; taken as it was, that was an empty "success"."""
    if content.at_eof():
        return
    try:
        async with asyncio.timeout(_DRAIN_S):
            while await content.readany():
                pass
    except TimeoutError:
        pass


def _json(payload: bytes) -> Any:
    """`json.loads(payload)` at half the cost for the usual event (UTF-8 JSON, nothing around
    it); anything else, a malformed payload included, is left to `loads` itself, so the value
    or the error is always the one `loads` gives."""
    try:
        text = payload.decode("utf-8", "surrogatepass")
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    return json.loads(payload)


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "[api key]") if key else text


def _http_error(model: str, status: int, headers: Any, body: bytes, key: str) -> ProviderError:
    """The labkit error for an HTTP error answer, as `LiteLLMBackend` maps the same answer."""
    from ..ratelimit import retry_after_from_headers

    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        err = None
    if not isinstance(err, dict):
        err = {"message": body.decode("utf-8", "replace")[:500] or f"HTTP {status}"}
    message = _scrub(str(err.get("message") or f"HTTP {status}"), key).splitlines()[0][:500]
    kw: dict[str, Any] = {"model": model, "status": status, "raw": f"HTTP {status}"}
    code = str(err.get("code") or err.get("type") or "")
    if status in (400, 413, 422) and _overflow(code, message):
        return BadRequest(f"context window exceeded: {message}", **kw)
    if status == 429:
        return RateLimited(message, retry_after=retry_after_from_headers(headers), **kw)
    if status == 408:
        return ProviderTimeout(message, **kw)
    if status in (401, 403):
        return AuthError(f"{message}. Check the API key environment variable for this model.", **kw)
    if status in (400, 404, 422):
        return BadRequest(message, **kw)
    return ProviderUnavailable(message, **kw)  # 5xx and anything unexpected: worth another try


def _body_error(model: str, err: Any, key: str) -> ProviderError:
    """An error object inside a 200 stream (vLLM, OpenRouter): mapped by its code if numeric."""
    err = err if isinstance(err, dict) else {"message": str(err)}
    code = err.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return _http_error(model, status, {}, json.dumps({"error": err}).encode(), key)


def _overflow(code: str, message: str) -> bool:
    text = f"{code} {message}".lower()
    return any(phrase in text for phrase in _OVERFLOW)
