"""The policy layer end to end: real litellm over HTTP against the loopback server.

Faults are scripted on `FakeOpenAIServer`s (primary and fallback each on their own server, so
`server.count` says what reached which "provider"); the policy runs on a `FakeClock`, so waits
are recorded (`clock.sleeps`) instead of slept. Every assertion about what the policy did is
read back from the trace store, under the call it belongs to.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labkit.client import Client
from labkit.errors import (
    AllModelsFailed,
    CircuitOpen,
    LabkitError,
    ProviderUnavailable,
    RetryExhausted,
)
from labkit.models import Registry
from labkit.resilience import FakeClock, Policy
from labkit.testing import FakeOpenAIServer, Fault
from labkit.types import Completion

A = "openai/gpt-4o-mini-2024-07-18"
B = "openai/gpt-4o-2024-08-06"
C = "openai/gpt-4.1-mini-2025-04-14"
KEY_ENV = "LABKIT_RESILIENCE_TEST_KEY"
FAILING = {"500": 1.0}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def make(
    clients: list[Client],
    tmp_path: Path,
    servers: Mapping[str, FakeOpenAIServer],
    *,
    fallbacks: dict[str, list[str]] | None = None,
    retry: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
) -> tuple[Client, FakeClock]:
    """A client whose models `servers` maps to loopback endpoints, on virtual time."""
    reg = Registry(
        models={m: {"api_base": s.url, "api_key_env": KEY_ENV} for m, s in servers.items()},
        fallbacks=fallbacks,
        policy={
            "retry": {"max_attempts": 3, "base_delay": 0.001, **(retry or {})},
            "breaker": {"failure_threshold": 10, **(breaker or {})},
        },
    )
    clock = FakeClock()
    policy = Policy(reg.policy, clock=clock, rng=random.Random(0))
    client = Client(registry=reg, cache_dir=None, traces=tmp_path / "t.db", policy=policy)
    clients.append(client)
    return client, clock


def rows(client: Client, **filters: Any) -> pd.DataFrame:
    """Trace rows oldest first (the store answers newest first)."""
    df = client.traces(**filters)
    return df.iloc[::-1].sort_values("ts", kind="stable").reset_index(drop=True)


def events(client: Client, call_id: str | None, kind: str) -> list[dict[str, Any]]:
    df = rows(client, call_id=call_id, kind="event")
    return list(df[df["event"] == kind]["meta"])


def errors(client: Client, call_id: str | None) -> list[str | None]:
    col = rows(client, call_id=call_id, kind="attempt")["error_type"]
    return [None if pd.isna(e) else str(e) for e in col]


def breaker_moves(client: Client, call_id: str | None) -> list[tuple[str, str]]:
    return [(m["from"], m["to"]) for m in events(client, call_id, "breaker")]


def sent_models(server: FakeOpenAIServer) -> list[str]:
    """Which model each request that reached `server` asked for (provider prefix dropped)."""
    return [f"openai/{body['model']}" for body in server.requests]


# ------------------------------------------------------------------------- retry and waits


def test_a_burst_of_429s_waits_exactly_the_retry_after_each_one_asked_for(
    clients: list[Client], tmp_path: Path
) -> None:
    asked = [0.15, 0.05, 0.1]
    faults = [Fault(429, retry_after=s) for s in asked]
    with FakeOpenAIServer(reply="served", faults=faults, max_lifetime=60) as server:
        client, clock = make(
            clients, tmp_path, {A: server}, retry={"max_attempts": 4, "retry_after_jitter": 0}
        )
        done = client.generate("hi", model=A)
        assert (done.text, done.model, done.attempts, server.count) == ("served", A, 4, 4)
        assert clock.sleeps == pytest.approx(asked)  # no extra pacing wait on top
        call = done.trace_id
        assert errors(client, call) == ["RateLimited"] * 3 + [None]
        retries = events(client, call, "retry")
        assert [r["retry_after"] for r in retries] == pytest.approx(asked)
        assert {r["status"] for r in retries} == {429}
        waits = events(client, call, "wait")
        assert [w["seconds"] for w in waits] == pytest.approx(asked)
        assert {w["reason"] for w in waits} == {"retry_after"}
        # three 429s are far from a window of aimd_min_calls outcomes: the limit stays, and the
        # retry waits cover the Retry-After gate, so no pacing delay is added either
        assert events(client, call, "rate_limit") == []
        assert client.policy.limiter_states()[A]["aimd_decreases"] == 0
        assert client.policy.breaker_states()[A]["state"] == "closed"
        assert set(client.traces()["call_id"]) == {call}  # nothing traced outside the call


def test_5xx_timeouts_and_malformed_bodies_are_retried_with_jittered_backoff(
    clients: list[Client], tmp_path: Path
) -> None:
    faults = [Fault(500), Fault(kind="timeout"), Fault(kind="malformed"), Fault(503)]
    # Deadlines with a wide margin on both sides: a quick answer must not miss one because
    # this big test process paused (a full garbage collection takes ~0.5 s).
    with FakeOpenAIServer(
        reply="finally", faults=faults, timeout_delay=4.0, max_lifetime=60
    ) as server:
        client, clock = make(
            clients, tmp_path, {A: server}, retry={"max_attempts": 5, "base_delay": 0.2}
        )
        done = client.generate("hi", model=A, timeout=2.0)
        assert (done.text, done.attempts, server.count) == ("finally", 5, 5)
        call = done.trace_id
        assert errors(client, call) == [
            "ProviderUnavailable",
            "ProviderTimeout",
            "ProviderUnavailable",
            "ProviderUnavailable",
            None,
        ]
        statuses = [r["status"] for r in events(client, call, "retry")]
        assert statuses[0] == 500 and statuses[3] == 503
        waits = events(client, call, "wait")
        assert [w["seconds"] for w in waits] == clock.sleeps and len(waits) == 4
        assert {w["reason"] for w in waits} == {"backoff"}
        caps = [0.2, 0.4, 0.8, 1.6]  # full jitter: uniform in [0, base * 2**(n-1)]
        assert all(0 <= s <= cap for s, cap in zip(clock.sleeps, caps, strict=True))


def test_a_retry_after_beyond_the_limit_falls_back_at_once_and_holds_later_calls_off(
    clients: list[Client], tmp_path: Path
) -> None:
    with (
        FakeOpenAIServer(faults=[Fault(429, retry_after=120)], max_lifetime=60) as primary,
        FakeOpenAIServer(reply="from b", max_lifetime=60) as backup,
    ):
        client, clock = make(
            clients,
            tmp_path,
            {A: primary, B: backup},
            fallbacks={A: [B]},
            retry={"max_retry_after": 60},
        )
        first = client.generate("one", model=A)
        second = client.generate("two", model=A)
        assert (first.model, second.model) == (B, B)
        assert primary.count == 1 and backup.count == 2  # the second never asked A
        assert clock.sleeps == []
        assert [f["reason"] for f in events(client, first.trace_id, "fallback")] == [
            "retry_after_too_long"
        ]
        assert [f["reason"] for f in events(client, second.trace_id, "fallback")] == [
            "rate_limited"
        ]


# --------------------------------------------------------------------------------- fallbacks


def test_fallbacks_are_taken_in_chain_order_after_each_model_exhausts_its_retries(
    clients: list[Client], tmp_path: Path
) -> None:
    with (
        FakeOpenAIServer(fault_rates=FAILING, max_lifetime=60) as bad,
        FakeOpenAIServer(reply="from c", max_lifetime=60) as good,
    ):
        client, _ = make(
            clients,
            tmp_path,
            {A: bad, B: bad, C: good},
            fallbacks={A: [B, C]},
            retry={"max_attempts": 2},
        )
        done = client.generate("hi", model=A)
        assert (done.text, done.model, done.fallback_from, done.attempts) == ("from c", C, A, 5)
        assert sent_models(bad) == [A, A, B, B] and good.count == 1
        attempts = rows(client, call_id=done.trace_id, kind="attempt")
        assert list(attempts["model"]) == [A, A, B, B, C]
        assert list(attempts["attempt"]) == [1, 2, 1, 2, 1]
        hops = events(client, done.trace_id, "fallback")
        assert [(h["from"], h["to"], h["reason"]) for h in hops] == [
            (A, B, "retries_exhausted"),
            (B, C, "retries_exhausted"),
        ]
        assert [h["attempts"] for h in hops] == [2, 2]


def test_a_stalled_stream_times_out_and_a_slow_but_steady_one_serves(
    clients: list[Client], tmp_path: Path
) -> None:
    words = "one two three four five six"
    with (
        FakeOpenAIServer(reply=words, chunk_delay=3.0, max_lifetime=60) as stalled,
        FakeOpenAIServer(reply=words, chunk_delay=0.03, max_lifetime=60) as slow,
    ):
        client, _ = make(
            clients, tmp_path, {A: stalled, B: slow}, fallbacks={A: [B]}, retry={"max_attempts": 2}
        )
        # The slow answer takes ~0.2 s: a 1.5 s deadline leaves room for a pause of this big
        # test process (a full garbage collection takes ~0.5 s); the stalled one never makes it.
        done = client.generate("hi", model=A, timeout=1.5)
        assert (done.text, done.model, done.attempts) == (words, B, 3)  # nothing half-read
        assert done.ttft_s is not None and done.ttft_s < done.latency_s
        assert errors(client, done.trace_id) == ["ProviderTimeout", "ProviderTimeout", None]
        assert stalled.count == 2 and slow.count == 1


def test_when_every_model_fails_the_error_names_each_and_every_attempt_is_traced(
    clients: list[Client], tmp_path: Path
) -> None:
    with FakeOpenAIServer(fault_rates=FAILING, max_lifetime=60) as bad:
        client, _ = make(
            clients, tmp_path, {A: bad, B: bad}, fallbacks={A: [B]}, retry={"max_attempts": 2}
        )
        with pytest.raises(AllModelsFailed) as info:
            client.generate("hi", model=A, item_id="doomed")
        assert list(info.value.errors) == [A, B]
        assert all(isinstance(e, ProviderUnavailable) for e in info.value.errors.values())
        traced = rows(client, kind="attempt")
        assert set(traced["item_id"]) == {"doomed"} and traced["call_id"].nunique() == 1
        assert len(traced) == bad.count == 4 and traced["error_type"].notna().all()
        assert traced.iloc[-1]["error"] == str(info.value.errors[B])
        hops = events(client, traced.iloc[0]["call_id"], "fallback")
        assert [(h["from"], h["to"]) for h in hops] == [(A, B), (B, None)]


# ---------------------------------------------------------------------------------- breaker


def test_breaker_opens_diverts_probes_reopens_and_closes_all_in_the_traces(
    clients: list[Client], tmp_path: Path
) -> None:
    with (
        FakeOpenAIServer(fault_rates=FAILING, max_lifetime=60) as primary,
        FakeOpenAIServer(reply="from b", max_lifetime=60) as backup,
    ):
        client, clock = make(
            clients,
            tmp_path,
            {A: primary, B: backup},
            fallbacks={A: [B]},
            breaker={"failure_threshold": 2, "cooldown": 10},
        )
        opened = client.generate("1", model=A)  # two failures open it; the third try is skipped
        assert (opened.model, primary.count) == (B, 2)
        assert breaker_moves(client, opened.trace_id) == [("closed", "open")]
        assert [f["reason"] for f in events(client, opened.trace_id, "fallback")] == [
            "circuit_open"
        ]

        diverted = client.generate("2", model=A)  # open: straight to B, nothing sent to A
        assert (diverted.model, diverted.attempts, primary.count) == (B, 1, 2)
        assert breaker_moves(client, diverted.trace_id) == []

        clock.advance(10)
        failed_probe = client.generate("3", model=A)  # one probe, it fails: open again
        assert (failed_probe.model, primary.count) == (B, 3)
        assert breaker_moves(client, failed_probe.trace_id) == [
            ("open", "half_open"),
            ("half_open", "open"),
        ]

        primary.fault_rates = {}  # the provider recovers
        clock.advance(10)
        recovered = client.generate("4", model=A)
        assert (recovered.model, recovered.attempts, primary.count) == (A, 1, 4)
        assert breaker_moves(client, recovered.trace_id) == [
            ("open", "half_open"),
            ("half_open", "closed"),
        ]
        assert client.policy.breaker_states()[A]["opens"] == 2
        reasons = [m["reason"] for m in events(client, None, "breaker")]
        assert reasons == [
            "2 consecutive failures",
            "cooldown elapsed",
            "probe failed",
            "cooldown elapsed",
            "probe succeeded",
        ]


# ------------------------------------------------------------------------------ nothing lost


def test_a_concurrent_burst_of_mixed_faults_loses_no_request_and_no_attempt(
    clients: list[Client], tmp_path: Path
) -> None:
    n = 40
    with (
        FakeOpenAIServer(
            reply="a", fault_rates={"429": 0.3, "500": 0.1, "malformed": 0.05}, seed=1
        ) as primary,
        FakeOpenAIServer(reply="b", fault_rates={"500": 0.4}, seed=2) as backup,
        FakeOpenAIServer(fault_rates=FAILING) as down,
    ):
        client, _ = make(
            clients,
            tmp_path,
            {A: primary, B: backup, C: down},
            fallbacks={A: [B]},
            retry={"max_attempts": 2},
            breaker={"failure_threshold": 5},
        )

        doomed = {i for i in range(n) if i % 8 == 7}  # sent to C, which has no fallback

        async def one(i: int) -> Completion | BaseException:
            model = C if i in doomed else A
            try:
                return await client.agenerate(f"q{i}", model=model, item_id=f"i{i}", cache="off")
            except LabkitError as exc:
                return exc

        async def burst() -> list[Completion | BaseException]:
            return await asyncio.gather(*(one(i) for i in range(n)))

        outcomes = client.run(burst())
        traced = rows(client)
        attempts = traced[traced["kind"] == "attempt"]
        # every request that reached a server left exactly one attempt row
        assert len(attempts) == primary.count + backup.count + down.count
        by_item = traced.groupby("item_id")
        assert set(by_item.groups) == {f"i{i}" for i in range(n)}  # every request is traced
        assert (by_item["call_id"].nunique() == 1).all()  # as one call
        served = 0
        for i, out in enumerate(outcomes):
            mine = by_item.get_group(f"i{i}")
            tried = mine[mine["kind"] == "attempt"]
            if isinstance(out, Completion):
                served += 1
                assert out.text in ("a", "b") and set(mine["call_id"]) == {out.trace_id}
                assert len(tried) == out.attempts
                assert list(tried["status"]).count("ok") == 1
            else:  # a typed error; its attempts are all errors and its end is traced
                expected = (RetryExhausted, CircuitOpen) if i in doomed else (AllModelsFailed,)
                assert isinstance(out, expected), out
                assert tried["error_type"].notna().all()
                if isinstance(out, RetryExhausted):
                    assert 1 <= len(tried) == out.attempts <= 2
                hops = list(mine[mine["event"] == "fallback"]["meta"])
                assert hops and hops[-1]["to"] is None
        assert n // 2 <= served <= n - len(doomed)
