"""Policy layer: retries, backoff waits, breakers, fallbacks, rate limits, config checks.

Everything runs on a FakeClock (virtual time) with scripted `call` functions, so no test waits.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import ValidationError

from labkit.errors import (
    AllModelsFailed,
    AuthError,
    BadRequest,
    CircuitOpen,
    ConfigError,
    ContextOverflow,
    InputError,
    LabkitError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RetryExhausted,
)
from labkit.ratelimit import retry_after_from_headers
from labkit.resilience import (
    FakeClock,
    Policy,
    PolicyConfig,
    RetryConfig,
    SystemClock,
    expand_chain,
    validate_fallbacks,
)
from labkit.types import Completion, Event, EventKind, Usage

A, B, C = "prov/a-1", "prov/b-1", "prov/c-1"
NO_BREAKER = {"breaker": {"enabled": False}}


class TopRng(random.Random):
    """Jitter always at its upper bound, so the backoff caps can be asserted exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Script:
    """A scripted backend: per model, a queue of outcomes (an exception to raise, or a number of
    completion tokens to report); an empty queue answers "ok"."""

    def __init__(self, plan: dict[str, list[Any]] | None = None) -> None:
        self.plan = {m: list(v) for m, v in (plan or {}).items()}
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, model: str, attempt: int) -> Completion:
        self.calls.append((model, attempt))
        queue = self.plan.get(model, [])
        outcome = queue.pop(0) if queue else 0
        if isinstance(outcome, BaseException):
            raise outcome
        return Completion(
            text=f"{model}#{attempt}", model=model, usage=Usage(completion_tokens=outcome)
        )


def make(cfg: dict[str, Any] | None = None, **kw: Any) -> tuple[Policy, FakeClock]:
    clock = FakeClock()
    return Policy(PolicyConfig.from_dict(cfg or {}), clock=clock, **kw), clock


def run(
    policy: Policy,
    chain: list[str],
    call: Callable[[str, int], Awaitable[Completion]],
    estimated_tokens: int = 0,
) -> tuple[Completion, int, list[Event]]:
    events: list[Event] = []

    async def main() -> tuple[Completion, int]:
        return await policy.execute(
            chain, call, emit=events.append, estimated_tokens=estimated_tokens
        )

    done, total = asyncio.run(main())
    return done, total, events


def run_err(policy: Policy, chain: list[str], call: Any) -> tuple[BaseException, list[Event]]:
    events: list[Event] = []
    with pytest.raises(LabkitError) as info:
        asyncio.run(policy.execute(chain, call, emit=events.append))
    return info.value, events


def kinds(events: list[Event], kind: EventKind) -> list[dict[str, Any]]:
    return [e.detail for e in events if e.kind == kind]


def down(model: str = A) -> ProviderUnavailable:
    return ProviderUnavailable("503", model=model, status=503)


# ------------------------------------------------------------------------------------ retries


def test_first_try_success_makes_one_attempt_and_no_events() -> None:
    policy, clock = make()
    done, total, events = run(policy, [A, B], Script())
    assert (done.model, done.attempts, total, done.fallback_from) == (A, 1, 1, None)
    assert events == [] and clock.sleeps == []


def test_retries_with_full_jitter_waits_within_the_doubling_caps() -> None:
    policy, clock = make(
        {"retry": {"max_attempts": 6, "base_delay": 1, "max_delay": 4}, **NO_BREAKER}
    )
    script = Script({A: [down()] * 5})
    done, total, events = run(policy, [A], script)
    assert total == 6 and done.attempts == 6
    assert [a for _, a in script.calls] == [1, 2, 3, 4, 5, 6]
    caps = [1, 2, 4, 4, 4]
    assert len(clock.sleeps) == 5
    assert all(0 <= w <= cap for w, cap in zip(clock.sleeps, caps, strict=True))
    retries = kinds(events, EventKind.RETRY)
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4, 5]
    assert all(r["error"] == "ProviderUnavailable" and r["status"] == 503 for r in retries)
    assert [w["seconds"] for w in kinds(events, EventKind.WAIT)] == clock.sleeps


def test_backoff_reaches_exactly_the_cap_at_the_top_of_the_jitter() -> None:
    policy, clock = make(
        {"retry": {"max_attempts": 6, "base_delay": 1, "max_delay": 4}, **NO_BREAKER}, rng=TopRng()
    )
    run(policy, [A], Script({A: [down()] * 5}))
    assert clock.sleeps == [1, 2, 4, 4, 4]


def test_jitter_spreads_waits_over_the_whole_range() -> None:
    policy = Policy(rng=random.Random(7))
    retry = RetryConfig(base_delay=1, max_delay=8)
    waits = [policy.backoff(retry, 3) for _ in range(2000)]
    assert 0 <= min(waits) < 0.1 and 3.9 < max(waits) <= 4


