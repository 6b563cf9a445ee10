"""Issue 13 benchmark: a grid while another process holds the trace database's write lock.

The same 100-call grid (50 items x 2 prompts, one model, 10 ms latency, concurrency 20) against
the loopback OpenAI-compatible server (in a child process, as a provider would be remote), run
alternately, each on a fresh cache and trace database:

- baseline: nobody else touches the trace database;
- locked: a second process holds `BEGIN IMMEDIATE` on it for `--hold` seconds (15) from just
  before the grid starts: longer than the grid, so every trace write of the run meets the lock.

Goal: the locked grid's wall time within 1.25x of the baseline (trace writes wait in the
background writer, never in the event loop), and every attempt row in the database once the
lock is released. Before the fix, 200 calls took 13.8 s instead of 3.5 s under a 12 s lock.

Run: ``.venv/bin/python bench/bench_tracelock.py [--rounds 3] [--hold 15] [--items 50]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labkit.client import Client  # noqa: E402
from labkit.experiments.runner import Experiment  # noqa: E402
from labkit.models import Registry  # noqa: E402

MODEL = "openai/gpt-4o-mini-2024-07-18"
KEY_ENV = "LABKIT_BENCH_KEY"
GOAL = 1.25

SERVER = """
import sys
from labkit.testing import FakeOpenAIServer
with FakeOpenAIServer(reply="fine", latency=float(sys.argv[1]), max_lifetime=3600) as s:
    print(s.url, flush=True)
    sys.stdin.read()
"""
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def one_grid(url: str, items: int, hold: float | None) -> tuple[float, int, int]:
    """Wall time of the grid, attempt rows landed, calls made."""
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(models={MODEL: {"api_base": url, "api_key_env": KEY_ENV}})
        client = Client(registry=reg, cache_dir=f"{tmp}/cache", traces=f"{tmp}/traces.db")
        client.traces()  # create the database
        data = [{"id": f"i{i}", "text": str(i)} for i in range(items)]
        exp = Experiment(data, {"a": "A {{text}}", "b": "B {{text}}"}, [MODEL], client=client,
                         concurrency=20, params={"max_tokens": 5})  # fmt: skip
        locker = None
        if hold is not None:
            locker = subprocess.Popen(
                [sys.executable, "-c", LOCKER, f"{tmp}/traces.db", str(hold)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            start = time.perf_counter()
            res = exp.run(progress=False)
            wall = time.perf_counter() - start
            if locker is not None:
                locker.wait()
            rows = len(client.traces(run_id=exp.run_id, kind="attempt"))
        client.close()
        return wall, rows, int(res.df["error"].isna().sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold", type=float, default=15.0)
    ap.add_argument("--latency", type=float, default=0.01)
    args = ap.parse_args()
    os.environ.setdefault(KEY_ENV, "sk-bench-not-a-real-key")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    try:
        one_grid(url, 10, None)  # warm up imports and the connection pool
        free: list[float] = []
        held: list[float] = []
        calls = args.items * 2
        for r in range(args.rounds):
            order = [None, args.hold] if r % 2 == 0 else [args.hold, None]
            for hold in order:
                wall, rows, ok = one_grid(url, args.items, hold)
                (free if hold is None else held).append(wall)
                print(f"round {r + 1}: {'locked' if hold else 'free  '} {wall:6.2f} s, "
                      f"{ok}/{calls} calls ok, {rows}/{calls} attempt rows")  # fmt: skip
                assert rows == calls == ok, "rows or calls lost"
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
    f, h = statistics.median(free), statistics.median(held)
    print()
    print(f"| grid of {calls} calls, median of {args.rounds} | wall time |")
    print("|---|---|")
    print(f"| baseline: no other process | {f:.2f} s |")
    print(f"| a second process holds the write lock {args.hold:.0f} s | {h:.2f} s |")
    print(f"| ratio (goal <= {GOAL}) | {h / f:.2f} ({'met' if h / f <= GOAL else 'NOT met'}) |")


if __name__ == "__main__":
    main()
