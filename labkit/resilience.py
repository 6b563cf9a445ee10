"""Policy layer of the call path: rate limits, retries, circuit breakers, fallback chains.

The client owns one `Policy` and hands every request to `Policy.execute(chain, call, emit=...)`.
`call(model, attempt)` performs one backend attempt; everything around it is decided here and
reported through `emit` as typed `Event`s, which the client writes as trace rows::

    for model in chain (primary first):
      for attempt in 1..retry.max_attempts:
        Retry-After gate longer than max_retry_after ───────▶ next model  FALLBACK rate_limited
        breaker.acquire ── denied (open / probe busy) ──────▶ next model  FALLBACK circuit_open
        concurrency slot (AIMD limit) ── full ─────────────▶ queue      RATE_LIMIT queued
        Retry-After gate (+ jitter), rpm/tpm buckets ─────▶ sleep      RATE_LIMIT + WAIT
        call(model, attempt)
          ├─ ok ──────────────▶ breaker success, AIMD increase, TPM corrected by usage → return
          ├─ ContextOverflow ─▶ next model, no retry         FALLBACK context_overflow
          ├─ not retryable ───▶ raised at once (BadRequest, AuthError: no fallback)
          └─ retryable ───────▶ RETRY + WAIT Retry-After (+ jitter) or full-jitter backoff,
                                whichever is longer, then again;
                                exhausted → next model        FALLBACK retries_exhausted
    chain ran out ──────────────────────────────────────────▶ raise      FALLBACK to=None

Circuit breaker, one per model deployment (failures = retryable provider errors only)::

                 N consecutive failures, or failure rate ≥ r
                 over `window` seconds once ≥ min_calls
      ┌────────┐ ────────────────────────────────────▶ ┌──────┐
      │ CLOSED │                                       │ OPEN │ ◀──────────┐
      └────────┘ ◀───────────┐                         └──────┘            │
                             │ probe succeeded            │ cooldown over,  │ probe failed
                             │                            ▼ next caller     │
                             │                      ┌───────────┐           │
                             └───────────────────── │ HALF_OPEN │ ──────────┘
                                                    └───────────┘
                      exactly one probe is in flight; concurrent callers fall back meanwhile

Concurrency limits, AIMD, RPM/TPM buckets and Retry-After parsing live in `labkit.ratelimit`
(re-exported here: `RateLimitConfig`, `retry_after_from_headers`).

Concurrency: any number of `execute` calls may run at once in one event loop. State changes
happen between awaits (no asyncio locks held across I/O); a small threading lock only guards the
per-model table so `breaker_states()` can be polled from a notebook thread.
"""

from __future__ import annotations

import asyncio
import fnmatch
import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import (
    AllModelsFailed,
    CircuitOpen,
    ConfigError,
    ContextOverflow,
    InputError,
    ProviderError,
    RateLimited,
    RetryExhausted,
)
from .ratelimit import Emit, Limiter, RateLimitConfig
from .types import Completion, Event, EventKind

__all__ = [
    "BreakerConfig",
    "Clock",
    "FakeClock",
    "ModelPolicy",
    "Policy",
    "PolicyConfig",
    "RetryConfig",
    "SystemClock",
    "expand_chain",
    "validate_fallbacks",
]

Call = Callable[[str, int], Awaitable[Completion]]
BreakerState = Literal["closed", "open", "half_open"]
_log = logging.getLogger(__name__)
_C = TypeVar("_C", bound=BaseModel)


# --------------------------------------------------------------------------------------- clocks


