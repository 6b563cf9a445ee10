"""A self-contained HTML report of a results frame.

The report is one file that opens offline: plotly.js is inlined once in the head and every
chart of `labkit.experiments.plots.all_charts` is a `<div>` drawn by a small script, beside the summary
tables (`labkit.experiments.stats`) the charts are built from. Nothing is fetched from the network, so
the report can be mailed, archived or attached to a ticket and still work. Results files
(`Results.to_parquet` / `to_csv`) are read with `labkit.Results.read`.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..artifact import atomic_write
from ..errors import InputError
from . import plots, stats
from .results import Results

if TYPE_CHECKING:
    import pandas as pd

    from .results import Results

__all__ = ["build_report", "write_report"]

# ----------------------------------------------------------------------------- report

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1150px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .meta{color:#666;margin-bottom:1.5rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f5f5f5}
.chart{margin:1rem 0 2rem;border:1px solid #eee;border-radius:6px;padding:.5rem}
.note{color:#555;font-size:.9rem}
"""


def _table(df: pd.DataFrame, columns: Mapping[str, str], pct: tuple[str, ...] = ()) -> str:
    """A small HTML table of chosen columns, numbers formatted for people."""
    head = "".join(f"<th>{html.escape(label)}</th>" for label in columns.values())
    rows = []
    for _, row in df.iterrows():
        cells = []
        for col in columns:
            value = row.get(col)
            cells.append(f"<td>{html.escape(_fmt(value, col in pct))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _fmt(value: Any, pct: bool) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if pct:
            return f"{value:.1%}"
        return f"{value:.4g}"
    return str(value)


def build_report(
    df: pd.DataFrame,
    *,
    title: str = "labkit results",
    by: str = "variant",
    baseline: Any = None,
    field: str | None = None,
    source: str | None = None,
) -> str:
    """The report as one HTML string: summary tables, then every chart of `all_charts`."""
    from plotly.offline import get_plotlyjs

    charts = plots.all_charts(df, by=by, baseline=baseline, field=field)
    divs = []
    for name, fig in charts.items():
        body = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{name}",
            config={"displaylogo": False, "responsive": True},
        )
        divs.append(f'<section class="chart" data-chart="{html.escape(name)}">{body}</section>')
    summary = _summary_tables(df, by, stats)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs = sorted({str(r) for r in df["run_id"].dropna()}) if "run_id" in df.columns else []
    meta = f"{len(df)} rows · generated {when} by labkit {__version__}"
    if source:
        meta += f" · from {html.escape(source)}"
    if runs:
        meta += f" · run {html.escape(', '.join(runs[:3]))}" + (" …" if len(runs) > 3 else "")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{html.escape(title)}</h1><div class='meta'>{meta}</div>"
        f"{summary}<h2>Charts</h2>{''.join(divs)}</body></html>\n"
    )


def _summary_tables(df: pd.DataFrame, by: str, stats: Any) -> str:
    if len(df) == 0 or by not in df.columns:
        return "<p class='note'>The results frame is empty: nothing to summarise.</p>"
    try:
        return _tables(df, by, stats)
    except ValueError as exc:  # a partial frame: the charts still explain what is missing
        return f"<p class='note'>No summary table: {html.escape(str(exc))}</p>"


def _tables(df: pd.DataFrame, by: str, stats: Any) -> str:
    rates = stats.success_rates(df, by)
    cost = stats.cost_summary(df, by)[[by, "total_cost", "cost_per_success", "cost_per_item"]]
    lat = stats.latency_summary(df, by)[[by, "latency_p50", "latency_p95"]]
    table = rates.merge(cost, on=by, how="left").merge(lat, on=by, how="left")
    out = "<h2>Summary</h2>" + _table(
        table,
        {
            by: by,
            "n": "rows",
            "n_items": "items",
            "rate": "success",
            "ci_low": "95% CI low",
            "ci_high": "95% CI high",
            "errors": "errors",
            "cost_per_success": "$ / success",
            "total_cost": "total $",
            "latency_p50": "p50 s",
            "latency_p95": "p95 s",
        },
        pct=("rate", "ci_low", "ci_high"),
    )
    if table[by].nunique() >= 2:
        pairs = stats.pairwise_comparisons(df, by)
        out += (
            "<h2>Paired comparisons</h2><p class='note'>Same items. CI: 95% score interval "
            "of the difference and its p, per pair, not adjusted; Holm CI and p (Holm): "
            "adjusted across the pairs, and a pair is significant when its Holm CI excludes "
            "0.</p>"
        )
        out += _table(
            pairs,
            {
                "a": "a",
                "b": "b",
                "n_items": "items",
                "diff": "a − b",
                "ci_low": "CI low",
                "ci_high": "CI high",
                "p": "p",
                "ci_low_holm": "Holm CI low",
                "ci_high_holm": "Holm CI high",
                "p_holm": "p (Holm)",
            },
            pct=("diff", "ci_low", "ci_high", "ci_low_holm", "ci_high_holm"),
        )
    return out


def write_report(
    source: pd.DataFrame | Results | str | Path, path: str | Path, **kwargs: Any
) -> Path:
    """Write `build_report` of a frame, a `Results`, or a results file to `path`, atomically."""
    if isinstance(source, str | Path):
        kwargs.setdefault("source", str(source))
        try:
            source = Results.read(source)
        except (FileNotFoundError, ValueError) as exc:
            raise InputError(f"cannot read results from {source}: {exc}") from exc
    if isinstance(source, Results):
        kwargs.setdefault("title", f"labkit results: {source.meta.get('name') or 'experiment'}")
        source = source.df
    p = Path(path)
    atomic_write(p, build_report(source, **kwargs))
    return p
