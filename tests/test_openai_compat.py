"""The lean OpenAI-compatible transport, against the loopback server, beside real litellm.

Parity: the same request on the same server, once through `OpenAICompatBackend` and once
through `LiteLLMBackend`, gives the same Completion fields and the same error types.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from ports import free_port, wait_http

from labkit.backends.litellm_backend import LiteLLMBackend
from labkit.backends.openai_compat import OpenAICompatBackend
from labkit.client import Client
from labkit.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from labkit.models import Registry
from labkit.testing import FakeOpenAIServer, Fault
from labkit.types import Completion, Request

MODEL = "openai/gpt-4o-mini-2024-07-18"
KEY = "sk-test-0123456789abcdefghijklmnop"
MESSAGES = [{"role": "user", "content": "Capital of France, in one short sentence?"}]


def _request(server: FakeOpenAIServer, **kw: Any) -> Request:
    transport = {"api_base": server.url, "api_key": KEY, **kw.pop("transport", {})}
    return Request(
        model=kw.pop("model", MODEL), messages=MESSAGES, transport=transport, **kw
    )  # fmt: skip


def _both(request: Request) -> list[Completion | BaseException]:
    """The request through the lean backend, then through litellm, each on a fresh loop."""

    async def run(backend: Any) -> Completion | BaseException:
        try:
            return await backend.generate(request)  # type: ignore[no-any-return]
        except ProviderError as exc:
            return exc
        finally:
            if hasattr(backend, "aclose"):
                await backend.aclose()

    return [asyncio.run(run(OpenAICompatBackend())), asyncio.run(run(LiteLLMBackend()))]


def _fields(done: Completion) -> dict[str, Any]:
    choice = done.raw["choices"][0]
    return {
        "text": done.text,
        "model": done.model,
        "usage": done.usage.model_dump(),
        "finish_reason": done.finish_reason,
        "raw_content": choice["message"]["content"],
        "raw_finish": choice["finish_reason"],
        "raw_usage": {k: done.raw["usage"][k] for k in ("prompt_tokens", "completion_tokens")},
        # litellm leaves the details out (None) when the stream reported no usage
        "raw_cached": (done.raw["usage"]["prompt_tokens_details"] or {}).get("cached_tokens", 0),
    }


def test_streamed_answer_usage_cached_tokens_cost_and_ttft_match_litellm() -> None:
    reply = "Paris is the capital of France."
    with FakeOpenAIServer(reply=reply, cached_tokens=4, chunk_delay=0.01, max_lifetime=60) as s:
        lean, lite = _both(_request(s, params={"temperature": 0, "seed": 7, "max_tokens": 20}))
        lean_body, lite_body = s.requests
        lean_headers = s.headers[0]
    assert isinstance(lean, Completion) and isinstance(lite, Completion), (lean, lite)
    assert _fields(lean) == _fields(lite)
    assert lean.text == reply and lean.usage.cached_tokens == 4 and lean.usage.prompt_tokens > 4
    assert lean.cost_usd > 0 and math.isclose(lean.cost_usd, lite.cost_usd, rel_tol=1e-9)
    for done in (lean, lite):  # the first word arrives before the last (6 chunks, 10 ms apart)
        assert done.ttft_s is not None and 0 < done.ttft_s < done.latency_s
    # The same wire request: model name, messages, output params, streamed with usage.
    for key in ("model", "messages", "temperature", "seed", "max_tokens", "stream"):
        assert lean_body[key] == lite_body[key], key
    assert lean_body["stream_options"] == {"include_usage": True}
    assert lean_headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(lean_body)


def test_a_stream_without_usage_is_counted_as_litellm_counts_it() -> None:
    """llama-cpp-python's server streams no usage chunk even when asked: both paths then count
    the prompt as messages and the reply as bare text (no message framing on the reply)."""
    reply = "Hello, welcome to my little corner of the world."
    with FakeOpenAIServer(reply=reply, usage=False, max_lifetime=60) as s:
        lean, lite = _both(_request(s, params={"temperature": 0}))
    assert isinstance(lean, Completion) and isinstance(lite, Completion), (lean, lite)
    assert _fields(lean) == _fields(lite)
    assert 0 < lean.usage.completion_tokens <= len(reply.split()) + 2  # the text, no framing
    assert lean.usage.prompt_tokens > 0 and lean.usage.cached_tokens == 0


@pytest.mark.parametrize("with_schema", [True, False], ids=["json_schema", "json_object"])
def test_json_mode_sends_the_same_response_format(with_schema: bool) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    with FakeOpenAIServer(reply='{"city": "Paris"}', max_lifetime=60) as s:
        request = _request(s, json_mode=True, json_schema=schema if with_schema else None)
        lean, lite = _both(request)
        lean_body, lite_body = s.requests
    assert isinstance(lean, Completion) and isinstance(lite, Completion)
    assert _fields(lean) == _fields(lite)
    expected = (
        {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
        if with_schema
        else {"type": "json_object"}
    )
    assert lean_body["response_format"] == expected
    assert lite_body["response_format"]["type"] == expected["type"]
    if with_schema:
        assert lite_body["response_format"]["json_schema"]["schema"] == schema


OVERFLOW = Fault(
    400,
    code="context_length_exceeded",
    message="This model's maximum context length is 128000 tokens. However, your messages "
    "resulted in 130512 tokens. Please reduce the length of the messages.",
)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(429, retry_after=0.25), RateLimited),
        (Fault(500), ProviderUnavailable),
        (Fault(503), ProviderUnavailable),
        (Fault(kind="timeout"), ProviderTimeout),
        (Fault(kind="malformed"), ProviderUnavailable),
        (Fault(401), AuthError),
        (Fault(400), BadRequest),
        (OVERFLOW, BadRequest),
    ],
    ids=["429", "500", "503", "timeout", "malformed", "401", "400", "context-overflow"],
)
def test_each_fault_maps_to_the_same_error_type(fault: Fault, error: type) -> None:
    # Only the timeout fault needs a short deadline; a quick answer gets a long one, so a pause
    # of this big test process (a full garbage collection takes ~0.5 s) cannot turn it into one.
    deadline = 0.4 if fault.kind == "timeout" else 10.0
    with FakeOpenAIServer(faults=[fault, fault], timeout_delay=1.5, max_lifetime=60) as s:
        lean, lite = _both(_request(s, transport={"timeout": deadline}))
    assert type(lean) is error and type(lite) is error, (lean, lite)
    assert isinstance(lean, ProviderError) and isinstance(lite, ProviderError)
    assert lean.retryable == lite.retryable and lean.model == lite.model == MODEL
    if fault.kind == "status":
        assert lean.status == lite.status == fault.status
    if fault.retry_after is not None:
        assert lean.retry_after == lite.retry_after == pytest.approx(0.25)
    if fault is OVERFLOW:
        assert "context window exceeded" in str(lean) and "context window exceeded" in str(lite)


def test_api_key_never_reaches_an_exception_or_a_trace(tmp_path: Path) -> None:
    # A provider that echoes the key in its error body (OpenAI does, partly masked).
    echo = Fault(401, message=f"Incorrect API key provided: {KEY}.")
    with FakeOpenAIServer(faults=[echo, echo], max_lifetime=60) as s:
        with pytest.raises(AuthError) as err:
            asyncio.run(OpenAICompatBackend().generate(_request(s)))
        assert KEY not in str(err.value) and KEY not in repr(err.value.raw)
        assert err.value.__cause__ is None and "[api key]" in str(err.value)
        client = _client(tmp_path, s)
        with pytest.raises(AuthError) as err2:
            client.generate("hi", model=MODEL)
        assert KEY not in str(err2.value)
        rows = client.traces()
        assert not rows.astype(str).apply(lambda col: col.str.contains(KEY)).any().any()
        assert s.headers[-1]["authorization"] == f"Bearer {KEY}"
        client.close()


def test_a_missing_key_for_openai_is_an_auth_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    request = Request(model=MODEL, messages=MESSAGES)
    with pytest.raises(AuthError, match="api_key_env"):
        asyncio.run(OpenAICompatBackend().generate(request))


def test_azure_deployment_url_and_api_key_header() -> None:
    with FakeOpenAIServer(reply="hello from azure", max_lifetime=60) as s:
        base = s.url.removesuffix("/v1")
        request = Request(
            model="azure/my-gpt4o-deployment",
            messages=MESSAGES,
            transport={"api_base": base, "api_key": KEY, "api_version": "2024-10-21"},
        )
        done = asyncio.run(_once(request))
        assert done.text == "hello from azure"
        assert s.headers[0]["api-key"] == KEY and "authorization" not in s.headers[0]
        assert s.requests[0]["model"] == "my-gpt4o-deployment"
    with pytest.raises(ConfigError, match="AZURE_API_BASE"):
        asyncio.run(_once(Request(model="azure/x", messages=MESSAGES, transport={"api_key": KEY})))


async def _once(request: Request) -> Completion:
    backend = OpenAICompatBackend()
    try:
        return await backend.generate(request)
    finally:
        await backend.aclose()


def test_cost_is_tokens_times_the_registry_price() -> None:
    prices = {
        "input_cost_per_token": 2e-6,
        "output_cost_per_token": 8e-6,
        "cached_input_cost_per_token": 5e-7,
    }
    seen: list[str] = []

    def info(model: str) -> dict[str, float]:
        seen.append(model)
        return prices

    with FakeOpenAIServer(reply="one two three", cached_tokens=3, max_lifetime=60) as s:
        backend = OpenAICompatBackend(info)

        async def twice() -> list[Completion]:
            out = [await backend.generate(_request(s)) for _ in range(2)]
            await backend.aclose()
            return out

        done = asyncio.run(twice())[1]
    u = done.usage
    expected = (u.prompt_tokens - 3) * 2e-6 + 3 * 5e-7 + u.completion_tokens * 8e-6
    assert u.cached_tokens == 3 and done.cost_usd == pytest.approx(expected)
    assert seen == [MODEL]  # model facts looked up once per model, not per call


def test_one_pool_per_event_loop_closed_by_client_close(tmp_path: Path) -> None:
    with FakeOpenAIServer(reply="pooled", max_lifetime=60) as s:
        backend = OpenAICompatBackend()
        sessions = []

        async def call() -> None:
            await backend.generate(_request(s))
            await backend.generate(_request(s))
            sessions.append(await backend._session())

        asyncio.run(call())
        assert sessions[0].closed  # closed with its loop: asyncio.run shuts async gens down
        asyncio.run(call())  # a new loop gets its own session; the dead loop's one is dropped
        assert sessions[0] is not sessions[1] and sessions[1].closed
        assert [v[0] for v in backend._sessions.values()] == [sessions[1]]

        client = _client(tmp_path, s)
        client.generate("one", model=MODEL)
        client.generate("two", model=MODEL)
        lean = client.backend_for(MODEL)
        assert isinstance(lean, OpenAICompatBackend) and len(lean._sessions) == 1
        ((session, _),) = lean._sessions.values()
        client.close()
        assert session.closed and not lean._sessions


def _client(tmp_path: Path, server: FakeOpenAIServer, **model: Any) -> Client:
    reg = Registry(
        models={MODEL: {"api_base": server.url, "api_key_env": "LABKIT_TEST_KEY", **model}},
        policy={"retry": {"max_attempts": 1}},
    )
    import os

    os.environ["LABKIT_TEST_KEY"] = KEY
    return Client(registry=reg, cache_dir=tmp_path / "c", traces=tmp_path / "t.db")


def test_client_paths_agree_through_cache_parse_and_traces(tmp_path: Path) -> None:
    reply = '{"sentiment": "positive", "sentiment_confidence": 0.9}'
    schema = {"sentiment": ["positive", "negative"]}
    out = {}
    with FakeOpenAIServer(reply=reply, cached_tokens=2, max_lifetime=60) as s:
        for transport in ("auto", "litellm"):
            client = _client(tmp_path / transport, s, transport=transport)
            kind = type(client.backend_for(MODEL)).__name__
            done = client.generate("Loved it.", model=MODEL, schema=schema, temperature=0)
            again = client.generate("Loved it.", model=MODEL, schema=schema, temperature=0)
            row = client.traces(kind="attempt").iloc[0]
            out[kind] = (done, again, row)
            client.close()
    (lean, lean_hit, lean_row), (lite, _, lite_row) = (
        out["OpenAICompatBackend"],
        out["LiteLLMBackend"],
    )
    assert lean.parsed.value == lite.parsed.value == {"sentiment": "positive"}
    assert lean.cache_key == lite.cache_key and lean_hit.cache_hit
    assert lean.usage == lite.usage and lean.cost_usd == pytest.approx(lite.cost_usd)
    for col in ("status", "prompt_tokens", "completion_tokens", "cached_tokens", "parse_ok"):
        assert lean_row[col] == lite_row[col], col


@pytest.mark.parametrize(
    ("model", "fields", "backend"),
    [
        (MODEL, {}, "openai_compat"),
        ("azure/my-deployment", {}, "openai_compat"),
        (MODEL, {"transport": "litellm"}, "litellm"),
        ("hosted_vllm/llama-3-8b", {"api_base": "http://127.0.0.1:9/v1"}, "openai_compat"),
        ("myserver/llama-3-8b", {"api_base": "http://127.0.0.1:9/v1"}, "openai_compat"),
        ("hosted_vllm/llama-3-8b", {}, "litellm"),
        ("anthropic/claude-3-5-sonnet-20241022", {"api_base": "http://x/v1"}, "litellm"),
        ("mistral/mistral-large-2411", {"transport": "openai_compat"}, "openai_compat"),
        ("local/smollm2-135m", {}, "local"),
    ],
)
def test_backend_choice(model: str, fields: dict[str, Any], backend: str) -> None:
    assert Registry(models={model: fields}).info(model).backend == backend


def test_transport_setting_in_labkit_yaml(tmp_path: Path) -> None:
    path = tmp_path / "labkit.yaml"
    path.write_text(f"models:\n  {MODEL}: {{transport: litellm}}\n")
    client = Client(registry=path, cache_dir=None, traces=tmp_path / "t.db")
    assert isinstance(client.backend_for(MODEL), LiteLLMBackend)
    client.close()
    path.write_text(f"models:\n  {MODEL}: {{transport: grpc}}\n")
    with pytest.raises(ConfigError, match="transport"):
        Registry.load(path)


def test_a_schema_edited_in_place_is_not_served_from_the_memo(tmp_client: Client) -> None:
    schema: dict[str, Any] = {"sentiment": ["positive", "negative"]}
    first = tmp_client.prepare("Loved it.", model="fake/x", schema=schema)
    again = tmp_client.prepare("Loved it.", model="fake/x", schema=schema)
    assert again.messages == first.messages and again.key == first.key
    schema["sentiment"].append("neutral")
    edited = tmp_client.prepare("Loved it.", model="fake/x", schema=schema)
    assert "neutral" in edited.messages[-1]["content"] and edited.key != first.key
    assert "neutral" in str(edited.json_schema)


def test_a_script_that_never_closes_its_client_exits_without_unclosed_warnings(
    tmp_path: Path,
) -> None:
    """The default client is never closed by hand: its pooled session must close at exit."""
    import subprocess
    import sys

    with FakeOpenAIServer(reply="ok") as server:
        script = f"""
