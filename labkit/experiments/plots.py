"""Plotly figures from a results frame; each one draws numbers that `labkit.experiments.stats` computes.

Every function takes the results frame (contract in the `labkit.experiments.stats` docstring) and a
grouping column and returns a `plotly.graph_objects.Figure`. Plotly is imported inside the
functions so `import labkit` stays fast and production code never loads it. An empty or
degenerate frame (no rows, a missing column, nothing usable) gives a figure carrying an
explanatory annotation instead of raising, so a report always renders.

Figures are built from per-group summaries, not raw rows (the confidence violins are the one
exception), which keeps them quick to build and small inside an HTML report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import calibration as calib
from . import stats

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "all_charts",
    "confidence_chart",
    "cost_chart",
    "coverage_chart",
    "forest_chart",
    "latency_chart",
    "reliability_chart",
    "repair_chart",
    "success_chart",
    "token_chart",
]

_COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6")
_GOOD, _BAD, _MUTED = "#54A24B", "#E45756", "#9D9D9D"
# Group names are labels even when they look like numbers ("4", "2024-07-18"); auto-margin
# keeps long "prompt · model" names readable.
_CATEGORY: dict[str, Any] = {"type": "category", "automargin": True}


def _figure(
    data: Sequence[Any], title: str, x_title: str, y_title: str, **layout: Any
) -> go.Figure:
    """One place for the shared look: titled axes, left-aligned hover.

    No template is set, so the user's ``plotly.io.templates.default`` (light, dark, house
    style) applies; naming one here would also cost ~60 ms per figure to copy and validate.
    """
    import plotly.graph_objects as go

    base: dict[str, Any] = {
        "title": {"text": title},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}},
        "hoverlabel": {"align": "left"},
        "margin": {"l": 70, "r": 30, "t": 70, "b": 70},
        "legend": {"title": {"text": ""}},
        # A fixed height: with only autosize, a window resize while the chart sits in a
        # hidden tab measures a 0-px container and leaves the chart 0 px high.
        "height": 420,
    }
    for key in ("xaxis", "yaxis"):
        base[key].update(layout.pop(key, {}))
    if layout.get("annotations"):  # room for a footnote under the x-axis title
        base["margin"]["b"] = 110
    base.update(layout)
    return go.Figure(data=list(data), layout=base)


def _empty(title: str, message: str) -> go.Figure:
    """A titled figure saying why there is nothing to draw."""
    fig = _figure([], title, "", "")
    fig.update_layout(
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {"text": message, "showarrow": False, "xref": "paper", "yref": "paper"}
            | {"x": 0.5, "y": 0.5, "font": {"size": 14, "color": "#666"}}
        ],
    )
    return fig


def _guard(df: pd.DataFrame, title: str, columns: Sequence[str]) -> go.Figure | None:
    """The empty-frame / missing-column figure, or None when the chart can be drawn."""
    if len(df) == 0:
        return _empty(title, "The results frame is empty: run an experiment first.")
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        return _empty(title, f"The results frame has no {', '.join(missing)} column.")
    return None


def _answered_note(df: pd.DataFrame, by: str) -> dict[Any, str]:
    """group -> "⚠ k answered by <model>" where a fallback gave some of its answers."""
    from .diagnostics import answered_by_other

    other = answered_by_other(df)
    if not other.any():
        return {}
    out = {}
    for key, rows in df[other].groupby(by, sort=False, observed=True):
        models = ", ".join(str(m).split("/")[-1] for m in pd.unique(rows["model_id"]))
        out[key] = f"⚠ {len(rows)} answered by {models}"
    return out


def _x_axis(df: pd.DataFrame, by: str, keys: Sequence[Any], n: Sequence[Any]) -> dict[str, Any]:
    """Category axis whose tick labels carry n and, when a fallback answered, which model."""
    notes = _answered_note(df, by)
    x = [str(k) for k in keys]
    text = [
        f"{k}<br>n={int(c)}" + (f"<br>{notes[k]}" if k in notes else "")
        for k, c in zip(keys, n, strict=True)
    ]
    return _CATEGORY | {"tickmode": "array", "tickvals": x, "ticktext": text}


def _labels(values: pd.Series) -> list[str]:
    return [str(v) for v in values]


def _note(groups: Sequence[Any], why: str) -> list[dict[str, Any]]:
    """A footnote naming groups left out of a chart, so a missing bar is never a mystery."""
    if not len(groups):
        return []
    names = ", ".join(str(g) for g in groups)
    return [
        {"text": f"Not shown ({why}): {names}", "showarrow": False, "xref": "paper"}
        | {"yref": "paper", "x": 0, "y": -0.2, "xanchor": "left", "font": {"size": 11}}
    ]


# --------------------------------------------------------------------------- success


def success_chart(
    df: pd.DataFrame,
    by: str = "variant",
    alpha: float = 0.05,
    baselines: Mapping[Any, float] | None = None,
) -> go.Figure:
    """Success rate per group with Wilson interval bars (`stats.success_rates`).

    One colour per group, n in the axis labels, and, given `baselines` (group -> the
    majority-class rate, `labkit.experiments.diagnostics`), a marker for the rate a constant answer gets.
    A group some of whose answers came from a fallback model says so in its label.
    """
    import plotly.graph_objects as go

    level = f"{1 - alpha:.0%}"
    title = f"Success rate by {by} ({level} Wilson interval)"
    if (fig := _guard(df, title, [by, "passed"])) is not None:
        return fig
    t = stats.success_rates(df, by, alpha)
    shown = t[t["n"] > 0]
    if shown.empty:
        return _empty(title, "No usable rows: every row lacks a 'passed' value.")
    rate = shown["rate"].to_numpy()
    custom = shown[["n", "successes", "ci_low", "ci_high", "errors", "n_items"]].to_numpy(float)
    x = _labels(shown[by])
    bar = go.Bar(
        x=x,
        y=rate,
        marker_color=[_COLORS[i % len(_COLORS)] for i in range(len(shown))],
        error_y={
            "type": "data",
            "symmetric": False,
            "array": shown["ci_high"].to_numpy() - rate,
            "arrayminus": rate - shown["ci_low"].to_numpy(),
        },
        text=[f"{r:.0%}" for r in rate],
        textposition="outside",
        cliponaxis=False,
        customdata=custom,
        hovertemplate=(
            "<b>%{x}</b><br>success %{y:.1%}<br>"
            f"{level} CI %{{customdata[2]:.1%}} – %{{customdata[3]:.1%}}<br>"
            "%{customdata[1]:.0f} / %{customdata[0]:.0f} rows (%{customdata[5]:.0f} items)<br>"
            "%{customdata[4]:.0f} error rows<extra></extra>"
        ),
        name="success rate",
        showlegend=False,
    )
    traces: list[Any] = [bar]
    if baselines:
        base = [float(baselines.get(k, np.nan)) for k in shown[by]]
        if not all(np.isnan(base)):
            traces.append(
                go.Scatter(
                    x=x,
                    y=base,
                    mode="markers",
                    name="majority-class baseline (always the most common label)",
                    marker={"symbol": "line-ew-open", "size": 40, "color": "#333",
                            "line": {"width": 3}},
                    hovertemplate="<b>%{x}</b><br>baseline %{y:.1%}<extra></extra>",
                )
            )  # fmt: skip
    return _figure(
        traces,
        title,
        by,
        "success rate",
        xaxis=_x_axis(df, by, list(shown[by]), list(shown["n"])),
        yaxis={"range": [0, 1.12], "tickformat": ".0%"},
        showlegend=len(traces) > 1,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        annotations=_note(t.loc[t["n"] == 0, by].tolist(), "no usable rows"),
    )


def forest_chart(
    df: pd.DataFrame,
    by: str = "variant",
    baseline: Any = None,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> go.Figure:
    """Paired differences (a − b) with their intervals; the marker is the verdict.

    All pairs, or each group against `baseline` (positive = better than the baseline). With
    several pairs the intervals drawn are Holm-adjusted (`ci_low_holm` / `ci_high_holm`), so
    that the family of verdicts holds its level; with one pair they are the plain interval. The
    verdict follows `labkit.experiments.diagnostics.significant` (the drawn interval excludes 0), the same
    rule as the compare view's header, and the legend says so. Comparing models, answers a
    fallback model gave are left out (as `Results.compare` does) and the title says how many.
    """
    import plotly.graph_objects as go

    from .diagnostics import own_answers, significant

    what = f"vs {baseline}" if baseline is not None else "all pairs"
    title = (
        f"Paired difference in success rate, {what} ({1 - alpha:.0%} paired CI)<br><sup>"
        "paired: both sides answered the same items; hover for the p-value of the score test "
        "behind the interval, driven by the discordant items (one right, the other wrong)</sup>"
    )
    if (fig := _guard(df, title, [by, "item_id", "passed"])) is not None:
        return fig
    df, left_out = own_answers(df, pd.unique(df[by]), by)  # as Results.compare does
    if left_out:
        title += (
            f"<br><sup>{left_out} answers given by a fallback model left out: they are not the "
            "model's own</sup>"
        )
    t = stats.pairwise_comparisons(df, by, baseline, alpha=alpha, n_boot=n_boot, seed=seed)
    shown = t[t["n_items"] > 0]
    if shown.empty:
        why = "fewer than two groups" if t.empty else "no items answered by both sides of a pair"
        return _empty(title, f"Nothing to compare: {why}.")
    if len(shown) > 1:  # draw and decide on the Holm-adjusted intervals
        shown = shown.assign(ci_low=shown["ci_low_holm"], ci_high=shown["ci_high_holm"])
        title = title.replace("paired CI)", "paired CI, Holm-adjusted across pairs)")
        title += (
            "<br><sup>Holm-adjusted: each interval widened so that, over all these pairs, the "
            f"chance of any false 'significant' stays under {alpha:.0%}</sup>"
        )
    verdicts = np.array(
        [
            significant({"ci_low": lo, "ci_high": hi})
            for lo, hi in shown[["ci_low", "ci_high"]].to_numpy()
        ],
        dtype=bool,
    )
    traces = []
    for sig, name, color, symbol in (
        (True, "significant: the interval excludes 0", _BAD, "diamond"),
        (False, "not significant: the interval includes 0", _MUTED, "circle-open"),
    ):
        part = shown[verdicts == sig]
        if part.empty:
            continue
        diff = part["diff"].to_numpy()
        cols = ["ci_low", "ci_high", "p", "p_holm", "n_items", "a_only", "b_only"]
        traces.append(
            go.Scatter(
                x=diff,
                y=[f"{a} − {b}" for a, b in zip(part["a"], part["b"], strict=True)],
                mode="markers",
                name=name,
                showlegend=True,
                marker={"color": color, "symbol": symbol, "size": 11},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": part["ci_high"].to_numpy() - diff,
                    "arrayminus": diff - part["ci_low"].to_numpy(),
                    "color": color,
                },
                customdata=part[cols].to_numpy(float),
                hovertemplate=(
                    "<b>%{y}</b><br>difference %{x:+.1%}<br>"
                    "CI %{customdata[0]:+.1%} – %{customdata[1]:+.1%}<br>"
                    "p %{customdata[2]:.3g} (Holm-adjusted for several pairs "
                    "%{customdata[3]:.3g})<br>"
                    "%{customdata[4]:.0f} items; first better on %{customdata[5]:.0f}, "
                    "second on %{customdata[6]:.0f}<extra></extra>"
                ),
            )
        )
    order = [f"{a} − {b}" for a, b in zip(shown["a"], shown["b"], strict=True)]
    zero = {"type": "line", "x0": 0, "x1": 0, "yref": "paper", "y0": 0, "y1": 1}
    return _figure(
        traces,
        title,
        "difference in success rate (a − b)",
        "",
        xaxis={"tickformat": "+.0%", "zeroline": False},
        yaxis=_CATEGORY | {"categoryorder": "array", "categoryarray": order[::-1]},
        shapes=[zero | {"line": {"color": "#444", "dash": "dot"}}],
        height=max(340, 90 + 36 * len(order)),
        showlegend=True,
        legend={"title": {"text": "verdict"}, "orientation": "h", "y": 1.02, "yanchor": "bottom"},
        annotations=_note(
            [f"{a} − {b}" for a, b in t.loc[t["n_items"] == 0, ["a", "b"]].to_numpy()],
            "no items in common",
        ),
    )


# --------------------------------------------------------------------------- confidence


def confidence_chart(df: pd.DataFrame, field: str | None = None, by: str = "variant") -> go.Figure:
    """Self-reported confidence split by correct (right half) and wrong (left half) answers.

    Well-separated halves mean the confidence is useful for routing to human review.
    """
    import plotly.graph_objects as go

    what = f"field '{field}'" if field else "answers"
    title = f"Self-reported confidence of correct vs wrong {what}"
    cols = ["confidence", "passed"] if field is None else ["confidences", "field_correct"]
    if (fig := _guard(df, title, [by, *cols])) is not None:
        return fig
    cf = calib.confidence_frame(df, field, by)
    cf = cf[cf["confidence"].notna()]
    silent = [k for k in pd.unique(df[by]) if k not in set(cf[by])]
    if cf.empty:
        names = ", ".join(str(k) for k in silent)
        return _empty(title, f"No variant reports a confidence ({names}).")
    traces = []
    for ok, name, side, color in (
        (1.0, "correct", "positive", _GOOD),
        (0.0, "wrong", "negative", _BAD),
    ):
        part = cf[cf["correct"] == ok]
        # One trace per group with a scalar x0: no 10,000-label x array to validate and ship.
        for i, (key, sub) in enumerate(part.groupby(by, sort=False, observed=True)):
            traces.append(
                go.Violin(
                    x0=str(key),
                    y=sub["confidence"].to_numpy(),
                    name=f"{name} (n={len(part)})",
                    legendgroup=name,
                    showlegend=i == 0,
                    side=side,
                    line_color=color,
                    points=False,
                    spanmode="hard",
                    scalemode="count",
                    scalegroup="all",
                    meanline_visible=True,
                    hoveron="violins",
                )
            )
    return _figure(
        traces,
        title,
        by,
        "confidence",
        violinmode="overlay",
        violingap=0.1,
        xaxis=_CATEGORY,
        yaxis={"range": [0, 1.02]},
        annotations=_note(silent, "no confidence reported"),
    )


def reliability_chart(
    df: pd.DataFrame, field: str | None = None, by: str = "variant", bins: int = 10
) -> go.Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal; ECE in the legend."""
    import plotly.graph_objects as go

    what = f" (field '{field}')" if field else ""
    title = (
        f"Reliability diagram{what}: accuracy vs stated confidence<br><sup>ECE (expected "
        "calibration error): the average gap between stated confidence and accuracy, 0 = "
        "perfectly calibrated</sup>"
    )
    cols = ["confidence", "passed"] if field is None else ["confidences", "field_correct"]
    if (fig := _guard(df, title, [by, *cols])) is not None:
        return fig
    cal = calib.calibration(df, field, by, bins)
    rel = cal.reliability
    if rel.empty:
        return _empty(title, "No row reports a confidence with a known correctness.")
    summary = cal.summary.set_index(by)
    traces: list[Any] = [
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfect calibration",
            line={"dash": "dash", "color": _MUTED},
            hoverinfo="skip",
        )
    ]
    for i, (key, part) in enumerate(rel.groupby(by, sort=False, observed=True)):
        count = part["count"].to_numpy()
        traces.append(
            go.Scatter(
                x=part["mean_confidence"].to_numpy(),
                y=part["accuracy"].to_numpy(),
                mode="lines+markers",
                name=f"{key} (ECE {summary.at[key, 'ece']:.3f})",
                marker={"size": 6 + 14 * np.sqrt(count / count.max()), "color": _COLORS[i % 7]},
                line={"color": _COLORS[i % 7]},
                customdata=part[["count", "bin_low", "bin_high"]].to_numpy(float),
                hovertemplate=(
                    f"<b>{key}</b><br>bin %{{customdata[1]:.2f}}–%{{customdata[2]:.2f}}<br>"
                    "mean confidence %{x:.3f}<br>accuracy %{y:.3f}<br>"
                    "%{customdata[0]:.0f} rows<extra></extra>"
                ),
            )
        )
    return _figure(
        traces,
        title,
        "mean stated confidence",
        "observed accuracy",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1.02]},
    )


