"""litellm for real, over HTTP, against the loopback OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ClientFactory

from labkit.errors import AuthError, BadRequest, RetryExhausted
from labkit.testing import FakeOpenAIServer, Fault

MODEL = "openai/gpt-4o-mini-2024-07-18"


def test_streaming_usage_cost_and_ttft(
    client_factory: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABKIT_TEST_KEY", "sk-test-0123456789abcdefghij")
    with FakeOpenAIServer(
        reply="Paris is the capital of France.", cached_tokens=4, chunk_delay=0.01, max_lifetime=60
    ) as server:
        client = client_factory({MODEL: server}, attempts=3)
        done = client.generate("Capital of France?", model=MODEL, temperature=0)
        assert done.text == "Paris is the capital of France."
        assert done.model == MODEL
        assert done.usage.completion_tokens == 6 and done.usage.cached_tokens == 4
        assert done.usage.prompt_tokens > 0
        assert done.cost_usd > 0  # litellm's price map for the pinned model
        assert done.ttft_s is not None and 0 < done.ttft_s < done.latency_s
        assert done.raw["choices"][0]["message"]["content"] == done.text
        body = server.requests[0]
        assert body["stream"] is True and body["model"] == "gpt-4o-mini-2024-07-18"
        assert body["temperature"] == 0
        hit = client.generate("Capital of France?", model=MODEL, temperature=0)
        assert hit.cache_hit and server.count == 1
        client.close()


def test_rate_limit_retry_after_is_honoured(
    client_factory: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABKIT_TEST_KEY", "sk-test")
    faults = [Fault(429, retry_after=0.05), Fault(503)]
    with FakeOpenAIServer(reply="ok", faults=faults, max_lifetime=60) as server:
        client = client_factory({MODEL: server}, attempts=3)
        done = client.generate("hi", model=MODEL)
        assert done.text == "ok" and done.attempts == 3 and server.count == 3
        rows = client.traces(kind="attempt").sort_values("ts")
        assert list(rows["error_type"].fillna("")) == ["RateLimited", "ProviderUnavailable", ""]
        events = client.traces(kind="event")
        waits = sorted(m["wait_s"] for m in events["meta"] if "wait_s" in m)
        assert waits and waits[-1] >= 0.05  # the Retry-After floor
        client.close()


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault(400), BadRequest), (Fault(401), AuthError)],
)
def test_non_retryable_errors(
    client_factory: ClientFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: Fault,
    error: type,
) -> None:
    monkeypatch.setenv("LABKIT_TEST_KEY", "sk-test")
    with FakeOpenAIServer(faults=[fault], max_lifetime=60) as server:
        client = client_factory({MODEL: server}, attempts=3)
        with pytest.raises(error):
            client.generate("hi", model=MODEL)
        assert server.count == 1
        assert client.traces(kind="attempt").iloc[0]["error_type"] == error.__name__
        client.close()


def test_malformed_body_and_timeout_are_retried_then_exhausted(
    client_factory: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABKIT_TEST_KEY", "sk-test")
    faults = [Fault(kind="malformed"), Fault(kind="timeout"), Fault(kind="malformed")]
    with FakeOpenAIServer(faults=faults, timeout_delay=4.0, max_lifetime=60) as server:
        client = client_factory({MODEL: server}, attempts=3)
        with pytest.raises(RetryExhausted) as err:  # a deadline no process pause can miss
            client.generate("hi", model=MODEL, timeout=2.0)
        assert err.value.attempts == 3
        kinds = list(client.traces(kind="attempt").sort_values("ts")["error_type"])
        assert kinds[1] == "ProviderTimeout" and len(kinds) == 3
        client.close()


def test_non_streaming_server_protocol(fake_server: FakeOpenAIServer) -> None:
    import httpx

    r = httpx.post(
        f"{fake_server.url}/chat/completions",
        json={"model": "x", "messages": [{"role": "user", "content": "hi there"}]},
    )
    body = r.json()
    assert r.status_code == 200 and body["choices"][0]["message"]["content"] == "The answer is 42."
    assert body["usage"]["completion_tokens"] == 4
    assert fake_server.url.startswith("http://127.0.0.1:")