import os, labkit
from labkit.models import Registry
os.environ["LABKIT_TEST_KEY"] = "k"
reg = Registry(models={{"{MODEL}": {{"api_base": "{server.url}", "api_key_env": "LABKIT_TEST_KEY"}}}})
labkit.configure(registry=reg, cache_dir={str(tmp_path / "c")!r}, traces={str(tmp_path / "t.db")!r})
print(labkit.generate("hi", model="{MODEL}").text)
"""
        done = subprocess.run(
            [sys.executable, "-X", "dev", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "Unclosed" not in done.stderr and "unclosed" not in done.stderr, done.stderr


def _python(script: str, cwd: Path) -> str:
    """Run `script` in a fresh interpreter (this session has imported litellm long ago)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_openai_and_azure_facts_come_from_litellms_map_without_importing_litellm(
    tmp_path: Path,
) -> None:
    """Every OpenAI and Azure model of litellm's map: the facts read from its JSON before
    litellm is imported equal `litellm.get_model_info`'s, wherever litellm can map the id."""
    script = """
import json, sys
from labkit.backends.litellm_backend import import_litellm, litellm_model_info, model_map
ids = sorted(
    key if key.startswith(e["litellm_provider"] + "/") else f"{e['litellm_provider']}/{key}"
    for key, e in model_map().items() if e.get("litellm_provider") in ("openai", "azure")
)
fast = {m: litellm_model_info(m) for m in ids}
imported = "litellm" in sys.modules
import_litellm()
slow = {m: litellm_model_info(m) for m in ids}
print(json.dumps({"imported": imported, "ids": ids, "fast": fast, "slow": slow}))
"""
    out = json.loads(_python(script, tmp_path))
    assert out["imported"] is False
    ids, fast, slow = out["ids"], out["fast"], out["slow"]
    assert len(ids) > 300 and "openai/gpt-4o-mini-2024-07-18" in ids
    assert fast["openai/gpt-4o-mini-2024-07-18"]["context_window"] == 128000
    mapped = [m for m in ids if slow[m]]
    assert len(mapped) >= len(ids) - 5  # litellm reads a few azure ids as another provider's
    assert [m for m in mapped if fast[m] != slow[m]] == []


