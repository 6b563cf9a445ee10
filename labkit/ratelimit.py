"""Client-side pacing of one model: concurrency cap with AIMD, RPM/TPM token buckets, and the
provider's own Retry-After / rate-limit-reset headers.

Split from `labkit.resilience` (which re-exports the public names) so the policy module holds
the decisions (retry, breaker, fallback) and this one the accounting they consult.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .types import Event, EventKind

__all__ = ["Emit", "Limiter", "RateLimitConfig", "TokenBucket", "retry_after_from_headers"]

Emit = Callable[[Event], None]


# --------------------------------------------------------------------------------------- config


class RateLimitConfig(BaseModel):
    """Client-side pacing of one model (or a pattern of models); every limit is optional."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    rpm: float | None = Field(default=None, gt=0)
    """Requests per minute (token bucket); None for no limit."""
    tpm: float | None = Field(default=None, gt=0)
    """Tokens per minute (token bucket charged with the call's estimate, then corrected by the
    usage the provider reports); None for no limit."""
    burst_seconds: float = Field(default=60.0, gt=0, le=60)
    """Bucket capacity, in seconds of allowance: 60 lets a full minute's quota go at once, lower
    values smooth bursts (providers often enforce per-second slices of their minute limits)."""
    concurrency: int | None = Field(default=None, gt=0)
    """Most calls in flight at once, and the ceiling AIMD recovers to; None for no cap until a
    429 arrives (AIMD then caps at a share of what was in flight)."""
    min_concurrency: int = Field(default=1, ge=1)
    """Floor of the AIMD-reduced concurrency limit."""
    aimd: bool = True
    """Adapt the concurrency limit to 429s: multiplicative decrease, additive increase."""
    aimd_decrease: float = Field(default=0.5, gt=0, lt=1)
    """Factor applied to the limit on congestion (once per window, not once per 429)."""
    aimd_threshold: float = Field(default=0.5, gt=0, le=1)
    """Share of a window's calls refused with 429 that counts as congestion. Below it the model
    is busy, not overloaded by us: Retry-After paces it and the limit stays. Cutting on every
    429 instead collapses the limit to `min_concurrency` under a steady 30% of 429s (5.8x the
    no-fault wall time in bench/bench_resilience.py, with no fewer 429s)."""
    aimd_min_calls: int = Field(default=30, ge=1)
    """Fewest outcomes a window holds before it is judged (and at least as many as the limit, or
    the peak in flight while uncapped). 30 tells a steady 30% of 429s from a majority about 97%
    of the time; with 10, chance majorities ratchet the limit down to a handful."""
    aimd_increase: int = Field(default=1, ge=1)
    """Added to the limit after each full window of successes (as many as the limit)."""

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> RateLimitConfig:
        if self.concurrency is not None and self.min_concurrency > self.concurrency:
            raise ValueError(
                f"min_concurrency={self.min_concurrency} is above concurrency={self.concurrency}"
            )
        return self


# ------------------------------------------------------------------------------ header parsing

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|h|m|s))+")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: str) -> float | None:
    """'20', '1.5', '20ms', '1s', '6m0s', '1h2m3.5s' -> seconds (Go duration syntax, OpenAI's)."""
    text = value.strip().lower()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def retry_after_from_headers(
    headers: Mapping[str, str], *, now: float | None = None
) -> float | None:
    """Seconds the provider asked us to wait, or None when its headers do not say.

    Precedence: `retry-after-ms`; `retry-after` (seconds or an HTTP-date, measured against
    `now`, the wall clock by default); then the rate-limit reset headers
    (`x-ratelimit-reset-requests` / `-tokens`, `x-ratelimit-reset`): the longest reset among
    the limits whose `x-ratelimit-remaining-*` is 0, or, when none says so, the shortest reset
    (a repeated 429 brings fresh headers, so guessing short costs one attempt, not minutes).
    """
    h = {k.lower(): str(v) for k, v in headers.items()}
    ms = _duration(h.get("retry-after-ms", "-"))
    if ms is not None:
        return ms / 1000.0
    if "retry-after" in h:
        seconds = _duration(h["retry-after"])
        if seconds is not None:
            return seconds
        try:
            when = email.utils.parsedate_to_datetime(h["retry-after"])
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    resets: dict[str, float] = {}
    for kind in ("requests", "tokens", ""):
        key = f"x-ratelimit-reset-{kind}" if kind else "x-ratelimit-reset"
        seconds = _duration(h[key]) if key in h else None
        if seconds is not None:
            resets[kind] = seconds
    if not resets:
        return None
    exhausted = [
        s for kind, s in resets.items() if _is_zero(h.get(f"x-ratelimit-remaining-{kind}"))
    ]
    return max(exhausted) if exhausted else min(resets.values())


def _is_zero(value: str | None) -> bool:
    try:
        return value is not None and float(value) <= 0
    except ValueError:
        return False


# ------------------------------------------------------------------------------ rate limiting