class Clock(Protocol):
    """Where the policy reads time and sleeps; injected so tests never wait for real."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Monotonic time and `asyncio.sleep`: the clock outside tests."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time: `sleep` returns without real waiting, moves `now()` and records the wait.

    Sleepers are woken in order of their wake-up time, a few loop turns after they ask, so
    concurrent sleeps overlap as they would in real time (two tasks sleeping 1 s each end at
    t+1, not t+2). `sleeps` lists every duration asked for; `advance` moves time by hand.
    """

    _IDLE_TURNS = 8  # loop turns given to runnable tasks before virtual time jumps forward

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._pump_loop: asyncio.AbstractEventLoop | None = None  # loop running _pump, if any

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.sleeps.append(seconds)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, self._seq, fut))
        self._seq += 1
        if self._pump_loop is not loop:  # not pumping yet, or a previous loop was closed
            self._pump_loop = loop
            loop.call_soon(self._pump, loop, self._IDLE_TURNS)
        await fut

    def _pump(self, loop: asyncio.AbstractEventLoop, turns: int) -> None:
        if turns > 0:  # let tasks that are about to sleep register first
            loop.call_soon(self._pump, loop, turns - 1)
            return
        if self._pump_loop is not loop:
            return  # superseded by a pump on a newer loop
        while self._sleepers and (
            self._sleepers[0][2].done() or self._sleepers[0][2].get_loop() is not loop
        ):
            heapq.heappop(self._sleepers)  # cancelled, or left over from a closed loop
        if not self._sleepers:
            self._pump_loop = None
            return
        wake_at, _, fut = heapq.heappop(self._sleepers)
        self._now = max(self._now, wake_at)
        fut.set_result(None)
        loop.call_soon(self._pump, loop, self._IDLE_TURNS)


# --------------------------------------------------------------------------------------- config


def _doc_config() -> ConfigDict:
    return ConfigDict(extra="forbid", use_attribute_docstrings=True)


class RetryConfig(BaseModel):
    """How often and how patiently one model is retried before the chain moves on."""

    model_config = _doc_config()

    max_attempts: int = Field(default=4, ge=1)
    """Attempts per model, the first included; 1 disables retries."""
    base_delay: float = Field(default=0.5, gt=0)
    """Backoff base in seconds: after attempt n the wait is uniform in [0, base * 2**(n-1)]
    (full jitter, so a grid of concurrent calls does not retry in lockstep)."""
    max_delay: float = Field(default=30.0, gt=0)
    """Cap on one jittered backoff wait, in seconds."""
    max_retry_after: float = Field(default=60.0, gt=0)
    """Longest server-requested wait (Retry-After, rate-limit reset) that is honoured; a longer
    one ends this model's retries at once so the fallback serves instead of idling."""
    retry_after_jitter: float = Field(default=0.5, ge=0)
    """Random extra on top of a server-requested wait, as a share of it (uniform in [0, share *
    wait]). Callers held back by one Retry-After then resume spread out, and the first new 429
    stops the rest before they are sent; resuming all at the named instant re-trips the limit
    at once (49% more wasted requests against a 20 req/s limit, bench/bench_resilience.py)."""


