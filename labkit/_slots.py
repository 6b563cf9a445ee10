"""Request slots: a grid's `concurrency` caps backend requests in flight, not whole calls.

A grid call is a request followed by local work: parse, trace row, cache commit, evaluators,
the row. When a worker held its concurrency slot through that work, the provider saw fewer
requests in flight than asked for, and each answer had to be committed at once (the next
request of that worker waited on it), so a busy grid made one SQLite commit per one or two
answers: the largest item of labkit's own CPU per call.

Within `request_slots(limit)` (set by the grid runner for its workers, inherited by the tasks
they start) a call holds a slot only while its backend request is out. Answers that finish
meanwhile wait up to `GROUP_WINDOW` to share one cache commit; each call still returns only
once its answer is on disk. The price: a SIGKILL loses the answers of that window as well as
the requests in flight (a resumed grid asks them again). A sequential grid (limit 1) keeps
committing each answer at once, so its next request never leaves before the previous answer
is stored.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["GROUP_WINDOW", "Slots", "current_slots", "request_slots"]

GROUP_WINDOW = 0.025
"""Seconds a grid's finished answer may wait for others to share its commit: ~15 answers per
commit at concurrency 50 and 100 ms latency (135 commits per 2,000 calls; 270 with 10 ms, and
one commit per ~2 answers without a window). A commit's fixed cost is several answers' worth."""


@dataclass(frozen=True)
class Slots:
    gate: asyncio.Semaphore
    """Held around each backend request."""
    batch: int
    """Answers waiting for a commit that make it happen at once, without the window."""


_SLOTS: contextvars.ContextVar[Slots | None] = contextvars.ContextVar(
    "labkit_request_slots", default=None
)


def current_slots() -> Slots | None:
    return _SLOTS.get()


@contextmanager
def request_slots(limit: int) -> Iterator[None]:
    """At most `limit` backend requests in flight from this context and the tasks started in
    it. Enter it on the event loop that runs the calls (the semaphore belongs to it)."""
    token = _SLOTS.set(Slots(asyncio.Semaphore(limit), batch=max(1, limit // 2)))
    try:
        yield
    finally:
        _SLOTS.reset(token)
