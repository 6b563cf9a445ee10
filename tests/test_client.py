"""The call path with a scripted backend: caching, tracing, errors, nothing lost."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from labkit.client import Client
from labkit.errors import BadRequest, InputError, RetryExhausted, TemplateError, UnknownModel
from labkit.models import Registry
from labkit.testing import FakeBackend, provider_error


def test_generate_then_cache_hit(tmp_client: Client) -> None:
    first = tmp_client.generate("Say hi", model="fake/echo")
    assert first.text == "first answer" and not first.cache_hit and first.attempts == 1
    again = tmp_client.generate("Say hi", model="fake/echo")
    assert again.cache_hit and again.text == "first answer"
    assert again.latency_s == first.latency_s and again.usage == first.usage
    assert again.trace_id != first.trace_id
    rows = tmp_client.traces()
    assert sorted(rows["kind"]) == ["attempt", "cache_hit"]
    hit = rows[rows["kind"] == "cache_hit"].iloc[0]
    assert bool(hit["cache_hit"]) and hit["response"] == "first answer"


def test_cache_modes_and_sample_index(tmp_client: Client) -> None:
    a = tmp_client.generate("q", model="fake/x")
    b = tmp_client.generate("q", model="fake/x", cache="refresh")
    assert (a.text, b.text) == ("first answer", "second answer") and not b.cache_hit
    assert tmp_client.generate("q", model="fake/x").text == "second answer"  # refresh overwrote
    c = tmp_client.generate("q", model="fake/x", cache="off")
    assert c.text == "third answer" and not c.cache_hit
    assert tmp_client.generate("q", model="fake/x").text == "second answer"  # off did not write
    d = tmp_client.generate("q", model="fake/x", sample=1)
    assert not d.cache_hit


def test_templates_and_params_reach_the_backend(tmp_client: Client) -> None:
    backend = tmp_client.backend_for("fake/x")
    assert isinstance(backend, FakeBackend)
    tmp_client.generate(
        template="Classify: {{text}}",
        variables={"text": "great"},
        model="fake/x",
        temperature=0.3,
        max_tokens=20,
        system="Be terse.",
    )
    req = backend.history[-1]
    assert req.messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Classify: great"},
    ]
    assert req.params == {"temperature": 0.3, "max_tokens": 20}


def test_bad_input_names_the_problem(tmp_client: Client) -> None:
    with pytest.raises(TemplateError, match="text"):
        tmp_client.generate(template="Classify: {{text}}", model="fake/x")
    with pytest.raises(UnknownModel, match="Did you mean"):
        tmp_client.generate("hi", model="local/smollm2-135")
    with pytest.raises(InputError, match="unknown generation parameter"):
        tmp_client.generate("hi", model="fake/x", temprature=0.1)
    with pytest.raises(InputError, match="cache must be"):
        tmp_client.generate("hi", model="fake/x", cache="sometimes")  # type: ignore[arg-type]
    assert tmp_client.traces().empty  # nothing was sent


def test_provider_error_is_traced_then_raised(tmp_path: Path) -> None:
    client = Client(
        registry=Registry(policy={"retry": {"max_attempts": 2, "base_delay": 0.001}}),
        cache_dir=tmp_path / "c",
        traces=tmp_path / "t.db",
    )
    client.add_backend("fake", FakeBackend([provider_error(503), provider_error(503)]))
    with pytest.raises(RetryExhausted) as err:
        client.generate("hi", model="fake/down")
    assert err.value.attempts == 2
    rows = client.traces(kind="attempt")
    assert list(rows["status"]) == ["error", "error"]
    assert set(rows["error_type"]) == {"ProviderUnavailable"}
    client.add_backend("fake", FakeBackend([provider_error(400)]))
    with pytest.raises(BadRequest):
        client.generate("other", model="fake/down")
    assert len(client.traces(kind="attempt")) == 3  # a bad request is not retried
    client.close()


def test_retry_then_success_counts_attempts(tmp_path: Path) -> None:
    client = Client(
        registry=Registry(policy={"retry": {"max_attempts": 3, "base_delay": 0.001}}),
        cache_dir=tmp_path / "c",
        traces=tmp_path / "t.db",
    )
    client.add_backend("fake", FakeBackend([provider_error(429, retry_after=0.01), "ok now"]))
    done = client.generate("hi", model="fake/x")
    assert done.text == "ok now" and done.attempts == 2
    attempts = client.traces(kind="attempt").sort_values("ts")
    assert list(attempts["status"]) == ["error", "ok"]
    assert attempts.iloc[0]["error_type"] == "RateLimited"
    events = set(client.traces(kind="event")["event"])
    assert {"retry", "wait"} <= events
    assert set(client.traces(kind="event")["call_id"]) == {done.trace_id}
    client.close()


def test_a_backend_that_edits_its_request_cannot_change_the_next_attempt(tmp_path: Path) -> None:
    client = Client(
        registry=Registry(policy={"retry": {"max_attempts": 3, "base_delay": 0.001}}),
        cache_dir=tmp_path / "c",
        traces=tmp_path / "t.db",
    )

    def vandal(request: Any) -> str:  # edits everything it was given, then fails
        request.messages[-1]["content"] = "tampered"
        request.messages.append({"role": "user", "content": "more"})
        assert request.json_schema is not None
        request.json_schema["properties"] = {}
        raise provider_error(503)

    backend = FakeBackend([vandal, '{"a": "x"}'])
    client.add_backend("fake", backend)
    schema = {"a": str}
    done = client.generate("Say {{w}}", variables={"w": "hi"}, model="fake/x", schema=schema)
    first, second = backend.history
    assert first.messages[-2]["content"] == "tampered"  # it edited its own copy
    assert done.attempts == 2 and done.value == {"a": "x"}
    assert second.messages[-1]["content"].startswith("Say hi") and len(second.messages) == 1
    assert second.json_schema is not None and "a" in second.json_schema["properties"]
    again = client.generate("Say {{w}}", variables={"w": "hi"}, model="fake/x", schema=schema)
    assert again.cache_hit  # the key was never touched either
    client.close()


def test_no_secret_reaches_traces_or_cache_keys(tmp_path: Path) -> None:
    secret = "sk-proj-THISISASECRETKEY0123456789"
    client = Client(registry=Registry(), cache_dir=tmp_path / "c", traces=tmp_path / "t.db")
    client.add_backend("fake", FakeBackend(f"echo {secret} to ann@example.com"))
    done = client.generate(
        f"my key is {secret}, mail ann@example.com, call +1 415 555 0100",
        model="fake/x",
        api_key=secret,
        timeout=5,
    )
    client.generate(
        f"my key is {secret}, mail ann@example.com, call +1 415 555 0100",
        model="fake/x",
        api_key=secret,
    )
    client.close()
    assert secret not in (done.cache_key or "")
    dump = "\n".join(sqlite3.connect(tmp_path / "t.db").iterdump())
    for leaked in (secret, "ann@example.com", "415 555 0100"):
        assert leaked not in dump
    keys = [
        k for (k,) in sqlite3.connect(tmp_path / "c" / "cache.db").execute("SELECT key FROM Cache")
    ]
    assert keys and all(secret not in k for k in keys)


def test_trace_db_failure_does_not_fail_the_call(tmp_path: Path) -> None:
    (tmp_path / "t.db").mkdir()  # a directory where the database should be
    client = Client(registry=Registry(), cache_dir=tmp_path / "c", traces=tmp_path / "t.db")
    client.add_backend("fake", FakeBackend("fine"))
    with pytest.warns(RuntimeWarning, match="not writable"):
        done = client.generate("hi", model="fake/x")
    assert done.text == "fine"
    assert client.tracer.pending >= 1
    client.close()


def test_agenerate_inside_a_running_loop_and_concurrency(tmp_client: Client) -> None:
    tmp_client.add_backend(
        "fake", FakeBackend(lambda r: r.messages[-1]["content"].upper(), latency=0.01)
    )

    async def main() -> list[str]:
        outs = await asyncio.gather(
            *(tmp_client.agenerate(f"q{i}", model="fake/x") for i in range(20))
        )
        return [o.text for o in outs]

    assert asyncio.run(main()) == [f"Q{i}" for i in range(20)]
    # sync generate also works while another loop runs in this thread (as in Jupyter)

    async def inside() -> str:
        return tmp_client.generate("q3", model="fake/x").text

    assert asyncio.run(inside()) == "Q3"


def test_ctrl_c_delivered_to_another_thread_still_stops_a_sync_call(tmp_client: Client) -> None:
    """The kernel may hand a process's SIGINT to any of its threads. The main thread, waiting
    on the loop, must still take it: before, it ran Python's handler only once the call was
    over (a grid ran to its end through Ctrl-C)."""
    cancelled = threading.Event()

    async def long_call() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "ran to the end"

    def on_sigint(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # what Python's own handler does

    runner = tmp_client._loop_runner()
    assert runner.thread.ident is not None
    kill = threading.Timer(0.3, signal.pthread_kill, (runner.thread.ident, signal.SIGINT))
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        kill.start()
        with pytest.raises(KeyboardInterrupt):
            tmp_client.run(long_call())
    finally:
        kill.cancel()
        signal.signal(signal.SIGINT, previous)
    assert cancelled.wait(10)  # the call on the loop was cancelled, not left running


def test_a_sync_call_raising_timeout_error_raises_it(tmp_client: Client) -> None:
    """Waiting in slices must not take the call's own TimeoutError for a slice running out."""

    async def times_out() -> None:
        await asyncio.sleep(0.25)
        raise TimeoutError("the call's own")

    with pytest.raises(TimeoutError, match="the call's own"):
        tmp_client.run(times_out())