class TokenBucket:
    """Token bucket with reservations: a caller takes what it needs at once (the level may go
    negative) and sleeps until the deficit refills, so waiters are served in arrival order
    without a lock or a polling loop."""

    def __init__(self, per_minute: float, burst_seconds: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = per_minute * burst_seconds / 60.0
        self.level = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def reserve(self, amount: float, now: float) -> float:
        """Take `amount`; return the seconds to wait before using it."""
        self._refill(now)
        self.level -= amount
        return max(0.0, -self.level / self.rate)

    def adjust(self, delta: float, now: float) -> None:
        """Give back (delta > 0) or charge more (delta < 0), e.g. estimate vs reported usage."""
        self._refill(now)
        self.level = min(self.capacity, self.level + delta)

    def available(self, now: float) -> float:
        return min(self.capacity, self.level + max(0.0, now - self.stamp) * self.rate)


class Limiter:
    """Concurrency cap with AIMD, RPM/TPM buckets and a Retry-After gate for one model."""

    def __init__(self, model: str, cfg: RateLimitConfig, now: float) -> None:
        self.model = model
        self.cfg = cfg
        self.limit: int | None = cfg.concurrency
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.epoch = 0  # bumped on each decrease; calls sent before it do not count after it
        self.successes = 0  # since the last limit change
        self.window_calls = 0  # outcomes (success or 429) of this epoch's calls being judged
        self.window_refused = 0  # the 429s among them
        self.peak = 0  # most calls in flight since the window opened
        self.decreases = 0
        self.increases = 0
        self.blocked_until = 0.0
        self.rpm = TokenBucket(cfg.rpm, cfg.burst_seconds, now) if cfg.rpm else None
        self.tpm = TokenBucket(cfg.tpm, cfg.burst_seconds, now) if cfg.tpm else None

    def _has_room(self) -> bool:
        return self.limit is None or self.in_flight < self.limit

    async def acquire(self, emit: Emit) -> int:
        """Take a concurrency slot (FIFO); return the AIMD epoch the call starts in."""
        if self._has_room() and not self.waiters:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            return self.epoch
        detail: dict[str, Any] = {"action": "queued", "reason": "concurrency", "limit": self.limit}
        detail |= {"in_flight": self.in_flight, "queued": len(self.waiters) + 1}
        emit(Event(kind=EventKind.RATE_LIMIT, model=self.model, detail=detail))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled in the same turn: pass the slot on
            elif fut in self.waiters:
                self.waiters.remove(fut)
            raise
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        while self.waiters and self._has_room():
            fut = self.waiters.popleft()
            if not fut.done():
                self.in_flight += 1  # counted here so a newcomer cannot jump the queue
                self.peak = max(self.peak, self.in_flight)
                fut.set_result(None)

    def pace_wait(self, tokens: int, now: float) -> tuple[float, str]:
        """Reserve one request and `tokens` tokens; return (seconds to wait, binding limit)."""
        waits = {"retry_after": max(0.0, self.blocked_until - now)}
        if self.rpm is not None:
            waits["rpm"] = self.rpm.reserve(1, now)
        if self.tpm is not None:
            waits["tpm"] = self.tpm.reserve(tokens, now)
        reason = max(waits, key=lambda k: waits[k])
        return waits[reason], reason

    def refund(self, tokens: int, now: float) -> None:
        if self.rpm is not None:
            self.rpm.adjust(1, now)
        if self.tpm is not None:
            self.tpm.adjust(tokens, now)

    def on_success(self, epoch: int, estimated: int, actual: int, now: float, emit: Emit) -> None:
        if self.tpm is not None and actual > 0:
            self.tpm.adjust(estimated - actual, now)
        if not self.cfg.aimd:
            return
        self._judge(epoch, refused=False, emit=emit)
        if self.limit is None:
            return
        self.successes += 1
        ceiling = self.cfg.concurrency or math.inf
        if self.successes >= self.limit and self.limit < ceiling:
            old, self.limit = self.limit, int(min(ceiling, self.limit + self.cfg.aimd_increase))
            self.successes = 0
            self.increases += 1
            self._emit_change(emit, "increase", old, "a window of successes")
            self._grant()

    def on_rate_limited(
        self, epoch: int, retry_after: float | None, now: float, emit: Emit
    ) -> None:
        if retry_after:
            self.blocked_until = max(self.blocked_until, now + retry_after)
        if self.cfg.aimd:
            self._judge(epoch, refused=True, emit=emit)

    def _judge(self, epoch: int, *, refused: bool, emit: Emit) -> None:
        """Count one outcome; once the window is full, cut the limit if enough were refused."""
        if epoch != self.epoch:
            return  # sent before the last decrease: it says nothing about the new limit
        self.window_calls += 1
        self.window_refused += refused
        size = max(self.cfg.aimd_min_calls, self.limit if self.limit is not None else self.peak)
        if self.window_calls < size:
            return
        share = self.window_refused / self.window_calls
        base = self.limit if self.limit is not None else self.peak
        self.window_calls = self.window_refused = 0
        self.peak = self.in_flight
        if share < self.cfg.aimd_threshold:
            return
        new = max(self.cfg.min_concurrency, int(base * self.cfg.aimd_decrease))
        self.epoch += 1
        if self.limit is not None and new >= self.limit:
            return
        old, self.limit = self.limit, new
        self.successes = 0
        self.decreases += 1
        self._emit_change(emit, "decrease", old, f"{share:.0%} of {size} calls rate limited")

    def _emit_change(self, emit: Emit, action: str, old: int | None, reason: str) -> None:
        detail: dict[str, Any] = {"action": action, "reason": reason, "from": old, "to": self.limit}
        detail["in_flight"] = self.in_flight
        emit(Event(kind=EventKind.RATE_LIMIT, model=self.model, detail=detail))

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "concurrency_limit": self.limit,
            "in_flight": self.in_flight,
            "queued": len(self.waiters),
            "rpm": self.cfg.rpm,
            "tpm": self.cfg.tpm,
            "rpm_available": self.rpm.available(now) if self.rpm else None,
            "tpm_available": self.tpm.available(now) if self.tpm else None,
            "blocked_for": max(0.0, self.blocked_until - now),
            "aimd_decreases": self.decreases,
            "aimd_increases": self.increases,
        }
