"""Helper processes that die with their owner: the local model worker, the OTLP exporter.

Owner side (`popen_owned`): `python -m <module> ... --parent <pid>` with labkit's own folder
first on PYTHONPATH (the child imports the same labkit as the caller), stdin a pipe only the
owner holds, and its own session, so a Ctrl-C or a Jupyter interrupt of the owner does not
reach it. Call it from a thread that lives as long as the child: PR_SET_PDEATHSIG fires when
the thread that forked the child ends, not only the process.

Child side (`die_with_parent`): asks Linux for SIGKILL when the owner dies (covers a SIGKILLed
owner) and, where stdin is only a lifeline, exits when it closes (EOF: the owner closed it or
died). A child reading data from stdin passes `watch_stdin=False` and ends at its EOF itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["die_with_parent", "popen_owned", "signal_name"]


def popen_owned(
    module: str,
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `python -m module *args --parent <this pid>`; `env` defaults to this process's."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", module, *args, "--parent", str(os.getpid())]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=env, start_new_session=True
    )


def die_with_parent(parent: int, *, watch_stdin: bool = True) -> None:
    """In the child: end when the owner `parent` dies (and, with `watch_stdin`, at stdin EOF)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the owner died before prctl took effect
        os._exit(0)
    if not watch_stdin:
        return

    def watch() -> None:
        with contextlib.suppress(Exception):
            sys.stdin.buffer.read()  # returns at EOF: the owner closed the pipe or died
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def signal_name(code: int | None) -> str | None:
    """The signal that ended a child, from its (negative) return code."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