def coverage_chart(df: pd.DataFrame, field: str | None = None, by: str = "variant") -> go.Figure:
    """Accuracy of auto-accepted rows against the share accepted, as the threshold moves."""
    import plotly.graph_objects as go

    what = f" (field '{field}')" if field else ""
    title = f"Auto-accept coverage vs accuracy{what}: pick a review threshold"
    cols = ["confidence", "passed"] if field is None else ["confidences", "field_correct"]
    if (fig := _guard(df, title, [by, *cols])) is not None:
        return fig
    curve = calib.coverage_curve(df, field, by)
    curve = curve[curve["n_accepted"] > 0]
    if curve.empty:
        return _empty(title, "No row reports a confidence with a known correctness.")
    traces = []
    for i, (key, part) in enumerate(curve.groupby(by, sort=False, observed=True)):
        part = part.drop_duplicates("n_accepted", keep="last")
        traces.append(
            go.Scatter(
                x=part["coverage"].to_numpy(),
                y=part["accuracy"].to_numpy(),
                mode="lines+markers",
                line={"shape": "hv", "color": _COLORS[i % 7]},
                marker={"size": 4},
                name=str(key),
                customdata=part[["threshold", "n_accepted"]].to_numpy(float),
                hovertemplate=(
                    f"<b>{key}</b><br>accept confidence ≥ %{{customdata[0]:.2f}}<br>"
                    "coverage %{x:.1%} (%{customdata[1]:.0f} rows)<br>"
                    "accuracy %{y:.1%}<extra></extra>"
                ),
            )
        )
    return _figure(
        traces,
        title,
        "coverage (share auto-accepted)",
        "accuracy among accepted",
        xaxis={"tickformat": ".0%", "range": [0, 1.02]},
        yaxis={"tickformat": ".0%"},
    )


