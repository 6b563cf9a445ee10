"""labkit.experiments.plots: each figure's content matches the labkit.experiments.stats numbers it draws."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from frames import make_results

from labkit.experiments import calibration as calib
from labkit.experiments import plots, stats

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return make_results(n_items=60, repeats=2, seed=3, skills=(-1.0, 0.0, 0.5, 3.0))


def annotation(fig: go.Figure) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


def test_import_does_not_load_plotly() -> None:
    code = "import sys, labkit.experiments.plots, labkit.experiments.stats; print('plotly' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_success_chart_matches_success_rates(df: pd.DataFrame) -> None:
    fig = plots.success_chart(df)
    t = stats.success_rates(df)
    (bar,) = fig.data
    assert bar.type == "bar" and list(bar.x) == t["variant"].tolist()
    assert np.allclose(bar.y, t["rate"])
    assert np.allclose(np.asarray(bar.y) + bar.error_y.array, t["ci_high"])
    assert np.allclose(np.asarray(bar.y) - bar.error_y.arrayminus, t["ci_low"])
    assert "95% Wilson" in fig.layout.title.text and fig.layout.yaxis.title.text == "success rate"
    assert "CI" in bar.hovertemplate


def test_forest_chart_all_pairs(df: pd.DataFrame) -> None:
    fig = plots.forest_chart(df, n_boot=300)
    t = stats.pairwise_comparisons(df, n_boot=300)
    assert all(tr.type == "scatter" for tr in fig.data)
    assert sum(len(tr.x) for tr in fig.data) == len(t) == 6
    points = {y: x for tr in fig.data for x, y in zip(tr.x, tr.y, strict=True)}
    for r in t.itertuples():
        assert points[f"{r.a} − {r.b}"] == pytest.approx(r.diff)
    # one verdict rule: a filled marker exactly where the interval excludes 0
    excludes = int(((t["ci_low"] > 0) | (t["ci_high"] < 0)).sum())
    sig = [tr for tr in fig.data if tr.name == "significant: the interval excludes 0"]
    assert excludes and sig and len(sig[0].x) == excludes
    assert all(tr.showlegend for tr in fig.data) and fig.layout.legend.title.text == "verdict"
    assert fig.layout.shapes[0].x0 == 0  # the no-difference line


def test_forest_chart_against_baseline(df: pd.DataFrame) -> None:
    base = df["variant"].iloc[0]
    fig = plots.forest_chart(df, baseline=base, n_boot=200)
    labels = [y for tr in fig.data for y in tr.y]
    assert len(labels) == 3 and all(label.endswith(f"− {base}") for label in labels)
    assert f"vs {base}" in fig.layout.title.text


def test_forest_chart_without_differences_has_no_significant_trace() -> None:
    same = make_results(n_items=30, skills=(0.0, 0.0, 0.0, 0.0), seed=5)
    same["passed"] = same.groupby("item_id")["passed"].transform("first")  # identical outcomes
    fig = plots.forest_chart(same, n_boot=100)
    assert [tr.name for tr in fig.data] == ["not significant: the interval includes 0"]
    assert fig.data[0].showlegend  # a single trace still gets its legend entry


def test_confidence_chart_splits_correct_and_wrong(df: pd.DataFrame) -> None:
    fig = plots.confidence_chart(df)
    cf = calib.confidence_frame(df).dropna(subset=["confidence"])
    assert {tr.type for tr in fig.data} == {"violin"}
    right = [tr for tr in fig.data if tr.legendgroup == "correct"]
    wrong = [tr for tr in fig.data if tr.legendgroup == "wrong"]
    assert sum(len(tr.y) for tr in right) == int((cf["correct"] == 1).sum())
    assert sum(len(tr.y) for tr in wrong) == int((cf["correct"] == 0).sum())
    assert {tr.side for tr in right} == {"positive"} and {tr.side for tr in wrong} == {"negative"}
    assert sum(bool(tr.showlegend) for tr in fig.data) == 2  # one legend entry per outcome
    per_field = plots.confidence_chart(df, field="amount")
    assert "amount" in per_field.layout.title.text and per_field.data


def test_reliability_chart_matches_calibration(df: pd.DataFrame) -> None:
    fig = plots.reliability_chart(df, field="date")
    cal = calib.calibration(df, field="date")
    diagonal, *groups = fig.data
    assert list(diagonal.x) == [0, 1] and list(diagonal.y) == [0, 1]
    assert len(groups) == len(cal.summary)
    for tr, (key, rel) in zip(groups, cal.reliability.groupby("variant", sort=False), strict=True):
        assert tr.name == f"{key} (ECE {cal.ece[key]:.3f})"
        assert np.allclose(tr.y, rel["accuracy"]) and np.allclose(tr.x, rel["mean_confidence"])
        assert np.allclose(np.asarray(tr.customdata)[:, 0], rel["count"])
        assert "rows" in tr.hovertemplate


def test_coverage_chart_matches_coverage_curve(df: pd.DataFrame) -> None:
    fig = plots.coverage_chart(df)
    curve = calib.coverage_curve(df)
    assert len(fig.data) == df["variant"].nunique()
    first = fig.data[0]
    ref = curve[(curve["variant"] == first.name) & (curve["n_accepted"] > 0)]
    assert set(np.round(first.y, 12)) <= set(np.round(ref["accuracy"], 12))
    assert max(first.x) == pytest.approx(ref["coverage"].max())


def test_token_chart_stacks_to_the_means(df: pd.DataFrame) -> None:
    fig = plots.token_chart(df)
    c = stats.cost_summary(df)
    assert [tr.type for tr in fig.data] == ["bar"] * 3 and fig.layout.barmode == "stack"
    stacked = np.sum([np.asarray(tr.y) for tr in fig.data], axis=0)
    assert np.allclose(stacked, c["prompt_tokens_mean"] + c["completion_tokens_mean"])
    cached = next(tr for tr in fig.data if tr.name == "prompt (cached)")
    assert np.allclose(cached.y, c["cached_tokens_mean"])


def test_cost_chart_matches_cost_summary(df: pd.DataFrame) -> None:
    fig = plots.cost_chart(df)
    c = stats.cost_summary(df)
    per_call, per_success = fig.data
    assert np.allclose(per_call.y, c["cost_per_item"])
    assert np.allclose(per_success.y, c["cost_per_success"])
    broke = df.assign(passed=df["passed"] & (df["variant"] != df["variant"].iloc[0]))
    fig = plots.cost_chart(broke)
    assert math.isnan(fig.data[1].y[0]) and not np.isnan(fig.data[1].y[1:]).any()
    assert f"no successes): {df['variant'].iloc[0]}" in annotation(fig)


def test_latency_chart_draws_summary_percentiles(df: pd.DataFrame) -> None:
    fig = plots.latency_chart(df)
    s = stats.latency_summary(df, percentiles=(1, 25, 50, 75, 99))
    latency, ttft = fig.data
    assert latency.type == ttft.type == "box" and fig.layout.boxmode == "group"
    assert np.allclose(latency.median, s["latency_p50"]) and np.allclose(
        latency.q3, s["latency_p75"]
    )
    assert np.allclose(ttft.upperfence, s["ttft_p99"])
    no_stream = plots.latency_chart(df.assign(ttft_s=np.nan))
    assert [tr.name for tr in no_stream.data] == ["total latency"]


def test_repair_chart_matches_breakdown(df: pd.DataFrame) -> None:
    fig = plots.repair_chart(df)
    r = stats.repair_breakdown(df)
    assert [tr.name for tr in fig.data] == list(pd.unique(r["step"]))
    for tr in fig.data:
        ref = r[r["step"] == tr.name]
        assert list(tr.x) == ref["variant"].tolist() and np.allclose(tr.y, ref["share"])
    none = plots.repair_chart(df.assign(repairs=[[] for _ in range(len(df))]))
    assert not none.data and "No answered row needed a repair" in annotation(none)


def test_all_charts_builds_every_figure(df: pd.DataFrame) -> None:
    figs = plots.all_charts(df)
    assert list(figs) == [
        "success", "forest", "confidence", "reliability", "coverage",
        "tokens", "cost", "latency", "repairs",
    ]  # fmt: skip
    for name, fig in figs.items():
        assert isinstance(fig, go.Figure) and fig.data, name
        assert fig.layout.title.text, name
    assert figs["success"].to_json()  # serialisable for the HTML report


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(make_results(n_items=2).iloc[:0], id="empty-with-columns"),
        pytest.param(pd.DataFrame(), id="no-columns"),
    ],
)
def test_empty_frames_give_annotated_figures(frame: pd.DataFrame) -> None:
    for name, fig in plots.all_charts(frame).items():
        assert not fig.data and "empty" in annotation(fig), name


def test_degenerate_frames_give_annotated_figures(df: pd.DataFrame) -> None:
    single = df[df["variant"] == df["variant"].iloc[0]]
    assert "fewer than two groups" in annotation(plots.forest_chart(single))
    errors = df.assign(
        passed=False, error="boom", confidence=np.nan, latency_s=np.nan, ttft_s=np.nan,
        cost_usd=np.nan, confidences=[{}] * len(df), field_correct=[{}] * len(df),
    )  # fmt: skip
    assert plots.success_chart(errors).data[0].y.tolist() == [0.0] * 4
    for fig in (
        plots.confidence_chart(errors),
        plots.reliability_chart(errors),
        plots.coverage_chart(errors),
        plots.confidence_chart(errors, field="date"),
    ):
        assert not fig.data and (
            "No row reports a confidence" in annotation(fig)
            or "No variant reports a confidence (terse · small," in annotation(fig)
        )
    assert "No row has a latency" in annotation(plots.latency_chart(errors))
    assert "No row has a known cost" in annotation(plots.cost_chart(errors))
    missing = plots.latency_chart(df.drop(columns="ttft_s"))
    assert "no ttft_s column" in annotation(missing)


def test_group_without_usable_rows_is_named_not_drawn(df: pd.DataFrame) -> None:
    v0 = df["variant"].iloc[0]
    partial = df.assign(passed=df["passed"].astype(object).where(df["variant"] != v0, None))
    fig = plots.success_chart(partial)
    assert v0 not in list(fig.data[0].x) and v0 in annotation(fig)
    assert not math.isnan(fig.data[0].y[0])


def test_charts_group_by_any_column(df: pd.DataFrame) -> None:
    figs = plots.all_charts(df, by="model")
    assert list(figs["success"].data[0].x) == ["small", "large"]
    assert sum(len(tr.x) for tr in figs["forest"].data) == 1
    numeric = df.assign(model=df["model"].map({"small": "4", "large": "8"}))
    fig = plots.success_chart(numeric, by="model")
    assert fig.layout.xaxis.type == "category" and list(fig.data[0].x) == ["4", "8"]


def test_cost_chart_says_free_for_a_local_model_and_reads_tiny_costs(df: pd.DataFrame) -> None:
    local = df.assign(cost_usd=0.0, model_id="local/smollm2-135m")
    fig = plots.cost_chart(local)
    assert not fig.data and "free: local model" in annotation(fig)
    tiny = plots.cost_chart(df.assign(cost_usd=df["cost_usd"] / 1000))
    assert tiny.layout.yaxis.tickformat == "$.2~g" and tiny.layout.yaxis.rangemode == "tozero"


def test_confidence_chart_names_variants_without_confidence(df: pd.DataFrame) -> None:
    quiet = df["variant"] == df["variant"].iloc[0]
    mixed = df.assign(confidence=df["confidence"].mask(quiet))
    fig = plots.confidence_chart(mixed)
    assert f"no confidence reported): {df['variant'].iloc[0]}" in annotation(fig)


def test_success_chart_shows_n_colours_and_the_baseline(df: pd.DataFrame) -> None:
    t = stats.success_rates(df)
    base = dict.fromkeys(t["variant"], 0.4)
    fig = plots.success_chart(df, baselines=base)
    bar, line = fig.data
    assert len(set(bar.marker.color)) == len(t)  # a colour per variant
    assert list(fig.layout.xaxis.ticktext) == [
        f"{v}<br>n={n}" for v, n in zip(t["variant"], t["n"], strict=True)
    ]
    assert list(line.y) == [0.4] * len(t) and "baseline" in line.name


def test_charts_name_the_model_that_answered_and_mark_model_loading(df: pd.DataFrame) -> None:
    v = df["variant"].iloc[0]
    local = df.assign(model="local/smollm2-135m", model_id="local/smollm2-135m", cache_hit=False)
    fell = local["variant"] == v
    local.loc[fell, "model"] = "openai/gpt-4o-2024-08-06"
    local.loc[fell, "model_id"] = "openai/gpt-4o-mini-2024-07-18"
    for fig in (plots.success_chart(local), plots.cost_chart(df.assign(model=local["model"],
                model_id=local["model_id"])), plots.token_chart(local)):  # fmt: skip
        ticks = " ".join(fig.layout.xaxis.ticktext)
        assert "answered by gpt-4o-mini-2024-07-18" in ticks and "n=" in ticks
    slow = local.copy()
    first = slow.index[slow["variant"] != v][0]
    slow.loc[first, "latency_s"] = 60.0  # the call that loaded the model
    fig = plots.latency_chart(slow)
    assert "First call includes loading the local model" in annotation(fig)
