"""Benchmark: every labkit chart for a 10,000-row results frame, beside baselines from this run.

Goal: all charts together under 1.5 s. Baselines measured in the same process on the same
frame: a bare ``go.Figure(go.Bar(...))`` build (the floor any chart pays), a plain
``df.groupby().agg()`` (the floor any summary pays), and ``plotly.express.bar`` on the same
summary (to show why labkit builds figures with graph_objects).

Run: ``.venv/bin/python bench/bench_plots.py [--rows 10000] [--repeat 7]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from frames import make_results  # noqa: E402

from labkit.experiments import plots  # noqa: E402

GOAL_S = 1.5


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of `repeat` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    variants, repeats = 4, 5
    df = make_results(n_items=max(1, args.rows // (variants * repeats)), repeats=repeats, seed=0)
    print(
        f"results frame: {len(df):,} rows, {df['variant'].nunique()} variants, "
        f"{df['item_id'].nunique()} items x {repeats} repeats; median of {args.repeat} runs"
    )

    start = time.perf_counter()
    plots.all_charts(df)  # cold: imports plotly, loads the template
    cold = time.perf_counter() - start

    import plotly.express as px
    import plotly.graph_objects as go

    summary = df.groupby("variant", sort=False)["passed"].mean().reset_index()
    baselines = {
        "bare go.Figure(go.Bar)": lambda: go.Figure(
            go.Bar(x=summary["variant"], y=summary["passed"])
        ),
        "df.groupby().agg()": lambda: df.groupby("variant").agg(
            n=("passed", "size"),
            rate=("passed", "mean"),
            cost=("cost_usd", "sum"),
            latency=("latency_s", "median"),
        ),
        "px.bar (same summary)": lambda: px.bar(summary, x="variant", y="passed"),
    }
    base = {name: median_time(fn, args.repeat) for name, fn in baselines.items()}
    bare = base["bare go.Figure(go.Bar)"]
    agg = base["df.groupby().agg()"]

    charts: dict[str, Callable[[], Any]] = {
        "success_chart": lambda: plots.success_chart(df),
        "forest_chart": lambda: plots.forest_chart(df),
        "confidence_chart": lambda: plots.confidence_chart(df),
        "reliability_chart": lambda: plots.reliability_chart(df),
        "coverage_chart": lambda: plots.coverage_chart(df),
        "token_chart": lambda: plots.token_chart(df),
        "cost_chart": lambda: plots.cost_chart(df),
        "latency_chart": lambda: plots.latency_chart(df),
        "repair_chart": lambda: plots.repair_chart(df),
    }
    timed = {name: median_time(fn, args.repeat) for name, fn in charts.items()}
    together = median_time(lambda: plots.all_charts(df), args.repeat)

    width = 26
    print(f"\n{'baseline':<{width}} {'median ms':>10}")
    for name, t in base.items():
        print(f"{name:<{width}} {t * 1e3:>10.1f}")
    print(f"\n{'chart':<{width}} {'median ms':>10} {'x bare fig':>11} {'x groupby':>10}")
    for name, t in timed.items():
        print(f"{name:<{width}} {t * 1e3:>10.1f} {t / bare:>11.1f} {t / agg:>10.1f}")
    total = sum(timed.values())
    print(
        f"{'sum of charts':<{width}} {total * 1e3:>10.1f} {total / bare:>11.1f} {total / agg:>10.1f}"
    )
    print(
        f"{'all_charts(df)':<{width}} {together * 1e3:>10.1f} {together / bare:>11.1f} "
        f"{together / agg:>10.1f}"
    )
    print(f"{'all_charts(df), cold':<{width}} {cold * 1e3:>10.1f}   (first call: plotly import)")
    verdict = "within" if together < GOAL_S else "OVER"
    print(f"\ngoal: all charts < {GOAL_S:.1f} s -> {together:.3f} s warm, {verdict} goal")


if __name__ == "__main__":
    main()