class BreakerConfig(BaseModel):
    """When a model's circuit opens, and for how long no request is sent to it."""

    model_config = _doc_config()

    enabled: bool = True
    """False keeps the breaker closed forever (still counted, never opens)."""
    failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failures that open the breaker."""
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    """Share of failed calls within `window` that opens the breaker..."""
    min_calls: int = Field(default=10, ge=1)
    """...once the window holds at least this many calls (a rate over 2 calls means nothing)."""
    window: float = Field(default=60.0, gt=0)
    """Sliding window for the failure rate, in seconds."""
    cooldown: float = Field(default=30.0, gt=0)
    """Seconds the breaker stays open before one probe request is let through."""
    count_rate_limits: bool = False
    """Count 429s as breaker failures. Off by default: a throttling model is busy, not broken,
    and Retry-After plus AIMD pace it; counted, 50 concurrent calls at a 30% 429 rate string 5
    "consecutive" failures together by chance and open the breaker on a healthy model
    (bench/bench_resilience.py). Turn on to shed a model that throttles without end."""


class ModelPolicy(BaseModel):
    """Overrides for one model or pattern; only the fields written replace the global ones."""

    model_config = _doc_config()

    retry: RetryConfig | None = None
    """Retry fields to override, e.g. {"max_attempts": 1} for a local model."""
    breaker: BreakerConfig | None = None
    """Breaker fields to override, e.g. {"cooldown": 5}."""


class PolicyConfig(BaseModel):
    """The whole policy. Model keys in `limits` and `per_model` are exact pinned ids or
    fnmatch patterns ("openai/*", "*"); the exact id wins, then the longest matching pattern."""

    model_config = _doc_config()

    retry: RetryConfig = Field(default_factory=RetryConfig)
    """Retry settings for every model without an override."""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    """Breaker settings for every model without an override."""
    limits: dict[str, RateLimitConfig] = Field(default_factory=dict)
    """Rate and concurrency limits per model id or pattern; "*" is the default."""
    per_model: dict[str, ModelPolicy] = Field(default_factory=dict)
    """Retry/breaker overrides per model id or pattern."""

    @model_validator(mode="after")
    def _no_empty_keys(self) -> PolicyConfig:
        if any(not key.strip() for key in (*self.limits, *self.per_model)):
            raise ValueError("a model key is empty; use a pinned model id or a pattern")
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, where: str = "policy") -> PolicyConfig:
        """Validate a `policy:` section (of labkit.yaml), naming the offending entry on error."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            if not isinstance(got, dict | list):
                msg += f" (got {got!r})"
            raise ConfigError(msg, where=_loc(where, err["loc"])) from None

    def for_model(self, model: str) -> tuple[RetryConfig, BreakerConfig, RateLimitConfig]:
        """The effective settings for one pinned model id."""
        retry, breaker = self.retry, self.breaker
        override = _lookup(self.per_model, model)
        if override is not None:
            retry = _overlay(retry, override.retry)
            breaker = _overlay(breaker, override.breaker)
        return retry, breaker, _lookup(self.limits, model) or RateLimitConfig()


def _overlay(base: _C, override: _C | None) -> _C:
    """`base` with the fields the override wrote (model_fields_set), not its defaults."""
    if override is None:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


def _loc(where: str, loc: tuple[int | str, ...]) -> str:
    out = where
    for part in loc:
        is_name = isinstance(part, str) and part.isidentifier()
        out += f".{part}" if is_name else f"[{part!r}]"
    return out


def _lookup(table: Mapping[str, Any], model: str) -> Any:
    if model in table:
        return table[model]
    patterns = [p for p in table if fnmatch.fnmatchcase(model, p)]
    return table[max(patterns, key=len)] if patterns else None


def validate_fallbacks(fallbacks: Mapping[str, list[str]], known: Callable[[str], bool]) -> None:
    """Reject unknown fallback models and cycles (a -> b -> a), naming `fallbacks.<name>`.

    Keys and targets must be in one namespace (aliases or pinned ids, as the registry keeps them).
    """
    for name, targets in fallbacks.items():
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ConfigError("must be a list of model names", where=f"fallbacks.{name}")
        for target in targets:
            if target == name:
                raise ConfigError(f"fallback cycle: {name} -> {name}", where=f"fallbacks.{name}")
            if not known(target):
                raise ConfigError(
                    f"unknown fallback model {target!r}; register it under `models:` first",
                    where=f"fallbacks.{name}",
                )
    color: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        color[node] = 1
        path.append(node)
        for nxt in fallbacks.get(node, []):
            if color.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise ConfigError(f"fallback cycle: {' -> '.join(cycle)}", where=f"fallbacks.{nxt}")
            if nxt not in color:
                visit(nxt, path)
        path.pop()
        color[node] = 2

    for name in sorted(fallbacks):
        if name not in color:
            visit(name, [])


