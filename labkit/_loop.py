"""The private event loop a `Client` runs its calls on: one daemon thread per client, so a
notebook's own loop (and its kernel) stays free while a grid runs."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from typing import Any

__all__ = ["LoopThread"]


class LoopThread:
    """A private event loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="labkit-loop", daemon=True
        )
        self.thread.start()
        # The default client is never closed by hand: at exit, finish the loop's async
        # generators (pooled HTTP sessions close in theirs) so nothing warns "unclosed".
        atexit.register(self.close)

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self, timeout: float = 5.0) -> None:
        """Finish async generators, stop the loop, wait for its thread, then close it: a loop
        left open holds its self-pipe sockets until garbage collection and warns then, far
        from the cause."""
        if self.loop.is_closed():
            return
        inside = threading.current_thread() is self.thread
        if not inside and self.loop.is_running():
            with contextlib.suppress(Exception):
                self.submit(self.loop.shutdown_asyncgens()).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if inside:
            return  # closed from inside the loop: it stops once this callback returns
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()