def test_a_grid_on_an_openai_compatible_server_never_imports_litellm(
    tmp_path: Path, fake_server: FakeOpenAIServer
) -> None:
    """The lean transport's path needs nothing from litellm but its map: the grid's first
    calls do not wait for litellm's import (seconds of CPU on the loop)."""
    script = f"""
import os, sys
from labkit import Client, Experiment
from labkit.models import Registry
os.environ["LABKIT_TEST_KEY"] = "k"
reg = Registry(models={{"{MODEL}": {{"api_base": "{fake_server.url}", "api_key_env": "LABKIT_TEST_KEY"}}}})
client = Client(registry=reg, cache_dir="c", traces="t.db")
rows = [{{"id": str(i), "text": f"item {{i}}"}} for i in range(6)]
res = Experiment(rows, {{"p": "Say {{{{text}}}}"}}, ["{MODEL}"], client=client).run(progress=False)
client.close()
print(len(res), int(res.df["error"].isna().sum()), float(res.df["cost_usd"].sum()) > 0)
print("litellm" in sys.modules)
"""
    lines = _python(script, tmp_path).split("\n")
    assert lines[0] == "6 6 True"  # every call answered, and priced from the map
    assert lines[1] == "False"


def test_a_stream_without_usage_imports_litellms_tokenizer_off_the_loop(
    tmp_path: Path,
) -> None:
    """The first answer without usage (llama.cpp's server sends none) is counted by litellm,
    whose import takes seconds of CPU: it runs in a worker thread, so the loop (and every other
    call in flight) is not frozen for it."""
    script = """
import asyncio, threading
from labkit.backends import litellm_backend
from labkit.backends.openai_compat import OpenAICompatBackend
from labkit.testing import FakeOpenAIServer
from labkit.types import Request

threads = []
real = litellm_backend.import_litellm
def spy():
    threads.append(threading.current_thread() is threading.main_thread())
    return real()
litellm_backend.import_litellm = spy

async def two(url):
    backend = OpenAICompatBackend()
    request = Request(model="openai/m", messages=[{"role": "user", "content": "Count me"}],
                      transport={"api_base": url, "api_key": "sk-x-0123456789"})
    out = [await backend.generate(request) for _ in range(2)]
    await backend.aclose()
    return out

with FakeOpenAIServer(reply="one two three", usage=False, max_lifetime=60) as s:
    done = asyncio.run(two(s.url))
print(threads[0], all(threads[1:]), [d.usage.completion_tokens > 0 for d in done])
"""
    out = _python(script, tmp_path).strip()
    # imported by a worker thread; later counts, on the loop, find it imported
    assert out == "False True [True, True]", out