def expand_chain(name: str, fallbacks: Mapping[str, list[str]]) -> list[str]:
    """`name` then its fallbacks, breadth first (a model's own list before its fallbacks' ones),
    each model once: {"a": ["b", "c"], "b": ["d"]} gives [a, b, c, d]."""
    chain, queue = [name], deque([name])
    while queue:
        for nxt in fallbacks.get(queue.popleft(), []):
            if nxt not in chain:
                chain.append(nxt)
                queue.append(nxt)
    return chain


# ------------------------------------------------------------------------------ circuit breaker


class _Breaker:
    """State machine of the module docstring. Methods never await, so no lock is needed."""

    def __init__(self, model: str, cfg: BreakerConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.state: BreakerState = "closed"
        self.failures = 0  # consecutive
        self.outcomes: deque[tuple[float, bool]] = deque()  # (time, failed) within the window
        self.window_failures = 0  # failed entries of `outcomes`, kept so reads never iterate
        self.opened_at: float | None = None
        self.probe_in_flight = False
        self.opens = 0

    def _move(self, to: BreakerState, reason: str, now: float, emit: Emit) -> None:
        detail: dict[str, Any] = {
            "from": self.state,
            "to": to,
            "reason": reason,
            "failures": self.failures,
        }
        self.state = to
        if to == "open":
            self.opened_at, self.opens = now, self.opens + 1
        elif to == "closed":
            self.opened_at, self.failures = None, 0
        if to != "half_open":
            self.outcomes.clear()  # a fresh window after every open and every recovery
            self.window_failures = 0
        emit(Event(kind=EventKind.BREAKER, model=self.model, detail=detail))

    def retry_in(self, now: float) -> float:
        if self.state != "open" or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cfg.cooldown - now)

    def acquire(self, now: float, emit: Emit) -> bool | None:
        """None: no request may be sent; True: the caller is the half-open probe; False: normal."""
        if self.state == "open":
            if self.retry_in(now) > 0:
                return None
            self._move("half_open", "cooldown elapsed", now, emit)
        if self.state == "half_open":
            if self.probe_in_flight:
                return None
            self.probe_in_flight = True
            return True
        return False

    def settle(self, probe: bool, verdict: str, now: float, emit: Emit) -> None:
        """Record an attempt's outcome: 'success', 'failure' or 'neutral' (not the model's fault)."""
        if probe:
            self.probe_in_flight = False
            if verdict == "success":
                self._move("closed", "probe succeeded", now, emit)
            elif verdict == "failure":
                self._move("open", "probe failed", now, emit)
            return  # neutral: stay half-open, the next caller probes
        if verdict == "neutral" or self.state != "closed":
            return  # late results of calls sent before the breaker opened change nothing
        failed = verdict == "failure"
        self.failures = self.failures + 1 if failed else 0
        self.outcomes.append((now, failed))
        self.window_failures += failed
        while self.outcomes and self.outcomes[0][0] <= now - self.cfg.window:
            self.window_failures -= self.outcomes.popleft()[1]
        if not failed or not self.cfg.enabled:
            return
        if self.failures >= self.cfg.failure_threshold:
            self._move("open", f"{self.failures} consecutive failures", now, emit)
            return
        rate = self._rate()
        if len(self.outcomes) >= self.cfg.min_calls and rate >= self.cfg.failure_rate:
            self._move(
                "open", f"failure rate {rate:.0%} over {len(self.outcomes)} calls", now, emit
            )

    def _rate(self) -> float:
        calls = len(self.outcomes)
        return self.window_failures / calls if calls else 0.0

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state,
            "failures": self.failures,
            "opened_at": self.opened_at,
            "retry_in": self.retry_in(now),
            "probe_in_flight": self.probe_in_flight,
            "window_calls": len(self.outcomes),
            "failure_rate": self._rate(),
            "opens": self.opens,
        }


class _ModelState:
    def __init__(self, model: str, config: PolicyConfig, now: float) -> None:
        self.model = model
        self.retry, breaker, limits = config.for_model(model)
        self.breaker = _Breaker(model, breaker)
        self.limiter = Limiter(model, limits, now)


