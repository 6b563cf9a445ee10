"""The item matrix: every item's inputs and expected value beside every variant's answer.

Why: a success rate says which variant wins; the items say whether the win is real (a variant
answering "positive" to everything wins on a positive-heavy sample) and where the next prompt
edit comes from. One row per item (and repeat), one column per variant, any number of them,
each cell with the reply, the parsed value, pass/fail, the evaluators' reasons, the
confidence and, when a fallback answered, the model that did.

Speed: `matrix_frame` pivots the results once (vectorised) and precomputes the filter flags
(disagreement by parsed value, failures, lowest confidence) and a lower-cased search text; a
filter, search or sort change only masks and reorders those columns and renders one page.

Human judgement: a thumbs up/down and a comment on a cell is stored in the results frame as
a ``human`` score (in `scores`, beside the evaluators') and a `human_comment` column, so
`Results.judged_by("human")` gives the same statistics, charts and export on the human verdict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..experiments.diagnostics import reasons_column
from ..experiments.diagnostics import reasons_text as reasons_of
from ._common import Notice, esc, guarded

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ItemMatrix", "judge_cell", "matrix_frame", "reasons_of"]

SORTS = ("item", "disagreements first", "failures first", "lowest confidence first")
HUMAN = "human"


def matrix_frame(
    results: Any,
    by: str = "variant",
    records: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """(wide frame, variants): one row per (item_id, repeat); per variant `v` the columns
    `answer|v`, `output|v`, `passed|v`, `confidence|v`, `reasons|v`, `model_id|v`, `human|v`;
    plus `inputs`, `expected`, and the flags `disagree`, `failed`, `min_confidence`, `text`.
    """
    import numpy as np
    import pandas as pd

    from ..experiments.diagnostics import answered_by_other, dataset_records
    from .compare import answers

    df: pd.DataFrame = getattr(results, "df", results)
    recs = dict(records) if records is not None else dataset_records(results)
    variants = [str(v) for v in dict.fromkeys(df[by].tolist())]
    keys = ["item_id", "repeat"] if "repeat" in df.columns else ["item_id"]
    long = pd.DataFrame({k: df[k] for k in keys})
    long["v"] = df[by].astype(str)
    long["answer"] = answers(df)
    long["output"] = df.get("output", None)
    long["passed"] = pd.to_numeric(df["passed"], errors="coerce").astype(float)
    long["confidence"] = (
        pd.to_numeric(df["confidence"], errors="coerce") if "confidence" in df else np.nan
    )
    exp_col = df["expected"] if "expected" in df.columns else None
    expected = (
        exp_col.tolist()
        if exp_col is not None
        else [(recs.get(str(i)) or {}).get("expected") for i in df["item_id"]]
    )
    long["reasons"] = reasons_column(df, expected)  # the one text (diagnostics.reasons_text)
    long["model_id"] = np.where(answered_by_other(df), df.get("model_id"), None)
    human = [
        (s.get(HUMAN) if isinstance(s, Mapping) else None)
        for s in df.get("scores", [None] * len(df))
    ]
    long["human"] = pd.to_numeric(pd.Series(human, index=df.index), errors="coerce")
    long["comment"] = df["human_comment"] if "human_comment" in df.columns else None
    wide = long.drop_duplicates([*keys, "v"]).set_index([*keys, "v"]).unstack("v")
    wide.columns = [f"{field}|{v}" for field, v in wide.columns]
    wide = wide.reset_index()
    for v in variants:  # variants with no row for an item still get their columns
        for field in (
            "answer",
            "output",
            "passed",
            "confidence",
            "reasons",
            "model_id",
            "human",
            "comment",
        ):
            if f"{field}|{v}" not in wide:
                wide[f"{field}|{v}"] = None
    ids = wide["item_id"].astype(str)
    wide["inputs"] = [
        {k: v for k, v in (recs.get(i) or {}).items() if k not in ("id", "expected")} for i in ids
    ]
    if exp_col is not None:
        first = dict(zip(df["item_id"].astype(str), exp_col, strict=True))
        wide["expected"] = [first.get(i) for i in ids]
    else:
        wide["expected"] = [(recs.get(i) or {}).get("expected") for i in ids]
    ans = wide[[f"answer|{v}" for v in variants]]
    # vectorised "more than one distinct answer": any answer differs from the row's first one
    first = ans.bfill(axis=1).iloc[:, 0]
    wide["disagree"] = (ans.ne(first, axis=0) & ans.notna()).any(axis=1).to_numpy()
    passed = wide[[f"passed|{v}" for v in variants]].astype(float)
    wide["failed"] = (passed == 0).any(axis=1).to_numpy()
    wide["n_failed"] = (passed == 0).sum(axis=1).to_numpy()
    wide["min_confidence"] = wide[[f"confidence|{v}" for v in variants]].astype(float).min(axis=1)
    parts = [
        ids,
        pd.Series([json.dumps(x, ensure_ascii=False, default=str) for x in wide["inputs"]]),
        pd.Series([json.dumps(x, ensure_ascii=False, default=str) for x in wide["expected"]]),
    ]
    parts += [ans[c].fillna("").astype(str) for c in ans.columns]
    text = parts[0].str.cat([p.reset_index(drop=True) for p in parts[1:]], sep=" \x1f ")
    wide["text"] = text.str.lower().to_numpy()
    return wide, variants


def judge_cell(
    results: Any,
    item_id: str,
    variant: str,
    up: bool | None,
    comment: str = "",
    *,
    repeat: int = 0,
    by: str = "variant",
) -> int:
    """Record a human verdict on one cell: ``scores["human"]`` = 1.0 (up) / 0.0 (down), or
    removed (None), and `human_comment`. Returns the frame row it changed."""
    df = getattr(results, "df", results)
    mask = (df["item_id"].astype(str) == str(item_id)) & (df[by].astype(str) == str(variant))
    if "repeat" in df.columns:
        mask &= df["repeat"] == repeat
    hits = df.index[mask]
    if not len(hits):
        raise ValueError(
            f"no row for item {item_id!r} in {by} {variant!r} (repeat {repeat}); pick a cell "
            "shown in the matrix"
        )
    row = hits[0]
    scores = dict(df.at[row, "scores"] or {})
    if up is None:
        scores.pop(HUMAN, None)
    else:
        scores[HUMAN] = 1.0 if up else 0.0
    df.at[row, "scores"] = scores
    if "human_comment" not in df.columns:
        df["human_comment"] = None
    df.at[row, "human_comment"] = comment.strip() or None
    return int(row)


class ItemMatrix:
    """Items x variants: inputs, expected value, and each variant's answer, sortable,
    searchable and filterable; thumbs up/down and a comment per cell."""

    def __init__(
        self,
        results: Any,
        *,
        by: str = "variant",
        max_rows: int = 50,
        low_confidence: float = 0.5,
    ) -> None:
        import ipywidgets as w

        self.results = results
        self.by = by
        self.max_rows = max_rows
        self.notice = Notice()
        self.frame, self.variants = matrix_frame(results, by)
        self.search = w.Text(
            placeholder="search inputs, labels and answers", layout=w.Layout(width="280px")
        )
        self.disagreements = w.Checkbox(
            description="disagreements (by parsed value)",
            indent=False,
            layout=w.Layout(width="220px"),
        )
        self.failures = w.Checkbox(
            description="failures", indent=False, layout=w.Layout(width="90px")
        )
        self.low = w.Checkbox(
            description="confidence <", indent=False, layout=w.Layout(width="110px")
        )
        self.threshold = w.FloatSlider(
            value=low_confidence, min=0.0, max=1.0, step=0.05, layout=w.Layout(width="180px")
        )
        self.sort = w.Dropdown(
            description="sort",
            options=[*SORTS, *[f"passed: {v}" for v in self.variants]],
            value="item",
            layout=w.Layout(width="300px"),
        )
        self.count = w.HTML()
        self.table = w.HTML()
        refilter = guarded(self.notice, lambda _: self.update())
        for c in (
            self.search,
            self.disagreements,
            self.failures,
            self.low,
            self.threshold,
            self.sort,
        ):
            c.observe(refilter, names="value")
        # judging a cell
        self.cell_item = w.Combobox(
            placeholder="item id",
            options=[str(i) for i in dict.fromkeys(self.frame["item_id"])],
            layout=w.Layout(width="140px"),
        )
        self.cell_variant = w.Dropdown(options=self.variants, layout=w.Layout(width="260px"))
        self.comment = w.Text(placeholder="comment (optional)", layout=w.Layout(width="260px"))
        self.up = w.Button(
            description="👍",
            tooltip="a person judged this answer right",
            layout=w.Layout(width="48px"),
        )
        self.down = w.Button(
            description="👎",
            tooltip="a person judged this answer wrong",
            layout=w.Layout(width="48px"),
        )
        self.up.on_click(guarded(self.notice, lambda _: self.judge_clicked(True)))
        self.down.on_click(guarded(self.notice, lambda _: self.judge_clicked(False)))
        self.widget = w.VBox(
            [
                w.HTML(
                    "<b>Item matrix</b> <span style='color:#777;font-size:12px'>one row per "
                    "item, one column per variant</span>"
                ),
                w.HBox([self.search, self.sort]),
                w.HBox([self.disagreements, self.failures, self.low, self.threshold]),
                self.notice.widget,
                self.count,
                self.table,
                w.HBox(
                    [
                        w.HTML("<span style='font-size:12px'>judge a cell:&nbsp;</span>"),
                        self.cell_item,
                        self.cell_variant,
                        self.comment,
                        self.up,
                        self.down,
                    ]
                ),
            ],
            layout=w.Layout(border="1px solid #ddd", padding="6px"),
        )
        self.widget.add_class("labkit-matrix")
        guarded(self.notice, self.update)()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ----------------------------------------------------------------- filtering
    def set_filters(
        self,
        *,
        search: str | None = None,
        disagreements: bool | None = None,
        failures: bool | None = None,
        low_confidence: bool | float | None = None,
        sort: str | None = None,
    ) -> None:
        """Set several controls, then update once."""
        self._quiet = True
        try:
            if search is not None:
                self.search.value = search
            if disagreements is not None:
                self.disagreements.value = disagreements
            if failures is not None:
                self.failures.value = failures
            if isinstance(low_confidence, float) and not isinstance(low_confidence, bool):
                self.threshold.value, self.low.value = low_confidence, True
            elif low_confidence is not None:
                self.low.value = bool(low_confidence)
            if sort is not None:
                self.sort.value = sort
        finally:
            self._quiet = False
        self.update()

    _quiet = False

    def view(self) -> pd.DataFrame:
        """The rows passing the filters, in the chosen order."""
        f = self.frame
        mask = None
        q = self.search.value.strip().lower()
        if q:
            mask = f["text"].str.contains(q, regex=False)
        for flag, col in ((self.disagreements.value, "disagree"), (self.failures.value, "failed")):
            if flag:
                mask = f[col] if mask is None else mask & f[col]
        if self.low.value:
            low = f["min_confidence"] < self.threshold.value
            mask = low if mask is None else mask & low
        out = f if mask is None else f[mask]
        s = self.sort.value
        if s == "disagreements first":
            out = out.sort_values("disagree", ascending=False, kind="stable")
        elif s == "failures first":
            out = out.sort_values("n_failed", ascending=False, kind="stable")
        elif s == "lowest confidence first":
            out = out.sort_values("min_confidence", kind="stable", na_position="last")
        elif s.startswith("passed: "):
            out = out.sort_values(f"passed|{s[8:]}", kind="stable", na_position="last")
        return out

    def update(self) -> None:
        if self._quiet:
            return
        rows = self.view()
        f = self.frame
        self.count.value = (
            f"<span style='font-size:12px'>{len(rows)} of {len(f)} rows · "
            f"{int(f['disagree'].sum())} where the variants' parsed answers differ · "
            f"{int(f['failed'].sum())} with a failure"
            + (f" · first {self.max_rows} shown" if len(rows) > self.max_rows else "")
            + "</span>"
        )
        self.table.value = self.render(rows.head(self.max_rows))

    # ----------------------------------------------------------------- judging
    def judge_clicked(self, up: bool) -> None:
        item = self.cell_item.value.strip()
        if not item:
            raise ValueError("type the item id of the cell to judge (first column)")
        judge_cell(
            self.results, item, str(self.cell_variant.value), up, self.comment.value, by=self.by
        )
        self.frame, self.variants = matrix_frame(self.results, self.by)
        self.notice.ok(
            f"recorded {'👍' if up else '👎'} on item {item} · {self.cell_variant.value} as the "
            "'human' score; Results.judged_by('human') gives statistics on it"
        )
        self.comment.value = ""
        self.update()

    # ----------------------------------------------------------------- rendering
    def render(self, rows: pd.DataFrame) -> str:
        if rows.empty:
            return "<div style='color:#777;font-size:12px;padding:4px'>no rows match</div>"
        width = max(12, 70 // max(len(self.variants), 1))
        head = [
            "<th style='width:7%'>item</th>",
            "<th style='width:15%'>inputs</th>",
            "<th style='width:11%'>expected</th>",
        ]
        head += [f"<th style='width:{width}%'>{esc(v)}</th>" for v in self.variants]
        out = [
            "<style>.labkit-matrix-table td{padding:3px 6px;word-break:break-word;"
            "overflow-wrap:anywhere}</style>"
            "<table class='labkit-table labkit-matrix-table' style='border-collapse:collapse;"
            "font-size:12px;width:100%;table-layout:fixed'><thead><tr style='text-align:left'>"
            + "".join(head)
            + "</tr></thead><tbody>"
        ]
        t = self.threshold.value
        for r in rows.to_dict("records"):
            rep = f" #{r['repeat']}" if r.get("repeat") else ""
            cells = [
                f"<td class='lk-item'>{esc(r['item_id'])}{rep}</td>",
                f"<td class='lk-inputs'>{_inputs_html(r['inputs'])}</td>",
                f"<td class='lk-expected'><code>{esc(_short(r['expected']))}</code></td>",
            ]
            cells += [f"<td class='lk-cell'>{_cell_html(r, v, t)}</td>" for v in self.variants]
            style = "background:#fff6e5" if r["disagree"] else ""
            out.append(
                f"<tr style='border-top:1px solid #eee;vertical-align:top;{style}'>"
                + "".join(cells)
                + "</tr>"
            )
        out.append("</tbody></table>")
        return "".join(out)


def _short(value: Any, limit: int = 200) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _inputs_html(inputs: Mapping[str, Any]) -> str:
    return "<br>".join(
        f"<b>{esc(k)}</b>: <span title='{esc(v)}'>{esc(_short(v, 160))}</span>"
        for k, v in inputs.items()
    )


def _cell_html(r: Mapping[str, Any], v: str, threshold: float) -> str:
    passed = r.get(f"passed|{v}")
    if passed is None or passed != passed:
        return "<span style='color:#777'>(no row)</span>"
    mark = (
        "<b style='color:#2e7d32'>✓ pass</b>"
        if passed >= 0.5
        else "<b style='color:#c62828'>✗ fail</b>"
    )
    conf = r.get(f"confidence|{v}")
    conf_txt = ""
    if conf is not None and conf == conf:
        color = "#c62828" if conf < threshold else "#555"
        conf_txt = f" <span style='color:{color}'>conf {conf:.2f}</span>"
    human = r.get(f"human|{v}")
    human_txt = ""
    if human is not None and human == human:
        comment = r.get(f"comment|{v}") or ""
        human_txt = f" <span title='{esc(comment)}'>{'👍' if human >= 0.5 else '👎'}</span>"
    who = r.get(f"model_id|{v}")
    who_txt = (
        f"<div style='color:#b26a00'>answered by {esc(who)}</div>"
        if isinstance(who, str) and who
        else ""
    )
    answer = r.get(f"answer|{v}") or ""
    output = r.get(f"output|{v}")
    raw = ""
    if isinstance(output, str) and output.strip() != answer:
        raw = f"<div style='color:#888;font-size:11px' title='{esc(output)}'>reply: {esc(_short(' '.join(output.split()), 160))}</div>"
    reasons = r.get(f"reasons|{v}") or ""
    why = f"<div style='color:#a94442;font-size:11px'>{esc(reasons)}</div>" if reasons else ""
    body = (
        f"<code>{esc(_short(answer))}</code>"
        if answer
        else "<span style='color:#777'>(nothing parsed)</span>"
    )
    return f"{mark}{conf_txt}{human_txt}<br>{body}{raw}{why}{who_txt}"