def test_the_loopback_server_streams_chunked_on_a_kept_alive_connection() -> None:
    """As real servers do: a client reuses its connection for the next streamed request (a
    server that closed after every stream made each call pay a new TCP connect), and a stopped
    server closes the connections it kept, so pooled clients see it is gone."""
    import http.client

    body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode()
    with FakeOpenAIServer(reply="kept alive", max_lifetime=60) as s:
        conn = http.client.HTTPConnection(*s._server.server_address[:2], timeout=10)
        socks = []
        for _ in range(2):
            conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            assert resp.getheader("transfer-encoding") == "chunked"
            assert resp.read().endswith(b"data: [DONE]\n\n") and not resp.will_close
            socks.append(conn.sock)
        assert socks[0] is socks[1] and s.count == 2
        conn.close()

    server = FakeOpenAIServer(reply="then gone", max_lifetime=60).start()
    backend = OpenAICompatBackend()

    async def before_and_after_stop() -> tuple[Completion, BaseException]:
        first = await backend.generate(_request(server))
        server.stop()
        try:
            await backend.generate(_request(server))
        except ProviderError as exc:
            return first, exc
        finally:
            await backend.aclose()
        raise AssertionError("a stopped server answered")

    first, gone = asyncio.run(before_and_after_stop())
    assert first.text == "then gone" and isinstance(gone, ProviderUnavailable)