# --------------------------------------------------------------------------------------- policy


class Policy:
    """Retries, breakers, rate limits and fallbacks around one backend attempt function.

    One instance per client, shared by every concurrent call so limits and breakers see all
    traffic to a model. `rng` makes the jitter reproducible in tests.
    """

    def __init__(
        self,
        config: PolicyConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or PolicyConfig()
        self.clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._models: dict[str, _ModelState] = {}
        self._table_lock = threading.Lock()  # guards only the dict, never held across awaits

    def _state(self, model: str) -> _ModelState:
        with self._table_lock:
            state = self._models.get(model)
            if state is None:
                state = self._models[model] = _ModelState(model, self.config, self.clock.now())
            return state

    def breaker_states(self) -> dict[str, dict[str, Any]]:
        """model -> state, failures, opened_at, retry_in, ...: a cheap snapshot, any time."""
        now = self.clock.now()
        return {s.model: s.breaker.snapshot(now) for s in self._states()}

    def breaker_state(self, model: str) -> str | None:
        """One model's breaker state, or None before its first call (each trace row carries
        it: cheaper than a whole `breaker_states()` snapshot per call)."""
        with self._table_lock:
            state = self._models.get(model)
        return None if state is None else state.breaker.state

    def limiter_states(self) -> dict[str, dict[str, Any]]:
        """model -> concurrency limit, in flight, queued, rpm/tpm and what is available now."""
        now = self.clock.now()
        return {s.model: s.limiter.snapshot(now) for s in self._states()}

    def _states(self) -> list[_ModelState]:
        with self._table_lock:
            return list(self._models.values())

    def backoff(self, retry: RetryConfig, attempt: int) -> float:
        """Full-jitter wait after failed attempt number `attempt` (1-based)."""
        cap = min(retry.max_delay, retry.base_delay * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, cap)

    def _spread(self, retry: RetryConfig, asked: float) -> float:
        """A server-requested wait plus its jitter (see RetryConfig.retry_after_jitter)."""
        return asked + self._rng.uniform(0.0, asked * retry.retry_after_jitter)

    async def execute(
        self, chain: list[str], call: Call, *, emit: Emit, estimated_tokens: int = 0
    ) -> tuple[Completion, int]:
        """Serve one request from the first model of `chain` that can; see the module docstring.

        Returns (completion, attempts made across the chain). Raises the non-retryable
        `ProviderError` as is; for a one-model chain `RetryExhausted`, `CircuitOpen` or
        `ContextOverflow`; for a longer chain `AllModelsFailed` (model -> its last error).
        """
        models = list(dict.fromkeys(chain))
        if not models:
            raise InputError("the model chain is empty; pass at least one pinned model id")
        emit = _guarded(emit)
        errors: dict[str, BaseException] = {}
        total = 0
        for i, model in enumerate(models):
            done, error, reason, attempts = await self._serve(
                self._state(model), call, emit, estimated_tokens
            )
            total += attempts
            if done is not None:
                if i > 0:
                    done.fallback_from = models[0]
                done.attempts = total
                return done, total
            assert error is not None
            errors[model] = error
            # to=None: the chain ran out and the call raises. Emitted even then, so a call that
            # sent no request at all (breaker open, held off by Retry-After) is still traced.
            nxt = models[i + 1] if i + 1 < len(models) else None
            detail: dict[str, Any] = {"from": model, "to": nxt, "reason": reason}
            detail |= {"error": type(error).__name__, "attempts": attempts}
            emit(Event(kind=EventKind.FALLBACK, model=model, detail=detail))
        if len(models) > 1:
            raise AllModelsFailed(errors)
        error = errors[models[0]]
        if isinstance(error, CircuitOpen | ContextOverflow):
            raise error
        raise RetryExhausted(models[0], total, error)

    async def _serve(
        self, st: _ModelState, call: Call, emit: Emit, estimated_tokens: int
    ) -> tuple[Completion | None, BaseException | None, str, int]:
        """Try one model until it answers or must be left: (completion, error, reason, attempts)."""
        model, retry = st.model, st.retry
        last: ProviderError | None = None
        attempts = 0
        for attempt in range(1, retry.max_attempts + 1):
            held = st.limiter.blocked_until - self.clock.now()
            if held > retry.max_retry_after:  # the provider asked every caller to stay away
                why = f"held back {held:.1f}s by the provider's Retry-After"
                return (
                    None,
                    last or RateLimited(why, model=model, retry_after=held),
                    "rate_limited",
                    attempts,
                )
            probe = st.breaker.acquire(self.clock.now(), emit)
            if probe is None:
                error = last or CircuitOpen(model, st.breaker.retry_in(self.clock.now()))
                return None, error, "circuit_open", attempts
            attempts += 1
            verdict = "neutral"
            try:
                done = await self._attempt(st, call, attempt, estimated_tokens, emit)
                verdict = "success"
                return done, None, "", attempts
            except ContextOverflow as exc:
                return None, exc, "context_overflow", attempts
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                last = exc
                throttled = isinstance(exc, RateLimited) and not st.breaker.cfg.count_rate_limits
                verdict = "neutral" if throttled else "failure"
            finally:
                st.breaker.settle(probe, verdict, self.clock.now(), emit)
            if attempt == retry.max_attempts:
                break
            jittered = self.backoff(retry, attempt)
            asked = last.retry_after
            if asked is not None and asked > retry.max_retry_after:
                return None, last, "retry_after_too_long", attempts
            if asked is not None and asked >= jittered:
                wait, why = self._spread(retry, asked), "retry_after"
            else:
                wait, why = jittered, "backoff"
            detail: dict[str, Any] = {
                "attempt": attempt,
                "error": type(last).__name__,
                "message": str(last),
            }
            detail |= {"status": last.status, "retry_after": asked, "wait_s": wait}
            emit(Event(kind=EventKind.RETRY, model=model, detail=detail))
            emit(Event(kind=EventKind.WAIT, model=model, detail={"seconds": wait, "reason": why}))
            await self.clock.sleep(wait)
        assert last is not None
        return None, last, "retries_exhausted", attempts

    async def _attempt(
        self, st: _ModelState, call: Call, attempt: int, estimated_tokens: int, emit: Emit
    ) -> Completion:
        """One paced attempt: concurrency slot, then buckets, then the call itself."""
        lim = st.limiter
        epoch = await lim.acquire(emit)
        try:
            wait, why = lim.pace_wait(estimated_tokens, self.clock.now())
            if why == "retry_after" and wait > 0:
                wait = self._spread(st.retry, wait)
            if wait > 0:
                delay = {"action": "delay", "reason": why, "wait_s": wait}
                emit(Event(kind=EventKind.RATE_LIMIT, model=st.model, detail=delay))
                emit(
                    Event(
                        kind=EventKind.WAIT, model=st.model, detail={"seconds": wait, "reason": why}
                    )
                )
                try:
                    await self.clock.sleep(wait)
                except asyncio.CancelledError:
                    lim.refund(estimated_tokens, self.clock.now())  # nothing was sent
                    raise
            try:
                done = await call(st.model, attempt)
            except RateLimited as exc:
                lim.on_rate_limited(epoch, exc.retry_after, self.clock.now(), emit)
                raise
            except ContextOverflow:
                lim.refund(estimated_tokens, self.clock.now())  # refused before sending
                raise
            lim.on_success(epoch, estimated_tokens, done.usage.total_tokens, self.clock.now(), emit)
            return done
        finally:
            lim.release()


def _guarded(emit: Emit) -> Emit:
    """A failing trace sink must not leave a breaker or a limiter half-way through a change."""

    def safe(event: Event) -> None:
        try:
            emit(event)
        except Exception:
            _log.exception("emit(%s event) failed; the policy carries on", event.kind.value)

    return safe
