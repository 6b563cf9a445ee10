"""Watch it in production: metrics per time window and model version, shift tests, upgrades.

`monitor(source)` turns the trace store (every call with its model, time, parse result,
confidence, tokens, cost and latency) into a signal: per window (hour, day, week or any
duration) and per pinned model version (or any other grouping) it reports call volume, error,
parse, repair and success rates, confidence (mean and per field), tokens, cost, latency
p50/p95 and time to first token, and it tests every window against a baseline window:

* rates (error, parse, repair, success) by the pooled two-proportion z test;
* distributions (latency, TTFT, completion length, mean and per-field confidence) by the
  two-sample Kolmogorov-Smirnov test, with the population stability index (PSI) beside it;
* Holm's correction over all tests of one window against its baseline, so the chance that a
  window without any change raises an alert is at most `alpha` (checked by simulation in
  tests/test_monitor.py). A test is flagged only when its Holm-adjusted p-value is below
  `alpha` *and* its effect is large enough to matter: |rate change| >= `min_rate_change`,
  PSI >= `min_psi`. No alert without a test behind it.

Scale: the aggregation runs in SQLite (one GROUP BY per metric over an index on time), and
distributions come back as histograms (confidences at 0.001, positive quantities in 1%-wide
log bins), so memory grows with windows x groups x bins, never with calls. Quantiles read
from those bins are within 0.5% of the exact ones.

What is counted: attempts (kind 'attempt', errors included) between `since` and `until`;
cache hits replay an old answer and say nothing about today's provider, so they are left out
unless `cache_hits=True`. Confidences come from the trace's `meta.confidences` (written by
the client since this module) or, for older rows, from `<field>_confidence` keys of a reply
that is valid JSON. Success is known where an outcome is recorded: a results frame's
`passed`, a trace's `meta.passed`, or the `outcomes=` mapping of trace id -> passed (labels
or reviews that arrive later).

The upgrade watch (`upgrade_watch`, and `labkit.history(path, traces=...)`) compares the
window before each saved version of a config with the window after it, on the same tests,
and suggests `labkit.rollback` when the new version is worse.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..artifact import VersionInfo, measured_on
from ..artifact import versions as artifact_versions
from ..errors import InputError
from ..experiments.stats import holm_adjust
from .drift import hist_quantile, ks_from_counts, psi, two_proportions
from .sql import (
    _MONDAY,
    BASE_DISTS,
    RATES,
    WINDOWS,
    Baseline,
    _Agg,
    _collect,
    _Dist,
    _field_dist,
    _fields,
    _ident,
    _open,
    _outcomes,
    _Query,
    _rows_where,
    _switches,
    parse_duration,
    parse_time,
)

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["MonitorReport", "UpgradeVerdict", "monitor", "parse_duration", "upgrade_watch"]

# ----------------------------------------------------------------------------- tests


@dataclass(frozen=True)
class _Limits:
    alpha: float = 0.01
    min_rate_change: float = 0.02
    min_psi: float = 0.1
    min_n: int = 30

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.min_n < 2:
            raise InputError(f"min_n must be at least 2, got {self.min_n}")


def _compare(
    base: Mapping[str, Any],
    win: Mapping[str, Any],
    hist0: Mapping[str, tuple[np.ndarray, np.ndarray] | None],
    hist1: Mapping[str, tuple[np.ndarray, np.ndarray] | None],
    dists: Sequence[_Dist],
    lim: _Limits,
) -> list[dict[str, Any]]:
    """Every test of one window against its baseline, Holm-adjusted together."""
    rows: list[dict[str, Any]] = []
    for name, (num, den, good) in RATES.items():
        n0, n1 = int(base[den]), int(win[den])
        if n0 < lim.min_n or n1 < lim.min_n:
            continue
        k0, k1 = int(base[num]), int(win[num])
        diff, p = two_proportions(k0, n0, k1, n1)
        rows.append(
            dict(metric=name, test="two-proportion z", baseline_value=k0 / n0, value=k1 / n1,
                 effect=diff, psi=math.nan, p_value=p, n_baseline=n0, n_window=n1,
                 _big=abs(diff) >= lim.min_rate_change, _good=good)
        )  # fmt: skip
    for d in dists:
        h0, h1 = hist0.get(d.name), hist1.get(d.name)
        if h0 is None or h1 is None or h0[1].sum() < lim.min_n or h1[1].sum() < lim.min_n:
            continue
        stat, p, n0, n1 = ks_from_counts(h0[0], h0[1], h1[0], h1[1])
        index = psi(h0[0], h0[1], h1[0], h1[1])
        v0, v1 = _summary(d, *h0), _summary(d, *h1)
        rows.append(
            dict(metric=d.name, test="two-sample KS", baseline_value=v0, value=v1,
                 effect=stat, psi=index, p_value=p, n_baseline=n0, n_window=n1,
                 _big=index >= lim.min_psi, _good=d.good)
        )  # fmt: skip
    if not rows:
        return rows
    adjusted = holm_adjust([r["p_value"] for r in rows])
    for r, p_holm in zip(rows, adjusted, strict=True):
        good, big = r.pop("_good"), r.pop("_big")
        r["p_holm"] = float(p_holm)
        r["flagged"] = bool(p_holm < lim.alpha and big)
        change = r["value"] - r["baseline_value"]
        r["direction"] = (
            "changed" if good == 0 or change == 0 else ("better" if change * good > 0 else "worse")
        )
    return rows


def _summary(d: _Dist, bins: np.ndarray, counts: np.ndarray) -> float:
    """Mean for confidences, median for latencies and lengths (skewed)."""
    values = d.values(bins)
    if d.scale == "unit":
        return float(np.dot(values, counts) / counts.sum())
    return hist_quantile(values, counts, 0.5)


# ----------------------------------------------------------------------------- the report


@dataclass
class MonitorReport:
    """Metrics per window and group, every shift test, the flagged shifts and the switches.

    `windows`: one row per (window, group) with volume, rates, confidence, tokens, cost and
    latency/TTFT quantiles. `tests`: every test of a window against its baseline, with effect
    (rate difference, or the KS statistic D), PSI, raw and Holm-adjusted p-values and the
    direction (worse / better / changed). `shifts`: the flagged tests. `switches`: when a new
    model first answered for an alias, and the config versions (with `config=`).
    """

    windows: pd.DataFrame
    tests: pd.DataFrame
    switches: pd.DataFrame
    by: list[str]
    window: str
    baseline: str
    limits: dict[str, Any]
    hists: dict[str, dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]]] = field(repr=False)
    _dists: dict[str, _Dist] = field(repr=False, default_factory=dict)

    @property
    def shifts(self) -> pd.DataFrame:
        return self.tests[self.tests["flagged"]].reset_index(drop=True)

    @property
    def flagged(self) -> bool:
        return bool(self.tests["flagged"].any()) if len(self.tests) else False

    def __repr__(self) -> str:
        return (
            f"MonitorReport({len(self.windows)} window rows by {self.by}, {len(self.tests)} "
            f"tests, {len(self.shifts)} flagged)"
        )

    def __str__(self) -> str:
        groups = self.windows[self.by].drop_duplicates().shape[0] if self.by else 1
        calls = int(self.windows["calls"].sum()) if len(self.windows) else 0
        head = (
            f"{calls} calls in {self.windows['window'].nunique() if len(self.windows) else 0} "
            f"{self.window} window(s), {groups} group(s); {len(self.tests)} test(s) against the "
            f"{self.baseline} baseline (alpha {self.limits['alpha']}, Holm per window)"
        )
        shifts = self.shifts
        if shifts.empty:
            return head + "\nno shift flagged"
        lines = [head, f"{len(shifts)} shift(s) flagged:"]
        for r in shifts.itertuples(index=False):
            group = " ".join(str(getattr(r, c)) for c in self.by)
            psi_ = "" if math.isnan(r.psi) else f", PSI {r.psi:.2f}"
            stat = "diff" if r.test.startswith("two-proportion") else "KS D"
            lines.append(
                f"  {_label(r.window)}  {group}  {r.metric} {r.direction}: "
                f"{_fmt(r.baseline_value)} -> {_fmt(r.value)} ({stat} {r.effect:+.3f}{psi_}, "
                f"p {r.p_value:.2g}, Holm {r.p_holm:.2g}; n {r.n_baseline} vs {r.n_window})"
            )
        return "\n".join(lines)

    def chart(self, metric: str = "parse_rate") -> go.Figure:
        """`metric` over time per group, switches as dashed lines, flagged windows circled."""
        import plotly.graph_objects as go

        if metric not in self.windows.columns:
            numeric = [c for c in self.windows.columns if c not in ("window", *self.by)]
            raise InputError(f"no metric {metric!r} in the windows; choose from {numeric}")
        fig = go.Figure()
        for key, part in self._groups(self.windows):
            fig.add_scatter(x=part["window"], y=part[metric], mode="lines+markers", name=key)
        tested = _tested_metric(metric)
        hits = self.shifts[self.shifts["metric"] == tested] if tested else self.shifts.iloc[:0]
        if len(hits):
            merged = hits.merge(self.windows, on=["window", *self.by], how="left")
            fig.add_scatter(
                x=merged["window"], y=merged[metric], mode="markers", name="flagged shift",
                marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"color": "crimson", "width": 3}},
                text=[f"{d}: p(Holm) {p:.2g}" for d, p in zip(merged["direction"], merged["p_holm"], strict=True)],
            )  # fmt: skip
        for s in self.switches.itertuples(index=False):
            fig.add_shape(type="line", x0=s.time, x1=s.time, y0=0, y1=1, yref="paper",
                          line={"dash": "dash", "color": "grey"})  # fmt: skip
            fig.add_annotation(x=s.time, y=1, yref="paper", text=s.label, showarrow=False,
                               yanchor="bottom", font={"size": 10})  # fmt: skip
        fig.update_layout(
            title=f"{metric} per {self.window} window", xaxis_title="window", yaxis_title=metric,
            template="plotly_white", legend_title=" · ".join(self.by),
        )  # fmt: skip
        return fig

    def distribution_chart(
        self, metric: str = "confidence", window: Any = None, group: Any = None
    ) -> go.Figure:
        """The baseline's distribution of `metric` beside one window's (default: the first
        flagged window for that metric, else the last one), as shares per bin."""
        import pandas as pd
        import plotly.graph_objects as go

        d = self._dists.get(metric)
        if d is None:
            raise InputError(f"no distribution {metric!r}; choose from {sorted(self._dists)}")
        tests = self.tests[self.tests["metric"] == metric]
        if group is not None:
            gvals = group if isinstance(group, tuple) else (group,)
            tests = tests[(tests[self.by] == list(gvals)).all(axis=1)]
        if window is not None:
            tests = tests[
                tests["window"]
                == (
                    pd.Timestamp(window)
                    if not isinstance(window, str) or self.window != "run"
                    else window
                )
            ]
        pick = tests[tests["flagged"]] if tests["flagged"].any() else tests
        if pick.empty:
            raise InputError(f"no tested window for {metric!r} with these filters")
        row = pick.iloc[0] if tests["flagged"].any() else pick.iloc[-1]
        key1 = (row["_w"], *(row[c] for c in self.by))
        key0 = (row["_bw"], *(row[c] for c in self.by))
        fig = go.Figure()
        edges = np.linspace(0, 1, 21) if d.scale == "unit" else None
        for name, key in (("baseline", key0), (f"window {_label(row['window'])}", key1)):
            bins, counts = self.hists[metric][key]
            values = d.values(bins)
            if edges is None:
                lo, hi = (
                    np.log(max(values[values > 0].min(initial=1e-3), 1e-6)),
                    np.log(values.max() + 1e-9),
                )
                edges = np.exp(np.linspace(lo, hi + 1e-9, 31))
            share, _ = np.histogram(values, bins=edges, weights=counts / counts.sum())
            fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=share, name=name, opacity=0.6)
        fig.update_layout(
            barmode="overlay", template="plotly_white", yaxis_title="share of calls",
            xaxis_title=metric, title=f"{metric}: baseline vs {_label(row['window'])} "
            f"(KS D {row['effect']:.3f}, p {row['p_value']:.2g}, PSI {row['psi']:.2f})",
        )  # fmt: skip
        if d.scale == "log":
            fig.update_xaxes(type="log")
        return fig

    def _groups(self, frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
        if not self.by:
            yield "all", frame
            return
        for key, part in frame.groupby(self.by, sort=False, dropna=False):
            yield " · ".join(map(str, key if isinstance(key, tuple) else (key,))), part


def _tested_metric(metric: str) -> str | None:
    if metric in RATES:
        return metric
    for suffix in ("_p50", "_p95", "_mean"):
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return None


def _label(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)


def _fmt(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"


# ----------------------------------------------------------------------------- monitor()


def monitor(
    source: Any,
    *,
    by: str | Sequence[str] = "model",
    window: str | float = "day",
    baseline: Baseline = "first",
    since: Any = None,
    until: Any = None,
    alpha: float = 0.01,
    min_rate_change: float = 0.02,
    min_psi: float = 0.1,
    min_n: int = 30,
    fields: Sequence[str] | None = None,
    outcomes: Mapping[str, bool] | pd.Series | None = None,
    cache_hits: bool = False,
    config: str | Path | None = None,
    time: str | None = None,
) -> MonitorReport:
    """Metrics per time window and group, each window tested against a baseline window.

    source: a trace database path, a `labkit.Client` (its trace store), a traces frame
        (`labkit.traces()`) or a results frame (`results.df`; windows come from its `ts` /
        `time` column, else one window per `run_id`).
    by: grouping column(s): 'model' (the pinned version that answered), 'alias', 'run_id',
        'prompt_version' (a results frame's prompt variant) or any key of a trace's `meta`.
    window: 'hour', 'day', 'week' (Monday-aligned, UTC), or '30min', '6h', '2d', seconds.
    baseline: 'first' (each group's first window with >= min_n calls; good for drift),
        'previous' (the window before; good for sudden changes) or a (start, end) time range.
    alpha: family-wise false-alarm rate per window: Holm over all tests of the window.
    min_rate_change: smallest absolute rate change flagged (default 2 points).
    min_psi: smallest PSI flagged for a distribution (0.1 = the usual "moderate shift").
    min_n: fewest calls (or values) in both windows for a test to run.
    fields: confidence fields to test (default: those found in the traces).
    outcomes: trace id (`Completion.trace_id`) -> passed, for labels that arrive later.
    cache_hits: count cache hits too (off: they replay old answers).
    config: a deployed config path whose versions are marked as switches on the charts.
    time: the time column of a frame, when it is not ts / time / timestamp / created_at.
    """
    import pandas as pd

    lim = _Limits(alpha, min_rate_change, min_psi, int(min_n))
    groups = [by] if isinstance(by, str) else list(by)
    for name in groups:
        _ident(name, "group column")
    t0, t1 = parse_time(since), parse_time(until)
    with _open(source, time) as (conn, ordinal):
        width = 1.0 if ordinal else parse_duration(window)
        origin = _MONDAY if not ordinal and width % WINDOWS["week"] == 0 else 0.0
        where, args = _rows_where(cache_hits, t0, t1)
        join, succ = _outcomes(conn, outcomes)
        names = list(fields) if fields is not None else _fields(conn, where, args)
        dists = [*BASE_DISTS, *(_field_dist(_ident(f, "confidence field")) for f in names)]
        wexpr = f"CAST((ts - {origin!r}) / {width!r} AS INTEGER)"
        agg = _collect(conn, _Query(where, args, wexpr, groups, dists, join, succ))
        label = "first"
        if isinstance(baseline, tuple | list):
            b0, b1 = (parse_time(b) for b in baseline)
            if b0 is None or b1 is None or b1 <= b0:
                raise InputError(
                    f"baseline must be (start, end) with start < end, got {baseline!r}"
                )
            bwhere, bargs = _rows_where(cache_hits, b0, b1)
            extra = _collect(conn, _Query(bwhere, bargs, "-1", groups, dists, join, succ))
            agg.scalars = pd.concat([agg.scalars, extra.scalars])
            for k, v in extra.hists.items():
                agg.hists[k].update(v)
            label = (
                f"{_label(pd.to_datetime(b0, unit='s'))} .. {_label(pd.to_datetime(b1, unit='s'))}"
            )
        elif baseline not in ("first", "previous"):
            raise InputError(
                f"baseline must be 'first', 'previous' or a (start, end) time range, got {baseline!r}"
            )
        else:
            label = str(baseline)
        run_names = (
            dict(conn.execute("SELECT ts, MIN(run_id) FROM traces GROUP BY ts").fetchall())
            if ordinal
            else {}
        )
        switches = _switches(conn, where, args, config)

    starts: dict[Any, Any] = {-1: "baseline"}

    def start(w: Any) -> Any:
        if w not in starts:
            starts[w] = (
                run_names.get(float(w), str(w))
                if ordinal
                else pd.Timestamp(origin + int(w) * width, unit="s")
            )
        return starts[w]

    tests: list[dict[str, Any]] = []
    scal: dict[tuple[Any, ...], dict[str, Any]] = {
        (key if isinstance(key, tuple) else (key,)): row
        for key, row in agg.scalars.to_dict("index").items()
    }
    by_group: dict[tuple[Any, ...], list[int]] = {}
    for cell in scal:
        if cell[0] != -1:
            by_group.setdefault(tuple(cell[1:]), []).append(int(cell[0]))
    for g, ws in by_group.items():
        ws.sort()
        ready = [w for w in ws if scal[(w, *g)]["calls"] >= lim.min_n]
        for w in ws:
            if isinstance(baseline, tuple | list):
                bw = -1
                if (bw, *g) not in scal:
                    continue
            elif baseline == "first":
                if not ready or w <= ready[0]:
                    continue
                bw = ready[0]
            else:
                earlier = [x for x in ready if x < w]
                if not earlier:
                    continue
                bw = earlier[-1]
            k0, k1 = (bw, *g), (w, *g)
            h0 = {d.name: agg.hists[d.name].get(k0) for d in dists}
            h1 = {d.name: agg.hists[d.name].get(k1) for d in dists}
            for r in _compare(scal[k0], scal[k1], h0, h1, dists, lim):
                tests.append({"window": start(w), **dict(zip(groups, g, strict=True)),
                              "baseline": start(bw), **r, "_w": w, "_bw": bw})  # fmt: skip
    columns = ["window", *groups, "baseline", "metric", "test", "baseline_value", "value",
               "effect", "psi", "p_value", "p_holm", "n_baseline", "n_window", "flagged",
               "direction", "_w", "_bw"]  # fmt: skip
    tests_df = pd.DataFrame(tests, columns=columns)
    windows = _windows_frame(agg, dists, groups, start)
    return MonitorReport(
        windows=windows,
        tests=tests_df,
        switches=switches,
        by=groups,
        window="run" if ordinal else (window if isinstance(window, str) else f"{width:g}s"),
        baseline=label,
        limits={
            "alpha": alpha,
            "min_rate_change": min_rate_change,
            "min_psi": min_psi,
            "min_n": min_n,
        },
        hists=agg.hists,
        _dists={d.name: d for d in dists},
    )


def _windows_frame(
    agg: _Agg, dists: Sequence[_Dist], groups: list[str], start: Any
) -> pd.DataFrame:

    s = agg.scalars
    s = s[s.index.get_level_values(0) != -1] if len(s) else s
    out = s.reset_index()
    out.columns = ["w", *groups, *s.columns]
    out.insert(0, "window", [start(w) for w in out["w"]])

    def rate(num: str, den: str) -> pd.Series:
        return (out[num] / out[den].where(out[den] > 0)).astype(float)

    for name, (num, den, _) in RATES.items():
        out[name] = rate(num, den)
    out["cache_hit_rate"] = rate("cache_hits", "calls")
    keys = [tuple(k) for k in out[["w", *groups]].itertuples(index=False)]
    for d in dists:
        per = agg.hists[d.name]
        cells = [per.get(k) for k in keys]
        if d.scale == "unit":
            out[f"{d.name}_mean"] = [np.nan if c is None else _summary(d, *c) for c in cells]
        elif d.name != "completion_tokens":
            for q in (0.5, 0.95):
                out[f"{d.name.removesuffix('_s')}_p{round(q * 100)}"] = [
                    np.nan if c is None else hist_quantile(d.values(c[0]), c[1], q) for c in cells
                ]
    out["tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    for c in ("calls", "errors", "parse_n", "parsed", "repaired", "success_n", "successes"):
        out[c] = out[c].astype("int64")
    return (
        out.drop(columns=["w", "first_ts", "last_ts"])
        .sort_values(["window", *groups])
        .reset_index(drop=True)
    )


# ----------------------------------------------------------------------------- upgrades


@dataclass
class UpgradeVerdict:
    """Before vs after one saved version of a config, on the monitor's tests."""

    version: int
    model: str
    previous_model: str
    switched_at: str
    calls_before: int
    calls_after: int
    verdict: Literal["worse", "better", "no change", "too few calls"]
    shifts: list[dict[str, Any]]
    """The flagged tests (metric, direction, baseline_value, value, effect, psi, p_holm)."""
    rollback: str | None = None
    """The call that undoes the version, when it is worse."""

    def __str__(self) -> str:
        head = (
            f"v{self.version} ({self.previous_model} -> {self.model}, {self.switched_at}): "
            f"{self.verdict} ({self.calls_before} calls before, {self.calls_after} after)"
        )
        parts = [
            f"{s['metric']} {s['direction']} {_fmt(s['baseline_value'])} -> {_fmt(s['value'])}"
            for s in self.shifts
        ]
        tail = f"; {', '.join(parts)}" if parts else ""
        hint = f"; consider {self.rollback}" if self.rollback else ""
        return head + tail + hint


def upgrade_watch(
    config: str | Path,
    source: Any,
    *,
    window: str | float = "day",
    alpha: float = 0.01,
    min_rate_change: float = 0.02,
    min_psi: float = 0.1,
    min_n: int = 30,
    fields: Sequence[str] | None = None,
) -> list[UpgradeVerdict]:
    """For each saved version after the first: the calls of the previous version's model in
    the `window` before it was saved vs the new version's model in the `window` after (cut at
    the next version), on the monitor's tests. 'worse' when any flagged shift is for the
    worse; then `rollback` holds the `labkit.rollback` call that restores the previous one."""
    lim = _Limits(alpha, min_rate_change, min_psi, int(min_n))
    width = parse_duration(window)
    versions = artifact_versions(config)
    times = [parse_time(v.created_at) or 0.0 for v in versions]
    out: list[UpgradeVerdict] = []
    with _open(source, None) as (conn, _):
        base, base_args = _rows_where(False, None, None)
        names = list(fields) if fields is not None else _fields(conn, base, base_args)
        dists = [*BASE_DISTS, *(_field_dist(_ident(f, "confidence field")) for f in names)]
        for i in range(1, len(versions)):
            prev, cur, t = versions[i - 1], versions[i], times[i]
            end = min(t + width, times[i + 1] if i + 1 < len(versions) else math.inf)
            sides = []
            for model, lo, hi in (
                (prev.model, t - width, t),
                (cur.model, t, end),
            ):
                where, args = _rows_where(False, lo, None if hi == math.inf else hi)
                agg = _collect(
                    conn, _Query(f"{where} AND model = ?", [*args, model], "0", [], dists)
                )
                sides.append(agg)
            n = [int(a.scalars["calls"].sum()) for a in sides]
            rows: list[dict[str, Any]] = []
            if min(n) >= lim.min_n:
                h0 = {d.name: sides[0].hists[d.name].get((0,)) for d in dists}
                h1 = {d.name: sides[1].hists[d.name].get((0,)) for d in dists}
                before, after = (a.scalars.loc[0].to_dict() for a in sides)
                rows = _compare(before, after, h0, h1, dists, lim)
            flagged = [r for r in rows if r["flagged"]]
            verdict: Literal["worse", "better", "no change", "too few calls"]
            if min(n) < lim.min_n:
                verdict = "too few calls"
            elif any(r["direction"] == "worse" for r in flagged):
                verdict = "worse"
            elif any(r["direction"] == "better" for r in flagged):
                verdict = "better"
            else:
                verdict = "no change"
            keep = ("metric", "direction", "baseline_value", "value", "effect", "psi", "p_holm")
            out.append(
                UpgradeVerdict(
                    version=cur.version, model=cur.model, previous_model=prev.model,
                    switched_at=cur.created_at, calls_before=n[0], calls_after=n[1],
                    verdict=verdict, shifts=[{k: r[k] for k in keep} for r in flagged],
                    rollback=f"labkit.rollback({str(config)!r}, to={prev.version})"
                    if verdict == "worse" else None,
                )
            )  # fmt: skip
    return out


def history(
    path: str | Path, *, traces: Any = None, window: str | float = "day"
) -> list[VersionInfo]:
    """Every saved version of a config, oldest first: who saved what, when, with which evidence.

    With `traces` (a trace database path, Client or frame), each version after the first
    carries `watch`: the verdict of `upgrade_watch` on the `window` of calls before vs after it
    was saved, and the `labkit.rollback` call to run when it is worse.
    """
    versions = artifact_versions(path)
    if traces is None:
        return versions
    for verdict in upgrade_watch(path, traces, window=window):
        info = next(v for v in versions if v.version == verdict.version)
        info.watch = {
            "verdict": verdict.verdict,
            "calls_before": verdict.calls_before,
            "calls_after": verdict.calls_after,
            "shifts": verdict.shifts,
            "suggest": verdict.rollback,
            "summary": str(verdict),
        }
    return versions


def history_table(path: str | Path) -> Any:
    """`history` as a DataFrame that puts no rate beside another as if comparable: each rate
    shows its n and item set, and `basis` (A, B, …) groups the rows measured on one set; with
    more than one basis, `attrs["note"]` says so (compare versions on one suite with `gate`)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    bases: dict[tuple[int | None, str], str] = {}
    for v in artifact_versions(path):
        ev, on = v.evidence or {}, measured_on(v)
        basis = bases.setdefault(on, chr(ord("A") + len(bases))) if on else ""
        rows.append(
            {"version": v.version, "action": v.action, "model": v.model, "note": v.note}
            | {"metric": ev.get("metric"), "rate": ev.get("value"), "n": on[0] if on else None}
            | {"measured_on": on[1] if on else "", "basis": basis}
        )
    table = pd.DataFrame(rows).astype({"n": "Int64"}) if rows else pd.DataFrame(rows)
    table.attrs["note"] = (
        f"{len(bases)} different item sets (basis {', '.join(bases.values())}): rates on "
        "different bases are not comparable row to row; compare versions on one suite with "
        "`labkit gate`"
        if len(bases) > 1
        else ""
    )
    return table
