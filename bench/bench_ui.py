"""Benchmark: how interactive the notebook UI is, beside baselines measured in the same run.

1. Run -> first chart, cached 1,000-row grid (goal under 2 s). The experiment builder's Run on
   a grid whose every answer is already cached (a scripted backend primed it), timed until the
   first chart is in the output widget: the live chart of the rows done so far (drawn while the
   grid runs), or the final one when the grid finishes first; the final chart and every tab
   are timed too, and how much the live chart slows the grid. Baseline: the same grid run bare
   (`Experiment(...).run()`, no widgets) plus a bare `go.Figure(go.Bar(...))` of its success
   rates -- the floor any UI pays when it waits for the whole grid.
2. Compare-view filter update on a 10,000-row results frame (goal under 200 ms). Toggling the
   disagreements / failures / low-confidence filters redraws the listed rows. Baseline: the
   same filter as a bare pandas boolean mask on the same frame.
3. Item matrix on 1,000 items x 4 variants (goals: render under 1 s, filter under 200 ms).
   Render = pivot the results into one row per item (inputs, labels, every variant's answer,
   pass/fail, reasons, confidence, flags) and draw the first page. Filter = a disagreement /
   failure / confidence / search change redrawn. Baselines: a bare pandas pivot of the same
   frame (`pivot_table` of answers by item x variant) and a bare boolean mask on it.

Medians of `--repeat` runs (after a warm-up). Run: ``.venv/bin/python bench/bench_ui.py``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench_plots import median_time  # noqa: E402
from frames import make_results  # noqa: E402

GOAL_RUN_S = 2.0
GOAL_FILTER_S = 0.200
LABELS = ("positive", "negative", "neutral")


def _reply(request: Any) -> str:
    text = str(request.messages[-1]["content"])
    return json.dumps({"label": LABELS[sum(map(ord, text)) % 3], "label_confidence": 0.8})


def bench_run_to_chart(cells: int, repeat: int) -> None:
    import pandas as pd
    import plotly.graph_objects as go

    from labkit.client import Client
    from labkit.experiments import Experiment, stats
    from labkit.models import Registry
    from labkit.testing import FakeBackend
    from labkit.widgets import ExperimentBuilder

    items = cells // 2
    rows = pd.DataFrame(
        {
            "id": [f"t-{i:05d}" for i in range(items)],
            "text": [
                f"review number {i}: it {'works' if i % 3 else 'broke'}" for i in range(items)
            ],
            "expected": [{"label": LABELS[i % 3]} for i in range(items)],
        }
    )
    prompts = {"plain": "Label: {{text}}", "polite": "Please label this review: {{text}}"}
    schema = {"label": list(LABELS)}
    with tempfile.TemporaryDirectory() as tmp:
        client = Client(registry=Registry(), cache_dir=f"{tmp}/cache", traces=f"{tmp}/t.db")
        client.add_backend("fake", FakeBackend(_reply))
        kw: dict[str, Any] = {"schema": schema, "params": {"max_tokens": 16}, "client": client}
        primed = Experiment(rows, prompts, ["fake/m"], **kw).run(progress=False)
        assert len(primed.df) == cells

        builder = ExperimentBuilder(
            client, dataset=rows, prompts=prompts, models=["fake/m"], schema=schema,
            rows=0, max_tokens=16, concurrency=8,
        )  # fmt: skip
        first_chart: list[float] = []
        final_chart: list[float] = []
        grid_done: list[float] = []
        everything: list[float] = []

        def ui_run() -> None:
            builder.run_clicked()
            builder.wait(120)
            assert builder.notice.kind in ("", "info"), builder.notice.text
            first_chart.append(builder.timings["first_chart"])
            final_chart.append(builder.timings["final_chart"])
            grid_done.append(builder.timings["results"])
            everything.append(builder.timings["all"])

        def bare_run() -> None:
            res = Experiment(rows, prompts, ["fake/m"], concurrency=8, **kw).run(progress=False)
            t = stats.success_rates(res.df)
            go.Figure(go.Bar(x=t["variant"], y=t["rate"]))

        def bare_figure() -> None:
            t = stats.success_rates(primed.df)
            go.Figure(go.Bar(x=t["variant"], y=t["rate"]))

        ui_run()  # warm-up (imports, first widget builds)
        for timed in (first_chart, final_chart, grid_done, everything):
            timed.clear()
        for _ in range(repeat):
            ui_run()
        ui = statistics.median(first_chart)
        final = statistics.median(final_chart)
        grid = statistics.median(grid_done)
        tabs = statistics.median(everything)
        bare = median_time(bare_run, repeat)
        fig = median_time(bare_figure, repeat)
        client.close()

    print(f"\n1) Run -> first chart, cached grid of {cells:,} calls (median of {repeat})")
    print(f"   {'builder Run -> first chart (live, so far)':44s} {ui * 1000:9.1f} ms   "
          f"goal < {GOAL_RUN_S:.1f} s")  # fmt: skip
    print(f"   {'builder Run -> grid done':44s} {grid * 1000:9.1f} ms")
    print(f"   {'builder Run -> final chart':44s} {final * 1000:9.1f} ms")
    print(f"   {'builder Run -> every tab filled':44s} {tabs * 1000:9.1f} ms")
    print(f"   {'baseline: bare Experiment.run + go.Figure':44s} {bare * 1000:9.1f} ms")
    print(f"   {'baseline: bare go.Figure of the rates':44s} {fig * 1000:9.1f} ms")
    print(f"   ratio first chart / bare run+figure: {ui / bare:.2f}x; final chart / bare: "
          f"{final / bare:.2f}x   {'OK' if ui < GOAL_RUN_S else 'ABOVE GOAL'}")  # fmt: skip


def bench_filters(rows: int, repeat: int) -> None:
    from labkit.widgets import CompareView

    df = make_results(n_items=rows // 4, seed=0)  # 4 variants -> `rows` rows
    a, b = "terse · small", "cot · large"
    view = CompareView(df, a=a, b=b)
    toggles = [
        {"disagreements": True},
        {"disagreements": False, "failures": True},
        {"failures": False, "low_confidence": 0.7},
        {"low_confidence": False},
    ]
    state = {"i": 0}

    def ui_filter() -> None:
        view.set_filters(**toggles[state["i"] % len(toggles)])  # type: ignore[arg-type]
        state["i"] += 1

    def bare_filter() -> None:
        pa = df[df["variant"] == a]
        pb = df[df["variant"] == b]
        failed = ~(pa["passed"].to_numpy() & pb["passed"].to_numpy())
        _ = pa[failed].head(40)

    def bare_mask() -> None:
        p = view.pairs
        assert p is not None
        _ = p[p["failed"] & p["disagree"]].head(40)

    ui = median_time(ui_filter, repeat * 4)
    bare = median_time(bare_filter, repeat * 4)
    mask = median_time(bare_mask, repeat * 4)
    start = time.perf_counter()
    view.set_pair("cot · small", "terse · large")
    pair = time.perf_counter() - start

    print(f"\n2) Compare view, {len(df):,}-row frame (median of {repeat * 4} filter changes)")
    print(f"   {'filter change -> rows redrawn':44s} {ui * 1000:9.1f} ms   "
          f"goal < {GOAL_FILTER_S * 1000:.0f} ms")  # fmt: skip
    print(f"   {'baseline: bare pandas filter of the frame':44s} {bare * 1000:9.1f} ms")
    print(f"   {'baseline: bare mask of the paired frame':44s} {mask * 1000:9.1f} ms")
    print(f"   {'(pick another pair: stats + charts, once)':44s} {pair * 1000:9.1f} ms")
    print(f"   ratio view / bare pandas filter: {ui / bare:.1f}x   "
          f"{'OK' if ui < GOAL_FILTER_S else 'ABOVE GOAL'}")  # fmt: skip


def bench_matrix(items: int, repeat: int) -> None:
    from labkit.widgets import ItemMatrix

    df = make_results(n_items=items, seed=1)  # 2 prompts x 2 models = 4 variants
    df["expected"] = [{"name": "x", "amount": int(i[-2:]) % 3} for i in df["item_id"]]
    holder: dict[str, Any] = {}

    def ui_render() -> None:
        holder["m"] = ItemMatrix(df)

    def bare_render() -> None:
        answers = df["parsed"].map(lambda p: json.dumps(p, sort_keys=True, default=str))
        wide = df.assign(a=answers).pivot_table(
            index="item_id", columns="variant", values="a", aggfunc="first"
        )
        holder["wide"] = wide
        _ = wide.head(50).to_html()

    render = median_time(ui_render, repeat)
    bare = median_time(bare_render, repeat)
    view = holder["m"]
    toggles = [
        {"disagreements": True},
        {"disagreements": False, "failures": True},
        {"failures": False, "low_confidence": 0.6},
        {"low_confidence": False, "search": "item-00"},
        {"search": "", "sort": "lowest confidence first"},
        {"sort": "item"},
    ]
    state = {"i": 0}

    def ui_filter() -> None:
        view.set_filters(**toggles[state["i"] % len(toggles)])
        state["i"] += 1

    def bare_filter() -> None:
        wide = holder["wide"]
        _ = wide[wide.ne(wide.iloc[:, 0], axis=0).any(axis=1)].head(50)

    flt = median_time(ui_filter, repeat * len(toggles))
    bare_flt = median_time(bare_filter, repeat * len(toggles))
    n_var = df["variant"].nunique()
    print(f"\n3) Item matrix, {items:,} items x {n_var} variants ({len(df):,} rows)")
    print(
        f"   {'render (pivot + flags + first page)':44s} {render * 1000:9.1f} ms   goal < 1000 ms"
    )
    print(f"   {'baseline: bare pandas pivot + to_html':44s} {bare * 1000:9.1f} ms")
    print(f"   {'filter / search / sort change':44s} {flt * 1000:9.1f} ms   goal < 200 ms")
    print(f"   {'baseline: bare pandas mask of the pivot':44s} {bare_flt * 1000:9.1f} ms")
    print(f"   render {'OK' if render < 1.0 else 'ABOVE GOAL'} ({render / bare:.1f}x bare); "
          f"filter {'OK' if flt < GOAL_FILTER_S else 'ABOVE GOAL'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000, help="calls in the cached grid")
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the compare frame")
    parser.add_argument("--items", type=int, default=1000, help="items of the item matrix")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["run", "compare", "matrix"], default=None)
    args = parser.parse_args()
    if args.only in (None, "run"):
        bench_run_to_chart(args.cells, args.repeat)
    if args.only in (None, "compare"):
        bench_filters(args.rows, args.repeat)
    if args.only in (None, "matrix"):
        bench_matrix(args.items, args.repeat)


if __name__ == "__main__":
    main()
