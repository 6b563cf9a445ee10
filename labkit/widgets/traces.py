"""Trace browser: filter the trace store, then open one call to see what went in and came out.

Why: a wrong answer is explained by its call — the prompt as sent (redacted), the raw reply, what
the parser repaired, how many attempts and which errors, what it cost and how long it took.
The trace store has one row per attempt, cache hit or policy event; the browser groups them by
`call_id` so one pick shows the whole story of a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._common import Notice, esc, guarded, html_table, pre

if TYPE_CHECKING:
    import pandas as pd

    from ..client import Client

__all__ = ["TraceBrowser"]

ANY = "(any)"
_TABLE_COLUMNS = [
    "ts",
    "kind",
    "model",
    "status",
    "attempt",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_s",
    "cache_hit",
    "error_type",
]


class TraceBrowser:
    """Filter trace rows by run, model, error or cache hit; show one call's full record.

    `results` (optional) is an experiment results frame; when given, the parsed value of a call
    is taken from it (by `trace_id`) instead of re-parsing the stored reply.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        results: pd.DataFrame | None = None,
        limit: int = 2000,
        run_id: str | None = None,
    ) -> None:
        import ipywidgets as w

        from ..client import default_client

        self.client = client or default_client()
        self.results = results
        self.limit = limit
        self._quiet = False
        self.rows: pd.DataFrame | None = None
        """All rows read by the last `refresh` (newest first)."""
        self.notice = Notice()
        small = w.Layout(width="210px")
        self.run = w.Dropdown(description="run", options=[ANY], value=ANY, layout=small)
        self.model = w.Dropdown(description="model", options=[ANY], value=ANY, layout=small)
        self.errors = w.Dropdown(
            description="errors",
            options=[ANY, "errors only", "retried, then ok", "no errors"],
            layout=small,
        )
        self.cache = w.Dropdown(description="cache", options=[ANY, "hits", "misses"], layout=small)
        self.refresh_button = w.Button(
            description="Refresh", icon="refresh", layout=w.Layout(width="100px")
        )
        self.calls = w.Select(options=[], rows=8, layout=w.Layout(width="100%"))
        self.count = w.HTML()
        self.table = w.HTML()
        self.detail = w.HTML()
        for control in (self.run, self.model, self.errors, self.cache):
            control.observe(guarded(self.notice, self._filter_changed), names="value")
        self.refresh_button.on_click(guarded(self.notice, lambda _: self.refresh()))
        self.calls.observe(
            guarded(self.notice, lambda ch: self.show_call(ch["new"])), names="value"
        )
        self.widget = w.VBox(
            [
                w.HTML("<b>Trace browser</b>"),
                w.HBox([self.run, self.model, self.errors, self.cache, self.refresh_button]),
                self.notice.widget,
                self.count,
                w.HBox(
                    [
                        w.VBox([w.HTML("<i>calls</i>"), self.calls], layout=w.Layout(width="42%")),
                        w.VBox([self.detail], layout=w.Layout(width="58%")),
                    ]
                ),
                w.HTML("<i>rows (attempts, cache hits, events)</i>"),
                self.table,
            ],
            layout=w.Layout(border="1px solid #ddd", padding="6px"),
        )
        self._want_run = run_id
        guarded(self.notice, self.refresh)()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ----------------------------------------------------------------- data
    def refresh(self) -> None:
        """Re-read the trace store and rebuild the filter choices (keeping current picks)."""
        rows = self.client.traces(limit=self.limit)
        self.rows = rows
        runs = [r for r in rows["run_id"].dropna().unique().tolist() if r]
        models = sorted(m for m in rows["model"].dropna().unique().tolist() if m)
        want_run = self._want_run or self.run.value
        self._want_run = None
        self._quiet = True  # one redraw after both filters are set, not one per change
        try:
            self._set_options(self.run, [ANY, *runs], want_run)
            self._set_options(self.model, [ANY, *models], self.model.value)
        finally:
            self._quiet = False
        self.apply()

    def _filter_changed(self, _: Any) -> None:
        if not self._quiet:
            self.apply()

    @staticmethod
    def _set_options(dropdown: Any, options: list[str], keep: str) -> None:
        dropdown.options = options
        dropdown.value = keep if keep in options else ANY

    def filtered(self) -> pd.DataFrame:
        """The rows matching the current filters (newest first)."""
        import pandas as pd

        df = self.rows if self.rows is not None else pd.DataFrame()
        if df.empty:
            return df
        mask = pd.Series(True, index=df.index)
        if self.run.value != ANY:
            mask &= df["run_id"] == self.run.value
        if self.model.value != ANY:
            mask &= df["model"] == self.model.value
        has_error = df["error_type"].map(_text).astype(bool)
        succeeded = df["call_id"].isin(df.loc[df["status"].isin(["ok", "hit"]), "call_id"])
        if self.errors.value == "errors only":  # calls that failed in the end
            mask &= has_error & ~succeeded
        elif self.errors.value == "retried, then ok":
            mask &= df["call_id"].isin(df.loc[has_error, "call_id"]) & succeeded
        elif self.errors.value == "no errors":
            mask &= ~has_error
        hit = df["cache_hit"].map(_truthy).astype(bool)
        if self.cache.value == "hits":
            mask &= hit
        elif self.cache.value == "misses":
            mask &= ~hit & df["kind"].isin(["attempt"])
        return df[mask]

    def set_filters(
        self,
        *,
        run: str | None = None,
        model: str | None = None,
        errors: str | None = None,
        cache: str | None = None,
    ) -> None:
        """Set filters from code (`errors`: 'errors only' | 'no errors'; `cache`: 'hits' | 'misses')."""
        for control, value in (
            (self.run, run),
            (self.model, model),
            (self.errors, errors),
            (self.cache, cache),
        ):
            if value is not None:
                if value not in control.options:
                    raise ValueError(
                        f"{control.description} {value!r} is not available; choose one of "
                        f"{list(control.options)}"
                    )
                control.value = value

    def apply(self) -> None:
        """Redraw the count, the call list and the table for the current filters."""
        df = self.filtered()
        total = 0 if self.rows is None else len(self.rows)
        calls = df.drop_duplicates("call_id") if not df.empty else df
        self.count.value = (
            f"<span style='font-size:12px'>{len(df)} of {total} rows · {len(calls)} calls</span>"
        )
        options = [(self._label(r), str(r["call_id"])) for r in calls.head(500).to_dict("records")]
        current = self.calls.value
        self.calls.options = options
        ids = [v for _, v in options]
        if current in ids:
            self.calls.value = current
        elif ids:  # default: the newest call that has a reply, not a parent or event row
            replied = set(df.loc[df["response"].map(_text).astype(bool), "call_id"].astype(str))
            self.calls.value = next((i for i in ids if i in replied), ids[0])
        else:
            self.detail.value = ""
        shown = df[[c for c in _TABLE_COLUMNS if c in df.columns]] if not df.empty else df
        self.table.value = html_table(
            shown,
            max_rows=100,
            formats={"ts": lambda t: esc(str(t)[11:19])},
            row_style=lambda r: "background:#fbeaea" if _text(r.get("error_type")) else "",
            empty="no trace rows match these filters",
        )

    @staticmethod
    def _label(row: Mapping[str, Any]) -> str:
        when = str(row.get("ts"))[11:19]
        mark = {"hit": "cache", "error": "ERROR", "ok": "ok", "event": "event"}.get(
            str(row.get("status")), str(row.get("status"))
        )
        item = f" {row['item_id']}" if row.get("item_id") else ""
        # ids are time-ordered, so their starts repeat; the end tells calls apart
        return f"{when} {row.get('model') or '?'} {mark}{item} · …{str(row.get('call_id'))[-8:]}"

    # ----------------------------------------------------------------- one call
    def call_record(self, call_id: str) -> dict[str, Any]:
        """Everything known about one call: prompt, reply, parsed value, repairs, tokens, cost,
        latency, attempts and events. Reads the trace store directly, so any call id works."""
        rows = self.client.traces(call_id=call_id, limit=None)
        if rows.empty:
            raise ValueError(
                f"no trace rows for call {call_id!r}; press Refresh or pick another call"
            )
        rows = rows.sort_values("ts")
        answered = rows[rows["kind"].isin(["attempt", "cache_hit"])]
        final = answered.iloc[-1] if not answered.empty else rows.iloc[-1]
        record = {
            "call_id": call_id,
            "run_id": final.get("run_id"),
            "item_id": final.get("item_id"),
            "model": final.get("model"),
            "alias": final.get("alias"),
            "status": final.get("status"),
            "cache_hit": _truthy(final.get("cache_hit")),
            "prompt": final.get("prompt"),
            "reply": final.get("response"),
            "params": final.get("params"),
            "parse_ok": final.get("parse_ok"),
            "repairs": final.get("repairs") or [],
            "prompt_tokens": _int(final.get("prompt_tokens")),
            "completion_tokens": _int(final.get("completion_tokens")),
            "cached_tokens": _int(final.get("cached_tokens")),
            "cost_usd": _float(final.get("cost_usd")),
            "latency_s": _float(final.get("latency_s")),
            "ttft_s": _float(final.get("ttft_s")),
            "error": final.get("error"),
            "error_type": final.get("error_type"),
            "attempts": int((rows["kind"] == "attempt").sum()),
            "events": [
                f"{r['event']}: {r['meta']}"
                for r in rows[rows["kind"] == "event"].to_dict("records")
            ],
            "errors": [
                f"attempt {r['attempt']} on {r['model']}: {r['error_type']}: {r['error']}"
                for r in rows[rows["error_type"].notna()].to_dict("records")
            ],
        }
        record["parsed"], record["parsed_from"] = self._parsed(call_id, record)
        return record

    def _parsed(self, call_id: str, record: Mapping[str, Any]) -> tuple[Any, str]:
        if self.results is not None and "trace_id" in self.results.columns:
            match = self.results[self.results["trace_id"] == call_id]
            if not match.empty and "parsed" in match.columns:
                return match.iloc[0]["parsed"], "results frame"
        if record.get("parse_ok") is None or not isinstance(record.get("reply"), str):
            return None, "no schema was given"
        try:
            from ..structured import parse

            return parse(record["reply"]).value, "reply re-parsed without its schema"
        except Exception as exc:  # the detail pane must render even if the parser chokes
            return None, f"could not re-parse: {type(exc).__name__}"

    def show_call(self, call_id: str | None) -> None:
        if not call_id:
            self.detail.value = ""
            return
        r = self.call_record(call_id)
        status = "cache hit" if r["cache_hit"] else str(r["status"])
        facts = (
            f"<b>{esc(r['model'])}</b> · {esc(status)} · {r['attempts']} attempt(s) · "
            f"tokens {r['prompt_tokens']} in / {r['completion_tokens']} out"
            f" ({r['cached_tokens']} cached) · ${r['cost_usd']:.5f} · {r['latency_s']:.2f} s"
            + (f" (ttft {r['ttft_s']:.2f} s)" if r["ttft_s"] else "")
        )
        ids = f"call {esc(call_id)}" + (f" · run {esc(r['run_id'])}" if r["run_id"] else "")
        ids += f" · item {esc(r['item_id'])}" if r["item_id"] else ""
        parts = [
            f"<div style='font-size:12px'>{facts}<br><span style='color:#777'>{ids}</span></div>",
            "<b style='font-size:12px'>prompt (redacted)</b>",
            pre(_messages_text(r["prompt"])),
            "<b style='font-size:12px'>raw reply</b>",
            pre(r["reply"] if r["reply"] is not None else "(no reply)"),
        ]
        if r["parse_ok"] is not None or r["parsed"] is not None:
            parts += [
                f"<b style='font-size:12px'>parsed value</b> <span style='color:#777;font-size:11px'>"
                f"({esc(r['parsed_from'])}; parse ok: {esc(r['parse_ok'])})</span>",
                pre(r["parsed"]),
                "<b style='font-size:12px'>repair log</b>",
                pre(r["repairs"] or _no_repairs(r)),
            ]
        if r["errors"]:
            parts += [
                "<b style='font-size:12px;color:#a94442'>errors</b>",
                pre("\n".join(r["errors"])),
            ]
        if r["events"]:
            parts += ["<b style='font-size:12px'>policy events</b>", pre("\n".join(r["events"]))]
        self.detail.value = "".join(parts)


def _messages_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return "" if messages is None else str(messages)
    return "\n\n".join(
        f"[{m.get('role', '?')}] {m.get('content', '')}" if isinstance(m, Mapping) else str(m)
        for m in messages
    )


def _no_repairs(r: Mapping[str, Any]) -> str:
    """What an empty repair log means: strict JSON, or no JSON to repair at all."""
    if _truthy(r.get("parse_ok")):
        return "(no repairs: the reply was strict JSON)"
    return "(nothing repaired: no JSON could be read from the reply)"


def _text(value: Any) -> str:
    """A string cell as text; None and NaN (what pandas gives for a missing one) as ''."""
    return value if isinstance(value, str) else ""


def _truthy(value: Any) -> bool:
    return value is not None and value == value and bool(value)


def _int(value: Any) -> int:
    try:
        return 0 if value is None or value != value else int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return 0.0 if value is None or value != value else float(value)
    except (TypeError, ValueError):
        return 0.0