def test_retry_after_is_honoured_over_a_shorter_backoff() -> None:
    policy, clock = make(rng=TopRng())  # backoff after attempt 1 would be 0.5 s
    _, total, events = run(policy, [A], Script({A: [RateLimited("429", retry_after=7.0)]}))
    assert total == 2 and clock.sleeps == [10.5]  # 7 s plus the top of its 50% jitter
    assert kinds(events, EventKind.WAIT) == [{"seconds": 10.5, "reason": "retry_after"}]
    assert kinds(events, EventKind.RETRY)[0]["retry_after"] == 7.0


def test_retry_after_jitter_spreads_resumptions_and_can_be_turned_off() -> None:
    policy, clock = make({**NO_BREAKER, "retry": {"max_attempts": 2}}, rng=random.Random(3))
    for _ in range(200):
        run(policy, [A], Script({A: [RateLimited("429", retry_after=2.0)]}))
    assert all(2.0 <= w <= 3.0 for w in clock.sleeps)
    assert max(clock.sleeps) - min(clock.sleeps) > 0.9  # spread over the whole half-second
    exact, clock = make({"retry": {"retry_after_jitter": 0}})
    run(exact, [A], Script({A: [RateLimited("429", retry_after=2.0)]}))
    assert clock.sleeps == [2.0]


def test_a_longer_backoff_wins_over_a_tiny_retry_after() -> None:
    policy, clock = make({"retry": {"base_delay": 2}}, rng=TopRng())
    run(policy, [A], Script({A: [RateLimited("429", retry_after=0.1)]}))
    assert clock.sleeps == [2.0]


def test_retry_after_beyond_the_limit_falls_back_at_once() -> None:
    policy, clock = make({"retry": {"max_retry_after": 30}})
    script = Script({A: [RateLimited("429", retry_after=300.0)]})
    done, total, events = run(policy, [A, B], script)
    assert done.model == B and done.fallback_from == A and total == 2
    assert clock.sleeps == []
    assert kinds(events, EventKind.FALLBACK)[0]["reason"] == "retry_after_too_long"


@pytest.mark.parametrize("error", [BadRequest("bad", status=400), AuthError("key", status=401)])
def test_non_retryable_errors_are_raised_at_once_without_fallback(error: ProviderError) -> None:
    policy, clock = make()
    script = Script({A: [error]})
    raised, events = run_err(policy, [A, B], script)
    assert raised is error
    assert script.calls == [(A, 1)] and clock.sleeps == [] and events == []


def test_retryable_flag_decides_for_other_provider_errors() -> None:
    class Flaky(ProviderError):
        retryable = True

    policy, _ = make()
    _, total, _ = run(policy, [A], Script({A: [Flaky("x")]}))
    assert total == 2
    plain = ProviderError("odd")
    raised, _ = run_err(policy, [A], Script({A: [plain]}))
    assert raised is plain


def test_one_model_exhausted_raises_retry_exhausted_with_the_last_error() -> None:
    policy, _ = make({"retry": {"max_attempts": 3}})
    last = ProviderTimeout("slow", model=A)
    raised, events = run_err(policy, [A], Script({A: [down(), down(), last]}))
    assert isinstance(raised, RetryExhausted)
    assert (raised.model, raised.attempts, raised.last_error) == (A, 3, last)
    assert len(kinds(events, EventKind.RETRY)) == 2  # no retry announced after the last attempt


def test_per_model_override_changes_only_the_fields_given() -> None:
    policy, _ = make(
        {"retry": {"base_delay": 2}, "per_model": {"local/*": {"retry": {"max_attempts": 1}}}}
    )
    retry, _, _ = policy.config.for_model("local/smol")
    assert (retry.max_attempts, retry.base_delay) == (1, 2)
    raised, _ = run_err(policy, ["local/smol"], Script({"local/smol": [down()]}))
    assert isinstance(raised, RetryExhausted) and raised.attempts == 1


def test_unexpected_exceptions_propagate_and_free_the_slot() -> None:
    policy, _ = make({"limits": {"*": {"concurrency": 1}}})

    async def boom(model: str, attempt: int) -> Completion:
        raise ValueError("bug in call")

    with pytest.raises(ValueError):
        asyncio.run(policy.execute([A, B], boom, emit=lambda e: None))
    assert policy.limiter_states()[A]["in_flight"] == 0


def test_empty_chain_is_an_input_error() -> None:
    with pytest.raises(InputError):
        asyncio.run(Policy().execute([], Script(), emit=lambda e: None))


# ----------------------------------------------------------------------------------- fallback


def test_fallback_order_and_attempt_count_across_the_chain() -> None:
    policy, _ = make({"retry": {"max_attempts": 2}})
    script = Script({A: [down(), down()], B: [down(B), down(B)]})
    done, total, events = run(policy, [A, B, C], script)
    assert [m for m, _ in script.calls] == [A, A, B, B, C]
    assert (done.model, done.fallback_from, done.attempts, total) == (C, A, 5, 5)
    fallbacks = kinds(events, EventKind.FALLBACK)
    assert [(f["from"], f["to"], f["reason"]) for f in fallbacks] == [
        (A, B, "retries_exhausted"),
        (B, C, "retries_exhausted"),
    ]