# --------------------------------------------------------------------------- cost, latency


def token_chart(df: pd.DataFrame, by: str = "variant") -> go.Figure:
    """Mean tokens per call, stacked: uncached prompt, cached prompt, completion."""
    import plotly.graph_objects as go

    title = f"Tokens per call by {by}"
    if (
        fig := _guard(
            df,
            title,
            [by, "item_id", "passed", "prompt_tokens", "completion_tokens", "cached_tokens"],
        )
    ) is not None:
        return fig
    c = stats.cost_summary(df, by)
    c = c[c["n"] > 0]
    x = _labels(c[by])
    cached = c["cached_tokens_mean"].fillna(0).to_numpy()
    uncached = np.maximum(c["prompt_tokens_mean"].fillna(0).to_numpy() - cached, 0)
    parts = (
        ("prompt (uncached)", uncached, "prompt_tokens"),
        ("prompt (cached)", cached, "cached_tokens"),
        ("completion", c["completion_tokens_mean"].fillna(0).to_numpy(), "completion_tokens"),
    )
    traces = [
        go.Bar(
            x=x,
            y=y,
            name=name,
            marker_color=_COLORS[i],
            customdata=np.column_stack([c[total].to_numpy(float), c["n"].to_numpy(float)]),
            hovertemplate=(
                f"<b>%{{x}}</b><br>{name}: %{{y:,.0f}} per call<br>"
                f"total {total.replace('_', ' ')} %{{customdata[0]:,.0f}} "
                "over %{customdata[1]:.0f} calls<extra></extra>"
            ),
        )
        for i, (name, y, total) in enumerate(parts)
    ]
    return _figure(
        traces,
        title,
        by,
        "mean tokens per call",
        barmode="stack",
        xaxis=_x_axis(df, by, list(c[by]), list(c["n"])),
    )


