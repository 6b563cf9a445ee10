"""Benchmark: `labkit.monitor` on 1,000,000 trace rows, time and peak memory, beside a plain
pandas read of the same rows measured in the same run.

The trace database has the client's schema and indexes (`labkit.tracing`): one synthetic day
of 50,000 attempts (tests/synthetic_traces.py: errors, parse failures, repairs, per-field
confidences, latency, TTFT, tokens) copied in SQL to 20 days, with latency 40% higher from
day 15 on (a planted drift the monitor must flag). Each measurement runs in a fresh
subprocess: wall time and peak RSS (ru_maxrss, includes SQLite's own memory), then a second
run under tracemalloc for the peak Python heap.

Baseline: `pd.read_sql_query` of the columns the monitor reads, then a daily groupby of the
same counts (what you would write by hand, no tests). Goal: the monitor never holds the rows
(peak memory well under the baseline's) and takes no more than a few times its time.

Run: ``.venv/bin/python bench/bench_monitor.py [--rows 1000000] [--repeat 3] [--db path]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

DAY = 86400.0
DAYS = 20
DRIFT_DAY = 15
COLUMNS = (
    "ts, model, kind, status, parse_ok, repairs, meta, response, cache_hit, prompt_tokens, "
    "completion_tokens, cached_tokens, cost_usd, latency_s, ttft_s"
)


def build(path: Path, rows: int) -> None:
    """One synthetic day in Python, copied to DAYS days in SQL (with the drift)."""
    from synthetic_traces import write_traces

    from labkit.tracing import COLUMNS as ALL

    per_day = rows // DAYS
    start = (time.time() // DAY - DAYS) * DAY
    write_traces(path, windows=1, per_window=per_day, start=start, seed=1)
    names = list(ALL)
    cols = ", ".join(names)
    with sqlite3.connect(path) as conn:
        for day in range(1, DAYS):
            picked = []
            for n in names:
                if n in ("id", "call_id"):
                    picked.append(f"{n} || '-{day}'")
                elif n == "ts":
                    picked.append(f"ts + {day * DAY}")
                elif n == "latency_s" and day >= DRIFT_DAY:
                    picked.append("latency_s * 1.4")
                else:
                    picked.append(n)
            conn.execute(
                f"INSERT INTO traces ({cols}) SELECT {', '.join(picked)} FROM traces "
                f"WHERE ts < {start + DAY}"
            )
        conn.commit()


def run_monitor(db: str) -> dict[str, Any]:
    from labkit.monitoring import monitor

    report = monitor(db, window="day")
    flagged = sorted({str(w.date()) for w in report.shifts["window"]})
    metrics = sorted(set(report.shifts["metric"]))
    return {"rows": int(report.windows["calls"].sum()), "flagged_days": flagged, "metrics": metrics}


def run_pandas(db: str) -> dict[str, Any]:
    import pandas as pd

    with sqlite3.connect(db) as conn:
        df = pd.read_sql_query(f"SELECT {COLUMNS} FROM traces WHERE kind = 'attempt'", conn)
    df["day"] = (df["ts"] // DAY).astype("int64")
    df["error"] = df["status"] == "error"
    g = df.groupby(["day", "model"])
    out = g.agg(calls=("ts", "size"), errors=("error", "sum"), parsed=("parse_ok", "sum"),
                latency_p50=("latency_s", "median"), cost=("cost_usd", "sum"))  # fmt: skip
    return {"rows": int(out["calls"].sum())}


def child(which: str, db: str, trace: bool) -> None:
    fn = run_monitor if which == "monitor" else run_pandas
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    info = fn(db)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"time_s": elapsed, "heap_peak": peak, "maxrss": rss, **info}))


def measure(which: str, db: Path, trace: bool) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, "--db", str(db)] + (["--trace"] if trace else []),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def base_rss() -> int:
    """Peak RSS of a subprocess that imports labkit, pandas and numpy and does nothing."""
    code = "import resource, labkit, pandas, numpy, sqlite3; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    return int(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db", type=Path, help="reuse (or build) the trace database here")
    ap.add_argument("--child", choices=("monitor", "pandas"), help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, str(args.db), args.trace)
        return
    db = args.db or Path(tempfile.mkdtemp()) / "traces.db"
    if not db.exists():
        t = time.perf_counter()
        build(db, args.rows)
        print(f"built {db} in {time.perf_counter() - t:.1f} s")
    with sqlite3.connect(db) as conn:
        n = conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0]
    size = db.stat().st_size / 2**20
    print(f"{n:,} trace rows, {size:.0f} MiB on disk; {args.repeat} alternating rounds\n")
    runs: dict[str, list[dict[str, Any]]] = {"monitor": [], "pandas": []}
    for _ in range(args.repeat):
        for which in runs:
            runs[which].append(measure(which, db, trace=False))
    heap = {w: measure(w, db, trace=True)["heap_peak"] for w in runs}
    floor = base_rss()
    mib = 2**20
    print(f"(a process importing labkit, pandas and numpy peaks at {floor / mib:.0f} MiB RSS)\n")
    print("| what | time, median | peak RSS | peak Python heap |")
    print("|---|---|---|---|")
    med = {}
    for which, label in (("monitor", "labkit.monitor(db, window='day')"),
                         ("pandas", "pandas read_sql + daily groupby (baseline)")):  # fmt: skip
        t = statistics.median(r["time_s"] for r in runs[which])
        rss = statistics.median(r["maxrss"] for r in runs[which])
        med[which] = (t, rss, heap[which])
        print(f"| {label} | {t:.1f} s | {rss / mib:.0f} MiB | {heap[which] / mib:.0f} MiB |")
    t_ratio = med["monitor"][0] / med["pandas"][0]
    h_ratio = med["monitor"][2] / med["pandas"][2]
    print(f"\nmonitor / baseline: time x{t_ratio:.2f}, peak RSS {med['monitor'][1] / mib:.0f} vs "
          f"{med['pandas'][1] / mib:.0f} MiB, peak heap x{h_ratio:.3f}")  # fmt: skip
    last = runs["monitor"][-1]
    print(f"rows seen {last['rows']:,}; flagged days {last['flagged_days']} "
          f"(drift planted from day {DRIFT_DAY + 1} of {DAYS}); metrics {last['metrics']}")  # fmt: skip


if __name__ == "__main__":
    main()