def test_context_overflow_moves_to_the_next_model_without_retrying() -> None:
    policy, clock = make()
    script = Script({A: [ContextOverflow(A, 9000, 100, 8192)]})
    done, total, events = run(policy, [A, B], script)
    assert script.calls == [(A, 1), (B, 1)] and clock.sleeps == []
    assert (done.model, done.fallback_from, total) == (B, A, 2)
    assert kinds(events, EventKind.FALLBACK)[0]["reason"] == "context_overflow"


def test_context_overflow_on_a_single_model_is_raised_as_is() -> None:
    policy, _ = make()
    overflow = ContextOverflow(A, 9000, 100, 8192)
    raised, _ = run_err(policy, [A], Script({A: [overflow]}))
    assert raised is overflow


def test_every_model_failing_raises_all_models_failed_with_each_last_error() -> None:
    policy, _ = make({"retry": {"max_attempts": 1}})
    overflow = ContextOverflow(B, 9000, 100, 8192)
    raised, _ = run_err(policy, [A, B], Script({A: [down()], B: [overflow]}))
    assert isinstance(raised, AllModelsFailed)
    assert list(raised.errors) == [A, B]
    assert isinstance(raised.errors[A], ProviderUnavailable) and raised.errors[B] is overflow


def test_duplicate_models_in_the_chain_are_tried_once() -> None:
    policy, _ = make({"retry": {"max_attempts": 1}})
    script = Script({A: [down()]})
    done, _, _ = run(policy, [A, A, B], script)
    assert [m for m, _ in script.calls] == [A, B] and done.model == B


# ------------------------------------------------------------------------------------ breaker

BREAKER = {"retry": {"max_attempts": 1}, "breaker": {"failure_threshold": 3, "cooldown": 10}}


def test_consecutive_failures_open_the_breaker_and_then_no_request_is_sent() -> None:
    policy, _ = make(BREAKER)
    script = Script({A: [down()] * 3})
    events: list[Event] = []
    assert policy.breaker_state(A) is None  # no call yet
    for n in range(3):
        with pytest.raises(RetryExhausted):
            asyncio.run(policy.execute([A], script, emit=events.append))
        assert policy.breaker_state(A) == ("open" if n == 2 else "closed")
    state = policy.breaker_states()[A]
    assert state["state"] == "open" and state["retry_in"] == 10 and state["opened_at"] == 0
    assert kinds(events, EventKind.BREAKER) == [
        {"from": "closed", "to": "open", "reason": "3 consecutive failures", "failures": 3}
    ]
    raised, _ = run_err(policy, [A], script)
    assert isinstance(raised, CircuitOpen) and raised.retry_in == 10
    assert len(script.calls) == 3  # the fourth call never reached the backend


def test_open_breaker_sends_calls_straight_to_the_fallback() -> None:
    policy, _ = make(BREAKER)
    script = Script({A: [down()] * 3})
    for _ in range(3):
        run(policy, [A, B], script)
    script.calls.clear()
    done, total, events = run(policy, [A, B], script)
    assert script.calls == [(B, 1)] and total == 1 and done.fallback_from == A
    fallback = kinds(events, EventKind.FALLBACK)[0]
    assert (fallback["reason"], fallback["error"], fallback["attempts"]) == (
        "circuit_open",
        "CircuitOpen",
        0,
    )


def test_half_open_probe_success_closes_the_breaker() -> None:
    policy, clock = make(BREAKER)
    script = Script({A: [down()] * 3})
    for _ in range(3):
        run(policy, [A, B], script)
    clock.advance(9)
    assert run(policy, [A, B], script)[0].model == B  # still cooling down
    clock.advance(1)
    done, _, events = run(policy, [A, B], script)
    assert done.model == A and done.fallback_from is None
    transitions = [(d["from"], d["to"]) for d in kinds(events, EventKind.BREAKER)]
    assert transitions == [("open", "half_open"), ("half_open", "closed")]
    assert policy.breaker_states()[A]["state"] == "closed"
    assert policy.breaker_states()[A]["failures"] == 0


def test_half_open_probe_failure_reopens_for_another_cooldown() -> None:
    policy, clock = make(BREAKER)
    script = Script({A: [down()] * 4})
    for _ in range(3):
        run(policy, [A, B], script)
    clock.advance(10)
    done, _, events = run(policy, [A, B], script)
    assert done.model == B
    transitions = [(d["from"], d["to"], d["reason"]) for d in kinds(events, EventKind.BREAKER)]
    assert transitions == [
        ("open", "half_open", "cooldown elapsed"),
        ("half_open", "open", "probe failed"),
    ]
    state = policy.breaker_states()[A]
    assert state["state"] == "open" and state["opened_at"] == 10 and state["opens"] == 2