def cost_chart(df: pd.DataFrame, by: str = "variant") -> go.Figure:
    """Cost per call and cost per success (USD); a cheap variant that fails is not cheap."""
    import plotly.graph_objects as go

    title = f"Cost per call and per success by {by}"
    if (fig := _guard(df, title, [by, "cost_usd", "passed"])) is not None:
        return fig
    c = stats.cost_summary(df, by)
    c = c[c["n"] > 0]
    if c["total_cost"].isna().all():
        return _empty(title, "No row has a known cost.")
    if (c["total_cost"].fillna(0) == 0).all():
        local = "model_id" in df and df["model_id"].astype(str).str.startswith("local/").all()
        return _empty(
            title,
            "free: local model, every call cost $0" if local else "Every call cost $0 (free).",
        )
    x = _labels(c[by])
    custom = c[["total_cost", "successes", "n"]].to_numpy(float)
    hover = (
        "<b>%{x}</b><br>%{fullData.name}: $%{y:.3~g}<br>total $%{customdata[0]:.3~g}<br>"
        "%{customdata[1]:.0f} successes in %{customdata[2]:.0f} calls<extra></extra>"
    )
    top = float(np.nanmax(c[["cost_per_item", "cost_per_success"]].to_numpy(float)))
    per_success = c["cost_per_success"].to_numpy()
    traces = [
        go.Bar(
            x=x,
            y=c["cost_per_item"].to_numpy(),
            name="per call",
            marker_color=_COLORS[0],
            customdata=custom,
            hovertemplate=hover,
        ),
        go.Bar(
            x=x,
            y=per_success,
            name="per success",
            marker_color=_COLORS[1],
            customdata=custom,
            hovertemplate=hover,
        ),
    ]
    broke = c.loc[c["successes"] == 0, by].tolist()
    return _figure(
        traces,
        title,
        by,
        "USD",
        barmode="group",
        xaxis=_x_axis(df, by, list(c[by]), list(c["n"])),
        yaxis={"tickformat": "$.2~g" if top < 0.01 else "$,.2f", "rangemode": "tozero"},
        annotations=_note(broke, "cost per success, no successes"),
    )