async def _read_request(reader: asyncio.StreamReader) -> None:
    """Read one HTTP request, head and body, from a test server's connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))


def _sse_body(newline: bytes) -> bytes:
    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk = {"id": "c1", "created": 1, "model": "m", "choices": [choice]}
        return b"data: " + json.dumps(chunk).encode() + newline + newline

    usage = {"prompt_tokens": 9, "completion_tokens": 3}
    return b"".join(
        [
            b": keep-alive" + newline + newline,
            event({"role": "assistant", "content": "Par"}),
            b"event: message" + newline,
            event({"content": "is, " * 300}),  # a line longer than most network reads
            event({"content": "done."}),
            event({}, "stop"),
            b"data: " + json.dumps({"id": "c1", "choices": [], "usage": usage}).encode(),
            newline + newline + b"data: [DONE]",  # no newline after the last line
        ]
    )


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("piece", [1, 7, 4096], ids=lambda n: f"{n}-byte-writes")
def test_sse_lines_cut_anywhere_by_the_network_are_read_whole(newline: bytes, piece: int) -> None:
    """The stream is read as it arrives and split into lines by the backend: a line cut
    across reads (even a byte at a time), several events in one read, CRLF endings, comments,
    `event:` lines and a last line without its newline give the same answer."""
    body = _sse_body(newline)

    async def scenario() -> Completion:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
            writer.write(b"connection: close\r\n\r\n")  # the body ends when the socket does
            for i in range(0, len(body), piece):
                writer.write(body[i : i + piece])
                await writer.drain()
                await asyncio.sleep(0)  # a separate read for the client, mostly
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        backend = OpenAICompatBackend(trust_env=False)
        transport = {"api_base": f"http://127.0.0.1:{port}/v1", "api_key": KEY}
        try:
            return await backend.generate(
                Request(model=MODEL, messages=MESSAGES, transport=transport)
            )
        finally:
            await backend.aclose()
            server.close()

    done = asyncio.run(scenario())
    assert done.text == "Par" + "is, " * 300 + "done."
    assert done.finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (9, 3)
    assert done.raw["id"] == "c1" and done.ttft_s is not None


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Par\\u00e9 \xc3\xa9"}}]}',
        b'{"usage":{"prompt_tokens":9,"completion_tokens":3},"choices":[]}',
        b'[1, -0, 1e5, 12345678901234567890, true, null, "\\ud800"]',
        b'{"x": NaN, "y": -Infinity}',
        b'"just a string"',
        b"",
        b"{",
        b'{"a": 1} trailing',
        b'{"a": 1}{"b": 2}',
        b"[1,]",
        b"nan",
        b"{'a': 1}",
        b'{"a": "\xff"}',
        b"\xef\xbb\xbf{}",
    ],
)
def test_event_payloads_decode_as_json_loads_decodes_them(payload: bytes) -> None:
    """Events are decoded by the JSON scanner directly (`_json`, twice as fast as `loads`):
    the same values, and a ValueError wherever `json.loads` raises one."""
    from labkit.backends.openai_compat import _json

    def outcome(decode: Any) -> Any:
        try:
            return ("value", repr(decode(payload)))  # repr: NaN equals itself
        except ValueError:
            return ("ValueError", None)

    assert outcome(_json) == outcome(json.loads)


@pytest.mark.local_model
def test_a_plain_llama_cpp_server_gives_both_paths_the_same_answer(tmp_path: Path) -> None:
    """The real llama-cpp-python server as a user starts it (`python -m llama_cpp.server`, its
    own process): CRLF-separated events and no usage chunk. The lean path and litellm read the
    same text, finish reason and token counts from it."""
    import subprocess
    import sys

    from labkit.backends.local import gguf_path

    port = free_port()
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path())]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512"]
    with log.open("wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(
            f"http://127.0.0.1:{port}/v1/models", server, log, name="llama_cpp.server", timeout=90
        )
        request = Request(
            model="openai/smollm2",
            messages=[{"role": "user", "content": "Say hello in five words."}],
            params={"temperature": 0, "max_tokens": 12, "seed": 1},
            transport={"api_base": f"http://127.0.0.1:{port}/v1", "api_key": "sk-local"},
        )
        _both(request)  # a fresh server's first answer can differ from its later ones
        lean, lite = _both(request)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert isinstance(lean, Completion) and isinstance(lite, Completion), (lean, lite)
    assert lean.text and _fields(lean) == _fields(lite)
    assert lean.usage.completion_tokens <= 12 and lean.finish_reason in ("stop", "length")


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse_events(text: str, usage: dict[str, Any]) -> bytes:
    chunks = [
        {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": text}}]},
        {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "c1", "created": 1, "model": "m", "choices": [], "usage": usage},
    ]  # fmt: skip
    events = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    return b"".join(map(_chunked, [*events, b"data: [DONE]\n\n"]))


def _serve_chunked(
    *, end_after: float | None, usage: dict[str, Any] | None = None, drop_second: bool = False
) -> tuple[Any, list[int]]:
    """An asyncio server streaming chunked SSE on kept-alive connections. The end of each body
    (the last chunk) follows `[DONE]` in a later packet after `end_after` seconds, as
    uvicorn and other servers send it; None never ends it. `drop_second` closes a connection
    when a second request arrives on it, unanswered (a keep-alive that timed out as the
    request left). Returns (handler, connections counter)."""
    usage = usage or {"prompt_tokens": 9, "completion_tokens": 2}
    opened: list[int] = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened[0] += 1
        try:
            for n in itertools.count():
                await _read_request(reader)
                if n and drop_second:
                    writer.close()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
                writer.write(b"transfer-encoding: chunked\r\n\r\n")
                writer.write(_sse_events(f"answer {opened[0]}", usage))
                await writer.drain()
                if end_after is None:
                    await asyncio.sleep(3600)
                await asyncio.sleep(end_after)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        except asyncio.CancelledError:  # a connection the client kept open, at loop shutdown
            writer.close()

    return serve, opened


def _run_on(
    serve: Any, calls: int, backend: Any = None, **transport: Any
) -> list[Completion | BaseException]:
    """`calls` requests one after another through one backend (the lean one by default)."""

    async def scenario() -> list[Completion | BaseException]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        nonlocal backend
        backend = backend or OpenAICompatBackend(trust_env=False)
        base = {"api_base": f"http://127.0.0.1:{port}/v1", "api_key": KEY, **transport}
        out: list[Completion | BaseException] = []
        try:
            for _ in range(calls):
                request = Request(model=MODEL, messages=MESSAGES, transport=base)
                try:
                    out.append(await backend.generate(request))
                except ProviderError as exc:
                    out.append(exc)
        finally:
            if hasattr(backend, "aclose"):
                await backend.aclose()
            server.close()
        return out

    return asyncio.run(scenario())


def test_an_answer_reads_its_body_to_the_end_so_the_connection_is_reused() -> None:
    """The end of a chunked body often arrives after `[DONE]`, in a later packet. A client
    that stops reading at `[DONE]` gets its connection closed by aiohttp instead of pooled, and
    each next call pays a new TCP (on a real provider, TLS) handshake."""
    serve, opened = _serve_chunked(end_after=0.05)
    done = _run_on(serve, 3)
    assert [d.text for d in done if isinstance(d, Completion)] == ["answer 1"] * 3, done
    assert opened[0] == 1


def test_a_stream_left_open_after_done_keeps_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that never ends the body after `[DONE]` costs a new connection per call, not
    the answer, and not the wait for the request's timeout."""
    from labkit.backends import openai_compat

    monkeypatch.setattr(openai_compat, "_DRAIN_S", 0.2)
    serve, opened = _serve_chunked(end_after=None)
    started = time.perf_counter()
    done = _run_on(serve, 2, timeout=60)
    assert [d.text for d in done if isinstance(d, Completion)] == ["answer 1", "answer 2"], done
    assert opened[0] == 2
    assert time.perf_counter() - started < 30  # far below the 60 s timeout it must not wait out