def test_exactly_one_probe_in_half_open_while_concurrent_callers_fall_back() -> None:
    policy, clock = make(
        {"retry": {"max_attempts": 1}, "breaker": {"failure_threshold": 1, "cooldown": 5}}
    )
    probes: list[int] = []

    async def main() -> list[Completion]:
        opened = asyncio.Event()
        release = asyncio.Event()

        async def call(model: str, attempt: int) -> Completion:
            if model == A:
                if not opened.is_set():
                    opened.set()
                    raise down()
                probes.append(attempt)
                await release.wait()
            return Completion(text="", model=model)

        await policy.execute([A, B], call, emit=lambda e: None)  # opens the breaker
        clock.advance(5)
        tasks = [
            asyncio.create_task(policy.execute([A, B], call, emit=lambda e: None))
            for _ in range(10)
        ]
        others = await asyncio.gather(*tasks[1:])
        assert policy.breaker_states()[A]["state"] == "half_open"
        assert policy.breaker_states()[A]["probe_in_flight"] is True
        release.set()
        return [(await tasks[0])[0], *(c for c, _ in others)]

    results = asyncio.run(main())
    assert probes == [1]
    assert results[0].model == A
    assert all(r.model == B and r.fallback_from == A for r in results[1:])
    assert policy.breaker_states()[A]["state"] == "closed"


def test_failure_rate_over_the_window_opens_once_enough_calls_are_seen() -> None:
    cfg = {
        "retry": {"max_attempts": 1},
        "breaker": {"failure_threshold": 100, "failure_rate": 0.5, "min_calls": 4, "window": 60},
    }
    policy, clock = make(cfg)
    script = Script({A: [down(), 0, down(), 0, down()]})
    for _ in range(3):  # fail, ok, fail: 67 % but only 3 calls
        run(policy, [A, B], script)
        clock.advance(1)
    assert policy.breaker_states()[A]["state"] == "closed"
    run(policy, [A, B], script)  # ok: 2 of 4 failed
    assert policy.breaker_states()[A]["state"] == "closed"
    _, _, events = run(policy, [A, B], script)  # fail: 3 of 5
    assert policy.breaker_states()[A]["state"] == "open"
    assert kinds(events, EventKind.BREAKER)[0]["reason"] == "failure rate 60% over 5 calls"


def test_outcomes_older_than_the_window_no_longer_count() -> None:
    cfg = {
        "retry": {"max_attempts": 1},
        "breaker": {"failure_threshold": 100, "failure_rate": 0.5, "min_calls": 3, "window": 10},
    }
    policy, clock = make(cfg)
    script = Script({A: [down(), down(), 0, 0, down()]})
    run(policy, [A, B], script)
    run(policy, [A, B], script)
    clock.advance(11)  # both failures leave the window
    for _ in range(3):
        run(policy, [A, B], script)
    state = policy.breaker_states()[A]
    assert state["state"] == "closed" and state["window_calls"] == 3


@pytest.mark.parametrize(
    "error",
    [BadRequest("bad"), AuthError("key"), ContextOverflow(A, 10, 10, 5)],
    ids=["bad_request", "auth", "overflow"],
)
def test_errors_that_are_not_the_models_fault_never_open_the_breaker(error: LabkitError) -> None:
    policy, _ = make({"breaker": {"failure_threshold": 1}})
    for _ in range(5):
        with pytest.raises(LabkitError):
            asyncio.run(policy.execute([A], Script({A: [error]}), emit=lambda e: None))
    assert policy.breaker_states()[A]["state"] == "closed"


def test_breaker_opening_mid_retries_ends_that_models_turn() -> None:
    policy, _ = make({"retry": {"max_attempts": 4}, "breaker": {"failure_threshold": 2}})
    script = Script({A: [down()] * 4})
    done, total, events = run(policy, [A, B], script)
    assert [m for m, _ in script.calls] == [A, A, B]
    assert total == 3 and done.fallback_from == A
    fallback = kinds(events, EventKind.FALLBACK)[0]
    assert (fallback["reason"], fallback["error"]) == ("circuit_open", "ProviderUnavailable")


def test_every_breaker_open_in_a_chain_raises_all_models_failed() -> None:
    policy, _ = make(BREAKER)
    script = Script({A: [down()] * 3, B: [down(B)] * 3})
    for _ in range(3):
        with pytest.raises(AllModelsFailed):
            asyncio.run(policy.execute([A, B], script, emit=lambda e: None))
    calls = len(script.calls)
    raised, _ = run_err(policy, [A, B], script)
    assert isinstance(raised, AllModelsFailed)
    assert all(isinstance(e, CircuitOpen) for e in raised.errors.values())
    assert len(script.calls) == calls


# ------------------------------------------------------------------------------- rate limits


def test_concurrency_cap_holds_and_queued_calls_are_reported() -> None:
    policy, _ = make({"limits": {"*": {"concurrency": 2}}})
    live, peak = 0, 0
    events: list[Event] = []

    async def call(model: str, attempt: int) -> Completion:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0)
        live -= 1
        return Completion(text="", model=model)

    async def main() -> None:
        await asyncio.gather(*(policy.execute([A], call, emit=events.append) for _ in range(10)))

    asyncio.run(main())
    assert peak == 2
    queued = [d for d in kinds(events, EventKind.RATE_LIMIT) if d["action"] == "queued"]
    assert len(queued) == 8 and queued[0]["limit"] == 2
    assert policy.limiter_states()[A]["in_flight"] == 0