def latency_chart(df: pd.DataFrame, by: str = "variant", include_errors: bool = False) -> go.Figure:
    """Latency and time to first token per group: box p25–p75, line p50, whiskers p1–p99.

    Boxes are drawn from `stats.latency_summary` percentiles rather than raw rows, so the
    chart and the table agree and the figure stays small at any number of rows.
    """
    import plotly.graph_objects as go

    title = f"Latency and time to first token by {by} (box p25–p75, whiskers p1–p99)"
    if (fig := _guard(df, title, [by, "latency_s", "ttft_s"])) is not None:
        return fig
    s = stats.latency_summary(df, by, (1, 25, 50, 75, 99), include_errors=include_errors)
    traces = []
    for i, (name, label) in enumerate(
        (("latency", "total latency"), ("ttft", "time to first token"))
    ):
        part = s[s[f"{name}_n"] > 0]
        if part.empty:
            continue
        traces.append(
            go.Box(
                x=_labels(part[by]),
                q1=part[f"{name}_p25"].to_numpy(),
                median=part[f"{name}_p50"].to_numpy(),
                q3=part[f"{name}_p75"].to_numpy(),
                lowerfence=part[f"{name}_p1"].to_numpy(),
                upperfence=part[f"{name}_p99"].to_numpy(),
                mean=part[f"{name}_mean"].to_numpy(),
                name=label,
                marker_color=_COLORS[i],
                boxmean=True,
            )
        )
    if not traces:
        return _empty(title, "No row has a latency (every row errored?).")
    # The first call to an in-process model pays for loading it; say so where it shows.
    fresh = df[~df["cache_hit"].astype(bool)] if "cache_hit" in df else df
    local = fresh[
        fresh.get("model_id", pd.Series("", index=fresh.index)).astype(str).str.startswith("local/")
    ]
    loaded = []
    for key, rows in local.groupby(by, sort=False, observed=True):
        lat = rows["latency_s"].dropna()
        if len(lat) > 1 and lat.max() > 3 * lat.median():
            loaded.append(f"{key} (slowest call {lat.max():.1f} s vs median {lat.median():.1f} s)")
    shown = s[s["latency_n"] > 0] if "latency_n" in s else s
    n = list(shown["latency_n"]) if "latency_n" in shown else [0] * len(shown)
    return _figure(
        traces,
        title,
        by,
        "seconds",
        boxmode="group",
        xaxis=_x_axis(df, by, list(shown[by]), n),
        annotations=[
            {"text": "First call includes loading the local model: " + "; ".join(loaded)}
            | {"showarrow": False, "xref": "paper", "yref": "paper", "x": 0, "y": -0.2}
            | {"xanchor": "left", "font": {"size": 11}}
        ]
        if loaded
        else [],
    )