def test_a_request_on_a_connection_the_server_just_closed_goes_out_again() -> None:
    """A pooled connection the server closed as the next request left (its keep-alive timed
    out) costs nothing: the request is sent once more on a new connection."""
    serve, opened = _serve_chunked(end_after=0, drop_second=True)
    done = _run_on(serve, 3)
    assert [d.text for d in done if isinstance(d, Completion)] == [
        "answer 1",
        "answer 2",
        "answer 3",
    ], done
    assert opened[0] == 3


@pytest.mark.parametrize(
    ("usage", "kept"),
    [
        ({"prompt_tokens": "many", "completion_tokens": 2}, None),
        ({"prompt_tokens": [9], "completion_tokens": 2}, None),
        ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": "x"}}, None),
        ({"prompt_tokens": "12", "completion_tokens": 2.0}, (12, 2, 0)),
        ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": ["cached"]}, (9, 2, 0)),
    ],
    ids=["text", "list", "cached-text", "numeric-text", "details-list"],
)  # fmt: skip
def test_malformed_usage_gets_what_litellm_gives(
    usage: dict[str, Any], kept: tuple[int, int, int] | None
) -> None:
    """Token counts that are not numbers are a provider error naming them, on both paths (the
    cost would be a guess); numbers sent as text, and a breakdown that is not an object, are
    read as litellm reads them."""
    (lean,) = _run_on(_serve_chunked(end_after=0, usage=usage)[0], 1)
    (lite,) = _run_on(_serve_chunked(end_after=0, usage=usage)[0], 1, backend=LiteLLMBackend())
    assert type(lean) is type(lite), (lean, lite)
    if kept is None:
        assert type(lean) is ProviderUnavailable and lean.model == MODEL
        assert "malformed usage" in str(lean)
    else:
        assert isinstance(lean, Completion) and isinstance(lite, Completion)
        assert lean.text == lite.text
        for done in (lean, lite):
            u = done.usage
            assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens) == kept