SMALL_WINDOW = {"aimd_min_calls": 4}  # judge every 4 outcomes, so a burst of 4-8 calls is one


def _burst_of_429s(policy: Policy, n: int, events: list[Event]) -> list[Completion]:
    async def main() -> list[Completion]:
        all_in = asyncio.Event()
        live = 0

        async def call(model: str, attempt: int) -> Completion:
            nonlocal live
            if attempt == 1:
                live += 1
                if live == n:
                    all_in.set()
                await all_in.wait()
                raise RateLimited("429", model=model, status=429)
            return Completion(text="", model=model)

        results = await asyncio.gather(
            *(policy.execute([A], call, emit=events.append) for _ in range(n))
        )
        return [c for c, _ in results]

    return asyncio.run(main())


def test_aimd_halves_once_per_burst_of_429s_then_adds_one_per_window() -> None:
    policy, _ = make({"limits": {A: {"concurrency": 8, **SMALL_WINDOW}}, **NO_BREAKER})
    events: list[Event] = []
    assert len(_burst_of_429s(policy, 8, events)) == 8
    changes = [
        (d["action"], d["from"], d["to"])
        for d in kinds(events, EventKind.RATE_LIMIT)
        if d["action"] != "queued"
    ]
    # 8 successes after the decrease: the 4th completes a window of 4 (-> 5), 4 more < 5.
    assert changes == [("decrease", 8, 4), ("increase", 4, 5)]
    state = policy.limiter_states()[A]
    assert (state["concurrency_limit"], state["aimd_decreases"], state["aimd_increases"]) == (
        5,
        1,
        1,
    )


def test_aimd_recovers_up_to_the_configured_ceiling_only() -> None:
    policy, _ = make({"limits": {A: {"concurrency": 4, **SMALL_WINDOW}}, **NO_BREAKER})
    _burst_of_429s(policy, 4, [])
    assert policy.limiter_states()[A]["concurrency_limit"] == 3  # 4 -> 2, +1 after 2 successes
    for _ in range(20):
        run(policy, [A], Script())
    assert policy.limiter_states()[A]["concurrency_limit"] == 4


def test_aimd_caps_an_uncapped_model_at_a_share_of_what_was_in_flight() -> None:
    policy, _ = make({"limits": {"*": {"min_concurrency": 2, **SMALL_WINDOW}}, **NO_BREAKER})
    assert policy.config.for_model(A)[2].concurrency is None
    events: list[Event] = []
    _burst_of_429s(policy, 6, events)
    first = next(d for d in kinds(events, EventKind.RATE_LIMIT) if d["action"] == "decrease")
    assert (first["from"], first["to"]) == (None, 3)


def test_aimd_never_goes_below_min_concurrency() -> None:
    policy, _ = make(
        {"limits": {A: {"concurrency": 2, "min_concurrency": 2, **SMALL_WINDOW}}, **NO_BREAKER}
    )
    _burst_of_429s(policy, 2, [])
    assert policy.limiter_states()[A]["aimd_decreases"] == 0


def test_rpm_bucket_spaces_sequential_calls() -> None:
    policy, clock = make({"limits": {A: {"rpm": 60, "burst_seconds": 1}}})
    events: list[Event] = []
    for _ in range(3):
        events += run(policy, [A], Script())[2]
    assert clock.sleeps == [1.0, 1.0] and clock.now() == 2.0
    delays = [d for d in kinds(events, EventKind.RATE_LIMIT) if d["action"] == "delay"]
    assert [(d["reason"], d["wait_s"]) for d in delays] == [("rpm", 1.0), ("rpm", 1.0)]
    assert kinds(events, EventKind.WAIT) == [{"seconds": 1.0, "reason": "rpm"}] * 2


def test_rpm_bucket_queues_concurrent_calls_in_arrival_order() -> None:
    policy, clock = make({"limits": {A: {"rpm": 120, "burst_seconds": 1}}})  # 2 per second

    async def main() -> None:
        await asyncio.gather(
            *(policy.execute([A], Script(), emit=lambda e: None) for _ in range(5))
        )

    asyncio.run(main())
    assert sorted(clock.sleeps) == [0.5, 1.0, 1.5]
    assert clock.now() == 1.5  # the waits overlap in (virtual) time


def test_tpm_bucket_charges_the_estimate_and_corrects_it_with_reported_usage() -> None:
    policy, clock = make({"limits": {A: {"tpm": 600}}})  # 10 tokens/s, holds 600
    run(policy, [A], Script({A: [100]}), estimated_tokens=500)  # used 100: 400 given back
    assert policy.limiter_states()[A]["tpm_available"] == 500
    run(policy, [A], Script({A: [500]}), estimated_tokens=500)
    assert clock.sleeps == []
    _, _, events = run(policy, [A], Script(), estimated_tokens=300)  # no usage reported
    assert clock.sleeps == [30.0]
    assert kinds(events, EventKind.WAIT) == [{"seconds": 30.0, "reason": "tpm"}]


