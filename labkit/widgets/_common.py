"""Pieces every widget shares: inline messages instead of tracebacks, figures in outputs, tables.

Why an inline `Notice` rather than letting exceptions escape: a callback that raises inside a
widget prints a traceback into the notebook's log (or nowhere), and a half-updated widget is
left behind. Every button and observer here goes through `guarded`, which turns an exception
into one readable line in the widget, logs the traceback at debug level, and leaves the rest of
the UI working.

Figures are put into an `ipywidgets.Output` as plotly mime bundles (`FigureBox`), set as data
rather than printed from inside `with output:`. That works from worker threads (progress
callbacks, a run finishing on labkit's loop thread), needs no anywidget (which plotly's
`FigureWidget` wants from plotly 6 on), and renders through the jupyterlab-plotly extension.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import LabkitError

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "FigureBox",
    "Notice",
    "describe_error",
    "esc",
    "figure_bundle",
    "guarded",
    "html_table",
    "pre",
    "pretty",
]

log = logging.getLogger("labkit.widgets")

_COLORS = {"info": "#31708f", "ok": "#2e7d32", "warn": "#8a6d3b", "error": "#a94442"}
_BACKGROUNDS = {"info": "#eef6fb", "ok": "#edf7ee", "warn": "#fcf8e3", "error": "#f9eded"}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def describe_error(exc: BaseException) -> str:
    """One line a user can act on: labkit errors already name the problem and the fix."""
    name = type(exc).__name__
    text = str(exc).strip() or repr(exc)
    if isinstance(exc, LabkitError | ValueError | KeyError | TypeError | OSError):
        return f"{name}: {text}"
    return f"{name}: {text} (unexpected; the traceback is in the 'labkit.widgets' log)"


class Notice:
    """A one-line (or short multi-line) message under a widget: info, ok, warn or error."""

    def __init__(self) -> None:
        import ipywidgets as w

        self.widget = w.HTML(value="", layout=w.Layout(width="100%"))
        self.kind = ""
        """'' when empty, else info | ok | warn | error (tests read this)."""
        self.text = ""
        """The plain text shown (tests read this)."""

    def show(self, kind: str, text: str) -> None:
        self.kind, self.text = kind, text
        if not text:
            self.widget.value = ""
            return
        body = "<br>".join(esc(line) for line in text.splitlines())
        self.widget.value = (
            f"<div class='labkit-notice labkit-{kind}' style='padding:4px 8px;margin:2px 0;"
            f"border-left:3px solid {_COLORS[kind]};background:{_BACKGROUNDS[kind]};"
            f"color:{_COLORS[kind]};font-size:12px;line-height:1.4'>{body}</div>"
        )

    def clear(self) -> None:
        self.show("", "")

    def info(self, text: str) -> None:
        self.show("info", text)

    def ok(self, text: str) -> None:
        self.show("ok", text)

    def warn(self, text: str) -> None:
        self.show("warn", text)

    def error(self, error: BaseException | str) -> None:
        self.show("error", error if isinstance(error, str) else describe_error(error))


def guarded(notice: Notice, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a widget callback so an exception becomes an inline error, never a traceback."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            log.debug("widget callback %s failed", getattr(fn, "__name__", fn), exc_info=True)
            notice.error(exc)
            return None

    call.__name__ = getattr(fn, "__name__", "callback")
    call.__doc__ = fn.__doc__
    return call


def figure_bundle(fig: go.Figure, name: str = "") -> dict[str, Any]:
    """An nbformat display_data output rendering `fig` with the plotly mimetype."""
    spec = json.loads(fig.to_json())
    spec["config"] = {"responsive": True, "displaylogo": False}
    title = (fig.layout.title.text if fig.layout.title else None) or name or "figure"
    return {
        "output_type": "display_data",
        "data": {
            "application/vnd.plotly.v1+json": spec,
            "text/plain": f"<plotly figure: {title}>",
        },
        "metadata": {},
    }


class FigureBox:
    """An `ipywidgets.Output` holding plotly figures, replaced in one assignment."""

    def __init__(self, height: str | None = None) -> None:
        import ipywidgets as w

        self.widget = w.Output(layout=w.Layout(width="100%", min_height=height or "0px"))
        self.figures: dict[str, go.Figure] = {}
        """The figures currently shown, by name (tests read this)."""

    def set(self, figures: Mapping[str, go.Figure] | Sequence[go.Figure]) -> None:
        named = (
            dict(figures)
            if isinstance(figures, Mapping)
            else {str(i): f for i, f in enumerate(figures)}
        )
        self.widget.outputs = tuple(figure_bundle(f, k) for k, f in named.items())
        self.figures = named

    def set_html(self, markup: str) -> None:
        self.widget.outputs = (
            {
                "output_type": "display_data",
                "data": {"text/html": markup, "text/plain": "(see the HTML view)"},
                "metadata": {},
            },
        )
        self.figures = {}

    def clear(self) -> None:
        self.widget.outputs = ()
        self.figures = {}


def html_table(
    df: pd.DataFrame,
    *,
    max_rows: int = 50,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
    row_style: Callable[[Mapping[str, Any]], str] | None = None,
    empty: str = "nothing to show",
) -> str:
    """A compact, escaped HTML table of the first `max_rows` rows (cells already formatted)."""
    if df.empty:
        return f"<div style='color:#777;font-size:12px;padding:4px'>{esc(empty)}</div>"
    formats = formats or {}
    cols = [str(c) for c in df.columns]
    head = "".join(f"<th style='text-align:left;padding:2px 6px'>{esc(c)}</th>" for c in cols)
    rows = []
    for rec in df.head(max_rows).to_dict("records"):
        style = row_style(rec) if row_style else ""
        cells = "".join(
            "<td style='padding:2px 6px;vertical-align:top'>"
            f"{formats[c](rec[c]) if c in formats else esc(_cell(rec[c]))}</td>"
            for c in cols
        )
        rows.append(f"<tr style='{style}'>{cells}</tr>")
    more = (
        f"<div style='color:#777;font-size:11px'>showing {max_rows} of {len(df)} rows</div>"
        if len(df) > max_rows
        else ""
    )
    return (
        "<table class='labkit-table' style='border-collapse:collapse;font-size:12px'>"
        f"<thead><tr style='border-bottom:1px solid #ccc'>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{more}"
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return ""
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def pretty(value: Any) -> str:
    """JSON-ish text for a detail pane (dicts and lists indented)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def pre(value: Any, *, max_height: str = "220px") -> str:
    return (
        f"<pre style='white-space:pre-wrap;word-break:break-word;max-height:{max_height};"
        "overflow:auto;margin:2px 0;padding:4px;background:#f7f7f7;font-size:12px'>"
        f"{esc(pretty(value))}</pre>"
    )
