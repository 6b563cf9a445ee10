"""Fakes for testing prompts and code offline, shipped with the package so users can use them too.

- `FakeBackend`: a scripted backend (canned strings, exceptions or callables) with a `history`.
  Register it on a client: `client.add_backend("fake", FakeBackend([...]))`, then call
  `model="fake/anything"`.
- `FakeOpenAIServer`: a real HTTP server on loopback speaking the OpenAI chat-completions
  protocol (streaming and not, usage with cached tokens), with scripted latency and faults
  (429 with Retry-After, 5xx, timeouts, malformed bodies). Point litellm at it with
  `model="openai/<name>", api_base=server.url, api_key="sk-fake"`. It binds 127.0.0.1 only and
  shuts itself down after `max_lifetime` seconds, so a forgotten server never outlives a test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import ProviderError
from .types import Completion, Message, Request, Usage

__all__ = ["FakeBackend", "FakeOpenAIServer", "Fault", "provider_error"]

Output = str | Completion | BaseException | Callable[[Request], "str | Completion"]


class FakeBackend:
    """Scripted backend: outputs are used in order (the last one repeats when `cycle=False`)."""

    name = "fake"

    def __init__(
        self,
        outputs: Output | Sequence[Output] = "ok",
        *,
        latency: float = 0.0,
        cycle: bool = False,
    ) -> None:
        self.outputs: list[Output] = (
            list(outputs) if isinstance(outputs, list | tuple) else [outputs]  # type: ignore[list-item]
        )
        self.latency = latency
        self.cycle = cycle
        self.history: list[Request] = []

    async def generate(self, request: Request) -> Completion:
        n = len(self.history)
        self.history.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.cycle:
            out = self.outputs[n % len(self.outputs)]
        else:
            out = self.outputs[min(n, len(self.outputs) - 1)]
        if callable(out) and not isinstance(out, BaseException):
            out = out(request)
        if isinstance(out, BaseException):
            raise out
        if isinstance(out, Completion):
            return out.model_copy(update={"model": request.model})
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in request.messages)
        return Completion(
            text=out,
            model=request.model,
            usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(out.split())),
            latency_s=self.latency,
            ttft_s=self.latency,
            finish_reason="stop",
            raw={"fake": True, "index": n},
        )

    def count_tokens(self, model: str, messages: list[Message]) -> int | None:
        return sum(len(str(m.get("content", "")).split()) for m in messages)

    @property
    def prompts(self) -> list[str]:
        """The last user message of every request, for asserting what reached the model."""
        return [str(r.messages[-1].get("content", "")) for r in self.history]


@dataclass
class Fault:
    """One scripted failure: status 429/5xx/4xx, or kind "timeout" / "malformed".

    `message` replaces the error body's message; `{api_key}` in it is filled with the key the
    request was sent with (providers and proxies that echo it, e.g. "Incorrect API key
    provided: {api_key}")."""

    status: int = 500
    retry_after: float | None = None
    kind: str = "status"  # status | timeout | malformed | drop
    delay: float = 0.0
    message: str | None = None
    """The error body's message (default "scripted <status>")."""
    code: str | None = None
    """The error body's code, e.g. "context_length_exceeded" for a prompt over the window."""


class FakeOpenAIServer:
    """Loopback OpenAI-compatible server for tests and benchmarks; see the module docstring.

    `reply`: a string, a list of strings used in turn, or a callable(body) -> str.
    `faults`: Faults for the first requests, in order (None = no fault for that request).
    `fault_rates`: {"429": p, "500": p, "timeout": p, "malformed": p} drawn per request.
    `usage=False`: a stream carries no usage chunk even when asked, as llama-cpp-python's server
    does (clients then count the tokens themselves).
    """

    def __init__(
        self,
        reply: str
        | Sequence[str]
        | Callable[[dict[str, Any]], str] = "Hello from the fake server.",
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        cached_tokens: int = 0,
        usage: bool = True,
        faults: Sequence[Fault | None] = (),
        fault_rates: dict[str, float] | None = None,
        retry_after: tuple[float, float] = (0.05, 0.2),
        timeout_delay: float = 3.0,
        seed: int = 0,
        max_lifetime: float = 600.0,
        port: int = 0,
    ) -> None:
        self.reply = reply
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.cached_tokens = cached_tokens
        self.usage = usage
        self.faults = list(faults)
        self.fault_rates = dict(fault_rates or {})
        self.retry_after = retry_after
        self.timeout_delay = timeout_delay
        self.max_lifetime = max_lifetime
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        """Request headers, lower-cased, in arrival order (to check how a key was sent)."""
        self.responses: list[int] = []
        self._open: set[socket.socket] = set()
        self._server = _QuietServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # --------------------------------------------------------------- control
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def count(self) -> int:
        return len(self.requests)

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="fake-openai"
        )
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        # Kept-alive connections would go on answering a stopped server's pooled clients.
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- behaviour
    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Fault | None, str]:
        with self._lock:
            n = len(self.requests)
            self.requests.append(body)
            self.headers.append(headers)
            fault = self.faults[n] if n < len(self.faults) else None
            if fault is None and self.fault_rates:
                u, acc = self._rng.random(), 0.0
                for name, p in self.fault_rates.items():
                    acc += p
                    if u < acc:
                        fault = _named_fault(name, self._rng.uniform(*self.retry_after))
                        break
        if callable(self.reply):
            text = self.reply(body)
        elif isinstance(self.reply, str):
            text = self.reply
        else:
            text = self.reply[n % len(self.reply)]
        return n, fault, text

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # A kept-alive stream's small writes would otherwise wait on the client's delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                return

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._open.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._open.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                else:
                    self._json(
                        404, {"error": {"message": "not found", "type": "invalid_request_error"}}
                    )

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._json(
                        400,
                        {
                            "error": {
                                "message": "invalid JSON body",
                                "type": "invalid_request_error",
                            }
                        },
                    )
                    return
                if not self.path.split("?")[0].rstrip("/").endswith("chat/completions"):
                    self._json(
                        404,
                        {
                            "error": {
                                "message": f"no route {self.path}",
                                "type": "invalid_request_error",
                            }
                        },
                    )
                    return
                sent = {k.lower(): v for k, v in self.headers.items()}
                _, fault, text = server._next(body, sent)
                if fault is not None and fault.delay:
                    time.sleep(fault.delay)
                if fault is not None and fault.kind == "timeout":
                    time.sleep(server.timeout_delay)
                    fault = _named_fault("500", 0)
                if fault is not None and fault.kind == "status":
                    headers = {}
                    if fault.retry_after is not None:
                        headers["retry-after"] = f"{fault.retry_after:.3f}"
                        headers["retry-after-ms"] = str(int(fault.retry_after * 1000))
                    kind = "rate_limit_error" if fault.status == 429 else "server_error"
                    message = f"scripted {fault.status}"
                    if fault.message is not None:
                        auth = self.headers.get("authorization") or ""
                        message = fault.message.replace("{api_key}", auth.split(" ", 1)[-1])
                    error = {"message": message, "type": kind}
                    if fault.code is not None:
                        error.update(type="invalid_request_error", code=fault.code)
                    self._json(fault.status, {"error": error}, headers)
                    return
                if server.latency:
                    time.sleep(server.latency)
                if fault is not None and fault.kind == "malformed":
                    if body.get("stream"):
                        self._raw(
                            200,
                            b'data: {"id": "broken", "choices": [ {"delta": \n\n',
                            "text/event-stream",
                        )
                    else:
                        self._raw(
                            200, b'{"id": "broken", "choices": [ {"message": ', "application/json"
                        )
                    return
                if body.get("stream"):
                    self._stream(body, text)
                else:
                    self._json(200, server._completion(body, text))

            def _json(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                self._raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _raw(
                self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None
            ) -> None:
                with server._lock:
                    server.responses.append(status)
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any], text: str) -> None:
                with server._lock:
                    server.responses.append(200)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                # Chunked, as real servers stream, so the connection stays open for the next
                # request; closing it after every answer made each call pay a new TCP connect.
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                cid, model, created = (
                    f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    body.get("model", "fake"),
                    int(time.time()),
                )
                pieces = _split(text)
                try:
                    for i, piece in enumerate(pieces):
                        delta: dict[str, Any] = {"content": piece}
                        if i == 0:
                            delta["role"] = "assistant"
                        self._event(
                            {
                                "id": cid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                            }
                        )
                        if server.chunk_delay:
                            time.sleep(server.chunk_delay)
                    self._event(
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        }
                    )
                    if server.usage and (body.get("stream_options") or {}).get("include_usage"):
                        self._event(
                            {
                                "id": cid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": server._usage(body, text),
                            }
                        )
                    self._chunk(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _event(self, payload: dict[str, Any]) -> None:
                self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        return Handler

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        prompt = sum(len(str(m.get("content", "")).split()) + 4 for m in body.get("messages", []))
        completion = max(1, len(text.split()))
        cached = min(self.cached_tokens, prompt)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def _completion(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(body, text),
        }


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up (timeout tests) closes its socket; that is expected, not an error."""

    # A grid at concurrency 200 opens 200 connections at once; the default backlog of 5
    # drops SYNs, and each drop costs the client a 1 s retransmit.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _named_fault(name: str, retry_after: float) -> Fault:
    if name == "timeout":
        return Fault(kind="timeout")
    if name == "malformed":
        return Fault(kind="malformed")
    status = int(name)
    return Fault(status=status, retry_after=retry_after if status == 429 else None)


def _split(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] or [""]


def provider_error(status: int = 500, retry_after: float | None = None) -> ProviderError:
    """A labkit provider error as a backend would raise it, for scripting FakeBackend failures."""
    from .errors import AuthError, BadRequest, ProviderUnavailable, RateLimited

    if status == 429:
        return RateLimited("scripted 429", status=429, retry_after=retry_after)
    if status in (401, 403):
        return AuthError("scripted auth error", status=status)
    if 400 <= status < 500:
        return BadRequest("scripted bad request", status=status)
    return ProviderUnavailable(f"scripted {status}", status=status)