def test_a_context_overflow_gives_its_rate_budget_back() -> None:
    policy, clock = make({"limits": {A: {"rpm": 60, "tpm": 600, "burst_seconds": 1}}})
    overflow = ContextOverflow(A, 9000, 100, 8192)
    run(policy, [A, B], Script({A: [overflow]}), estimated_tokens=10)  # refused before sending
    run(policy, [A], Script(), estimated_tokens=10)
    assert clock.sleeps == []
    assert policy.limiter_states()[A]["rpm_available"] == 0


def test_retry_after_from_one_call_holds_back_the_next_calls_to_that_model() -> None:
    policy, clock = make({"retry": {"max_attempts": 1}}, rng=TopRng())
    with pytest.raises(RetryExhausted):
        asyncio.run(
            policy.execute(
                [A], Script({A: [RateLimited("429", retry_after=5)]}), emit=lambda e: None
            )
        )
    assert policy.limiter_states()[A]["blocked_for"] == 5
    _, _, events = run(policy, [A], Script())
    assert clock.sleeps == [7.5]  # held 5 s by the gate, plus the top of its 50% jitter
    assert kinds(events, EventKind.WAIT) == [{"seconds": 7.5, "reason": "retry_after"}]


def test_limits_use_the_most_specific_entry() -> None:
    cfg = PolicyConfig.from_dict(
        {"limits": {"*": {"rpm": 10}, "prov/*": {"rpm": 20}, A: {"rpm": 30}}}
    )
    assert [cfg.for_model(m)[2].rpm for m in (A, B, "other/x")] == [30, 20, 10]
    assert PolicyConfig().for_model(A)[2].rpm is None


# ------------------------------------------------------------------ nothing lost, concurrency


def test_fifty_concurrent_requests_each_end_in_a_result_or_a_typed_error() -> None:
    cfg = {
        "retry": {"max_attempts": 3},
        "breaker": {"failure_threshold": 4, "cooldown": 2},
        "limits": {"*": {"concurrency": 5, "rpm": 600, "burst_seconds": 1}},
    }
    policy, _ = make(cfg, rng=random.Random(1))
    chaos = random.Random(42)
    errors: list[Callable[[str], BaseException]] = [
        lambda m: ProviderUnavailable("503", model=m),
        lambda m: RateLimited("429", model=m, retry_after=chaos.choice([None, 0.5])),
        lambda m: ProviderTimeout("slow", model=m),
        lambda m: BadRequest("bad", model=m),
        lambda m: ContextOverflow(m, 10, 10, 5),
    ]

    async def call(model: str, attempt: int) -> Completion:
        await asyncio.sleep(0)
        if chaos.random() < 0.5:
            raise chaos.choice(errors)(model)
        return Completion(text="", model=model)

    async def main() -> list[Any]:
        jobs = [policy.execute([A, B, C], call, emit=lambda e: None) for _ in range(50)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert len(outcomes) == 50
    assert all(isinstance(o, tuple | LabkitError) for o in outcomes), outcomes
    assert any(isinstance(o, tuple) for o in outcomes) and any(
        isinstance(o, LabkitError) for o in outcomes
    )
    for state in policy.limiter_states().values():
        assert (state["in_flight"], state["queued"]) == (0, 0)
    assert not any(s["probe_in_flight"] for s in policy.breaker_states().values())


def test_cancelled_calls_give_back_their_slot_and_probe() -> None:
    policy, clock = make(
        {
            "limits": {"*": {"concurrency": 1}},
            "breaker": {"failure_threshold": 1, "cooldown": 1},
            "retry": {"max_attempts": 1},
        }
    )

    async def main() -> None:
        with pytest.raises(RetryExhausted):
            await policy.execute([A], Script({A: [down()]}), emit=lambda e: None)
        clock.advance(1)
        hang = asyncio.Event()

        async def stuck(model: str, attempt: int) -> Completion:
            await hang.wait()
            raise AssertionError("unreachable")

        probe = asyncio.create_task(policy.execute([A], stuck, emit=lambda e: None))
        await asyncio.sleep(0)
        assert policy.breaker_states()[A]["probe_in_flight"]
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe

    asyncio.run(main())
    assert policy.breaker_states()[A]["probe_in_flight"] is False
    assert policy.limiter_states()[A]["in_flight"] == 0
    assert run(policy, [A], Script())[0].model == A  # the next caller probes and closes it


def test_a_waiter_cancelled_in_the_queue_leaves_no_trace() -> None:
    policy, _ = make({"limits": {"*": {"concurrency": 1}}})

    async def main() -> None:
        hang = asyncio.Event()

        async def slow(model: str, attempt: int) -> Completion:
            await hang.wait()
            return Completion(text="", model=model)

        first = asyncio.create_task(policy.execute([A], slow, emit=lambda e: None))
        second = asyncio.create_task(policy.execute([A], slow, emit=lambda e: None))
        await asyncio.sleep(0)
        assert policy.limiter_states()[A]["queued"] == 1
        second.cancel()
        await asyncio.sleep(0)
        hang.set()
        await first

    asyncio.run(main())
    assert (policy.limiter_states()[A]["in_flight"], policy.limiter_states()[A]["queued"]) == (0, 0)


def test_a_failing_emit_does_not_break_the_policy(caplog: pytest.LogCaptureFixture) -> None:
    policy, _ = make({"retry": {"max_attempts": 2}, "breaker": {"failure_threshold": 1}})

    def broken(event: Event) -> None:
        raise RuntimeError("trace store down")

    done, _ = asyncio.run(policy.execute([A, B], Script({A: [down()]}), emit=broken))
    assert done.model == B
    assert "trace store down" in caplog.text


# -------------------------------------------------------------------------------- the clocks


def test_fake_clock_overlaps_concurrent_sleeps_and_records_them() -> None:
    clock = FakeClock(start=100)

    async def main() -> None:
        await asyncio.gather(clock.sleep(1), clock.sleep(1), clock.sleep(2))
        await clock.sleep(0.5)

    asyncio.run(main())
    assert clock.sleeps == [1, 1, 2, 0.5] and clock.now() == 102.5
    asyncio.run(clock.sleep(1))  # a fresh event loop keeps working
    assert clock.now() == 103.5


def test_system_clock_is_monotonic_and_sleeps() -> None:
    clock = SystemClock()
    before = clock.now()
    asyncio.run(clock.sleep(0))
    assert clock.now() >= before


# ------------------------------------------------------------------------ Retry-After headers

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        (
            {"retry-after": format_datetime(datetime.fromtimestamp(NOW + 20, UTC), usegmt=True)},
            20.0,
        ),
        ({"retry-after": format_datetime(datetime.fromtimestamp(NOW - 20, UTC), usegmt=True)}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"x-ratelimit-reset-requests": "1s"}, 1.0),
        ({"x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "20ms"}, 0.02),
        ({"x-ratelimit-reset-requests": "1h2m3.5s"}, 3723.5),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 1.0),
        (
            {
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-reset-tokens": "6m0s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-remaining-requests": "10",
            },
            360.0,
        ),
        ({"x-ratelimit-reset": "12"}, 12.0),
        ({"retry-after": "soon"}, None),
        ({"x-ratelimit-reset-requests": "1 fortnight"}, None),
        ({"content-type": "application/json"}, None),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str], seconds: float | None) -> None:
    got = retry_after_from_headers(headers, now=NOW)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