def repair_chart(df: pd.DataFrame, by: str = "variant") -> go.Figure:
    """Share of answered rows that needed each repair step, per group."""
    import plotly.graph_objects as go

    title = f"Repairs needed to parse the output, by {by}"
    if (fig := _guard(df, title, [by, "repairs"])) is not None:
        return fig
    r = stats.repair_breakdown(df, by)
    if r.empty:
        return _empty(title, "No answered row needed a repair: every output parsed as written.")
    keys = _labels(pd.Series(pd.unique(r[by])))
    traces = []
    for i, (step, part) in enumerate(r.groupby("step", sort=False, observed=True)):
        traces.append(
            go.Bar(
                x=_labels(part[by]),
                y=part["share"].to_numpy(),
                name=str(step),
                marker_color=_COLORS[i % 7],
                customdata=part[["rows", "n"]].to_numpy(float),
                hovertemplate=(
                    f"<b>%{{x}}</b><br>{step}: %{{y:.1%}}<br>"
                    "%{customdata[0]:.0f} of %{customdata[1]:.0f} answered rows<extra></extra>"
                ),
            )
        )
    return _figure(
        traces,
        title,
        by,
        "share of answered rows",
        barmode="group",
        yaxis={"tickformat": ".0%"},
        xaxis=_CATEGORY | {"categoryorder": "array", "categoryarray": keys},
    )


def all_charts(
    df: pd.DataFrame,
    by: str = "variant",
    baseline: Any = None,
    field: str | None = None,
    alpha: float = 0.05,
    baselines: Mapping[Any, float] | None = None,
) -> dict[str, go.Figure]:
    """Every chart for the HTML report, keyed by a stable short name."""
    return {
        "success": success_chart(df, by, alpha, baselines),
        "forest": forest_chart(df, by, baseline, alpha),
        "confidence": confidence_chart(df, field, by),
        "reliability": reliability_chart(df, field, by),
        "coverage": coverage_chart(df, field, by),
        "tokens": token_chart(df, by),
        "cost": cost_chart(df, by),
        "latency": latency_chart(df, by),
        "repairs": repair_chart(df, by),
    }