def _serve_once(body: bytes) -> Any:
    """A server answering each connection's one request with a chunked event stream made of
    `body` (chunks the caller made), then closing the connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    return serve


def test_a_body_cut_after_done_is_a_provider_error_on_both_paths() -> None:
    """`llama_cpp.server` ends an answer that another request interrupted with `[DONE]` and no
    content, then drops the connection before the body's end. Both paths raise (the policy
    retries) instead of returning an empty answer as if it were one."""
    role = {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}  # fmt: skip
    body = b"".join(map(_chunked, [b"data: " + json.dumps(role).encode() + b"\n\n", b"data: [DONE]\n\n"]))  # fmt: skip

    serve = _serve_once(body)  # no last chunk: the body never ends
    (lean,) = _run_on(serve, 1)
    (lite,) = _run_on(serve, 1, backend=LiteLLMBackend())
    assert type(lean) is ProviderUnavailable and type(lite) is ProviderUnavailable, (lean, lite)
    assert lean.model == lite.model == MODEL
    assert "cut the response short" in str(lean) and "--interrupt_requests False" in str(lean)


@pytest.mark.parametrize("ended", [True, False], ids=["body-ended", "connection-dropped"])
def test_an_error_event_is_the_answer_even_when_the_body_is_cut(ended: bool) -> None:
    """An error event mid-stream is mapped as it always was, whether or not the server ends the
    body properly after it."""
    error = {"error": {"message": "This model's maximum context length is 10 tokens.", "code": 400}}  # fmt: skip
    body = _chunked(b"data: " + json.dumps(error).encode() + b"\n\n") + (
        b"0\r\n\r\n" if ended else b""
    )

    (lean,) = _run_on(_serve_once(body), 1)
    assert type(lean) is BadRequest and lean.status == 400, lean
    assert "maximum context length" in str(lean)