# ------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"limits": {"openai/gpt-4o": {"rpm": 0}}}, "policy.limits['openai/gpt-4o'].rpm"),
        ({"limits": {"*": {"tpm": -5}}}, "policy.limits['*'].tpm"),
        ({"limits": {"local": {"concurrency": 0}}}, "policy.limits.local.concurrency"),
        ({"limits": {"x": {"concurrency": 2, "min_concurrency": 3}}}, "policy.limits.x"),
        ({"retry": {"max_attempts": 0}}, "policy.retry.max_attempts"),
        ({"retry": {"base_delay": -1}}, "policy.retry.base_delay"),
        ({"breaker": {"failure_rate": 1.5}}, "policy.breaker.failure_rate"),
        ({"breaker": {"cooldown": 0}}, "policy.breaker.cooldown"),
        (
            {"per_model": {"local/*": {"retry": {"max_attempts": 0}}}},
            "policy.per_model['local/*'].retry.max_attempts",
        ),
        ({"per_model": {"m": {"retry": {"tries": 2}}}}, "policy.per_model.m.retry.tries"),
        ({"retries": {}}, "policy.retries"),
    ],
)
def test_bad_configs_are_rejected_naming_the_entry(data: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyConfig.from_dict(data)
    assert info.value.where == where
    assert str(info.value).startswith(where + ": ")


def test_direct_construction_also_names_the_entry() -> None:
    with pytest.raises(ValidationError, match=r"limits\.gpt\.rpm"):
        PolicyConfig.model_validate({"limits": {"gpt": {"rpm": -1}}})


def test_every_config_field_has_a_docstring() -> None:
    from labkit import ratelimit, resilience

    for model in (
        resilience.RetryConfig,
        resilience.BreakerConfig,
        ratelimit.RateLimitConfig,
        resilience.ModelPolicy,
        resilience.PolicyConfig,
    ):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


KNOWN = {"a", "b", "c", "d"}


@pytest.mark.parametrize(
    ("fallbacks", "where", "message"),
    [
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "fallbacks.a", "fallback cycle: a -> b -> c -> a"),
        ({"d": ["b"], "b": ["c"], "c": ["b"]}, "fallbacks.b", "fallback cycle: b -> c -> b"),
        ({"a": ["a"]}, "fallbacks.a", "fallback cycle: a -> a"),
        ({"a": ["b", "zzz"]}, "fallbacks.a", "unknown fallback model 'zzz'"),
        ({"a": "b"}, "fallbacks.a", "must be a list"),
    ],
)
def test_validate_fallbacks_rejects_cycles_and_unknown_models(
    fallbacks: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_fallbacks(fallbacks, KNOWN.__contains__)
    assert info.value.where == where and message in str(info.value)


def test_validate_fallbacks_accepts_a_dag() -> None:
    validate_fallbacks({"a": ["b", "c"], "b": ["c"], "d": ["c"]}, KNOWN.__contains__)


def test_expand_chain_is_breadth_first_without_repeats() -> None:
    assert expand_chain("a", {"a": ["b", "c"], "b": ["d", "c"]}) == ["a", "b", "c", "d"]
    assert expand_chain("x", {}) == ["x"]


def test_state_snapshots_have_the_documented_keys() -> None:
    policy, _ = make({"limits": {A: {"rpm": 60, "tpm": 1000, "concurrency": 3}}})
    run(policy, [A], Script(), estimated_tokens=10)
    breaker = policy.breaker_states()[A]
    assert {"state", "failures", "opened_at", "retry_in"} <= breaker.keys()
    limiter = policy.limiter_states()[A]
    assert limiter["concurrency_limit"] == 3 and limiter["rpm"] == 60 and limiter["tpm"] == 1000
    assert limiter["rpm_available"] == 59 and limiter["tpm_available"] == 990


def test_rate_limits_can_be_left_out_of_the_breaker() -> None:
    policy, _ = make(
        {
            "retry": {"max_attempts": 1},
            "breaker": {"failure_threshold": 1, "count_rate_limits": False},
        }
    )
    for _ in range(3):
        run(policy, [A, B], Script({A: [RateLimited("429")]}))
    assert policy.breaker_states()[A]["state"] == "closed"
    run(policy, [A, B], Script({A: [down()]}))
    assert policy.breaker_states()[A]["state"] == "open"


def test_a_long_retry_after_sends_later_calls_to_the_fallback_without_a_request() -> None:
    policy, clock = make({"retry": {"max_retry_after": 30}})
    script = Script({A: [RateLimited("429", retry_after=120.0)]})
    run(policy, [A, B], script)  # A answered 429 "come back in 2 minutes"
    script.calls.clear()
    done, _, events = run(policy, [A, B], script)
    assert script.calls == [(B, 1)] and done.fallback_from == A and clock.sleeps == []
    assert kinds(events, EventKind.FALLBACK)[0]["reason"] == "rate_limited"
    raised, _ = run_err(policy, [A], script)  # no fallback: a typed error, not a 2-minute sleep
    assert isinstance(raised, RetryExhausted) and isinstance(raised.last_error, RateLimited)
    clock.advance(120)
    assert run(policy, [A], script)[0].model == A


def test_a_call_the_breaker_refuses_outright_is_still_traced() -> None:
    policy, _ = make(BREAKER)
    script = Script({A: [down()] * 3})
    for _ in range(3):
        run_err(policy, [A], script)
    raised, events = run_err(policy, [A], script)  # no request sent, nothing else to trace
    assert isinstance(raised, CircuitOpen)
    assert kinds(events, EventKind.FALLBACK) == [
        {"from": A, "to": None, "reason": "circuit_open", "error": "CircuitOpen", "attempts": 0}
    ]


def test_the_last_model_of_a_chain_that_ran_out_says_why_it_was_left() -> None:
    policy, _ = make({"retry": {"max_attempts": 2}, **NO_BREAKER})
    _, events = run_err(policy, [A, B], Script({A: [down()] * 2, B: [down(B)] * 2}))
    hops = [(f["from"], f["to"], f["reason"]) for f in kinds(events, EventKind.FALLBACK)]
    assert hops == [(A, B, "retries_exhausted"), (B, None, "retries_exhausted")]


def _limit_after(pattern: list[Any], calls: int) -> tuple[int | None, list[dict[str, Any]]]:
    policy, _ = make({"limits": {A: {"concurrency": 10}}, "retry": {"max_attempts": 4}})
    script = Script({A: pattern * calls})
    events: list[Event] = []
    for _ in range(calls):
        events += run(policy, [A], script)[2]
    changes = [d for d in kinds(events, EventKind.RATE_LIMIT) if d["action"] == "decrease"]
    return policy.limiter_states()[A]["concurrency_limit"], changes


def test_a_steady_minority_of_429s_leaves_the_concurrency_limit_alone() -> None:
    limit, cuts = _limit_after([RateLimited("429"), 0, 0], 30)  # a third of attempts refused
    assert limit == 10 and cuts == []


def test_a_majority_of_429s_in_a_window_cuts_the_limit_once_per_window() -> None:
    limit, cuts = _limit_after([RateLimited("429"), RateLimited("429"), 0], 15)
    # judged over aimd_min_calls=30 outcomes (not the limit of 10): 20 of them were 429s
    assert [(c["from"], c["to"], c["reason"]) for c in cuts] == [
        (10, 5, "67% of 30 calls rate limited")
    ]
    assert limit == 6  # the last 5 calls succeed: one full window of 5 adds 1
