"""A/B compare view: two variants side by side, item by item, with the paired statistics.

Why item by item: a success rate says which variant wins; the rows where the two disagree say
*why*, and they are where the next prompt edit comes from. Why paired: both variants answered
the same items, so the comparison is on the items (`labkit.experiments.stats.paired_comparison`: paired
bootstrap interval and exact McNemar test), not on two independent rates.

Speed: choosing a pair joins the two variants' rows once (vectorised) and computes the
statistics and charts once; a filter change only masks precomputed columns and redraws the
first `max_rows` rows, so it stays interactive on a 10,000-row frame.
"""

from __future__ import annotations

import difflib
import json
import math
from typing import TYPE_CHECKING, Any

from ..experiments.diagnostics import own_answers, reasons_column, significant, verdict
from ..usage import money
from ._common import FigureBox, Notice, esc, guarded

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CompareView", "answers", "pair_frame"]

_KEEP = ("output", "parsed", "passed", "confidence", "error_type", "error", "trace_id", "expected")


def _answer(parsed: Any, output: Any) -> str:
    """What a variant answered, canonicalised so that formatting differences do not count."""
    if isinstance(parsed, dict | list):
        return json.dumps(parsed, sort_keys=True, ensure_ascii=False, default=str)
    if parsed is not None and not (isinstance(parsed, float) and math.isnan(parsed)):
        return str(parsed)
    return (
        ""
        if output is None or (isinstance(output, float) and math.isnan(output))
        else str(output).strip()
    )


def answers(df: pd.DataFrame) -> pd.Series:
    """Each row's canonical answer (parsed value as sorted JSON, else the stripped text)."""
    import pandas as pd

    parsed = df["parsed"] if "parsed" in df else pd.Series(None, index=df.index)
    output = df["output"] if "output" in df else pd.Series(None, index=df.index)
    return pd.Series(
        [_answer(p, o) for p, o in zip(parsed, output, strict=True)], index=df.index, dtype=object
    )


def pair_frame(
    df: pd.DataFrame,
    a: str,
    b: str,
    by: str = "variant",
    answer: pd.Series | None = None,
    why: pd.Series | None = None,
) -> pd.DataFrame:
    """One row per (item_id, repeat) with both variants' answers side by side (`*_a`, `*_b`)
    and the flags the filters use: `disagree`, `failed`, `passed_differ`, `only_one` (the
    other variant has no row). `answer` is `answers(df)` when already computed; `why`
    (`diagnostics.reasons_column(df)`) adds each side's reasons as `why_a` / `why_b`."""
    import pandas as pd

    cols = [c for c in _KEEP if c in df.columns]
    keys = ["item_id", "repeat"] if "repeat" in df.columns else ["item_id"]

    def side(name: str) -> pd.DataFrame:
        part = df.loc[df[by] == name, [*keys, *cols]].drop_duplicates(keys)
        part["answer"] = answer.loc[part.index] if answer is not None else answers(part)
        if why is not None:
            part["why"] = why.loc[part.index]
        return part.set_index(keys)

    left, right = side(a), side(b)
    expected = None
    if "expected" in cols:
        expected = left["expected"].combine_first(right["expected"])
        left, right = left.drop(columns="expected"), right.drop(columns="expected")
    joined = left.join(right, how="outer", lsuffix="_a", rsuffix="_b")
    if expected is not None:
        joined["expected"] = expected.reindex(joined.index)
    joined = joined.reset_index()
    has_a = joined["answer_a"].notna()
    has_b = joined["answer_b"].notna()
    joined["only_one"] = has_a != has_b
    joined["disagree"] = joined["answer_a"].fillna("\x00") != joined["answer_b"].fillna("\x00")
    for s in ("a", "b"):
        passed = joined.get(f"passed_{s}", pd.Series(pd.NA, index=joined.index))
        joined[f"ok_{s}"] = pd.to_numeric(passed, errors="coerce").fillna(0).astype(bool)
        if f"confidence_{s}" not in joined:
            joined[f"confidence_{s}"] = float("nan")
        joined[f"confidence_{s}"] = pd.to_numeric(joined[f"confidence_{s}"], errors="coerce")
    joined["failed"] = ~(joined["ok_a"] & joined["ok_b"])
    joined["passed_differ"] = joined["ok_a"] != joined["ok_b"]
    return joined


class CompareView:
    """Pick two variants; see their answers per item, filtered, with the paired statistics.

    `results` is an experiment's `Results` (anything with a `.df`) or a results DataFrame
    (contract in `labkit.experiments.stats`). `by` is the column naming the variants.
    """

    def __init__(
        self,
        results: Any,
        *,
        a: str | None = None,
        b: str | None = None,
        by: str = "variant",
        low_confidence: float = 0.5,
        max_rows: int = 40,
        charts: bool = True,
    ) -> None:
        import ipywidgets as w

        self.df: pd.DataFrame = getattr(results, "df", results)
        self._source = results
        self.by = by
        self.max_rows = max_rows
        self.show_charts = charts
        self.notice = Notice()
        self.pairs: pd.DataFrame | None = None
        """The side-by-side frame of the current pair (all rows; see `pair_frame`)."""
        self.result: Any = None
        """The current `labkit.experiments.stats.PairedResult`."""
        self._answers: pd.Series | None = None
        self._why: pd.Series | None = None
        self.excluded = 0
        """Answers left out of the current comparison because a fallback model gave them."""
        variants = [str(v) for v in dict.fromkeys(self.df[by].tolist())] if by in self.df else []
        a = a if a is not None else (variants[0] if variants else None)
        b = b if b is not None else (variants[1] if len(variants) > 1 else a)
        dd = w.Layout(width="330px")
        self.a = w.Dropdown(description="A", options=variants, value=a, layout=dd)
        self.b = w.Dropdown(description="B", options=variants, value=b, layout=dd)
        self.swap = w.Button(description="swap", icon="exchange", layout=w.Layout(width="80px"))
        self.disagreements = w.Checkbox(
            description="disagreements", value=False, indent=False, layout=w.Layout(width="130px")
        )
        self.failures = w.Checkbox(
            description="failures", value=False, indent=False, layout=w.Layout(width="90px")
        )
        self.low = w.Checkbox(
            description="low confidence <",
            value=False,
            indent=False,
            layout=w.Layout(width="140px"),
        )
        self.threshold = w.FloatSlider(
            value=low_confidence,
            min=0.0,
            max=1.0,
            step=0.05,
            readout_format=".2f",
            layout=w.Layout(width="200px"),
        )
        self.count = w.HTML()
        self.stats_box = w.HTML()
        self.modes_box = w.HTML()
        self.modes: Any = None
        """`labkit.experiments.diagnostics.FailureModes` of the results (computed once)."""
        self.table = w.HTML()
        self.charts = FigureBox()
        pick = guarded(self.notice, lambda _: self.update_pair())
        self.a.observe(pick, names="value")
        self.b.observe(pick, names="value")
        self.swap.on_click(
            guarded(self.notice, lambda _: self.set_pair(self.b.value, self.a.value))
        )
        refilter = guarded(self.notice, lambda _: self.update_rows())
        for control in (self.disagreements, self.failures, self.low, self.threshold):
            control.observe(refilter, names="value")
        self.widget = w.VBox(
            [
                w.HTML("<b>A/B compare</b>"),
                w.HBox([self.a, self.b, self.swap]),
                self.stats_box,
                self.modes_box,
                self.charts.widget,
                w.HBox(
                    [
                        w.HTML("<span style='font-size:12px'>show only:&nbsp;</span>"),
                        self.disagreements,
                        self.failures,
                        self.low,
                        self.threshold,
                    ]
                ),
                self.notice.widget,
                self.count,
                self.table,
            ],
            layout=w.Layout(border="1px solid #ddd", padding="6px"),
        )
        self.widget.add_class("labkit-compare")
        if len(variants) < 2:
            self.notice.warn(
                f"need at least two values of {by!r} to compare; the results have "
                f"{variants or 'none'}. Run more prompt variants or models."
            )
        else:
            guarded(self.notice, self.update_pair)()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ----------------------------------------------------------------- actions
    def set_pair(self, a: str, b: str) -> None:
        """Choose the two variants (updates the statistics, charts and rows once)."""
        for name in (a, b):
            if name not in self.a.options:
                raise ValueError(
                    f"{self.by} {name!r} is not in the results; have {list(self.a.options)}"
                )
        self._quiet = True
        try:
            self.a.value, self.b.value = a, b
        finally:
            self._quiet = False
        self.update_pair()

    def set_filters(
        self,
        *,
        disagreements: bool | None = None,
        failures: bool | None = None,
        low_confidence: bool | float | None = None,
    ) -> None:
        """Filter the rows (AND): `low_confidence=True` or a threshold like 0.6."""
        self._quiet = True
        try:
            if disagreements is not None:
                self.disagreements.value = disagreements
            if failures is not None:
                self.failures.value = failures
            if isinstance(low_confidence, float) and not isinstance(low_confidence, bool):
                self.threshold.value = low_confidence
                self.low.value = True
            elif low_confidence is not None:
                self.low.value = bool(low_confidence)
        finally:
            self._quiet = False
        self.update_rows()

    _quiet = False

    def update_pair(self) -> None:
        if self._quiet:
            return
        from ..experiments import plots, stats

        a, b = self.a.value, self.b.value
        self.notice.clear()
        if a is None or b is None:
            return
        if a == b:
            self.notice.warn("A and B are the same variant: pick two different ones to compare.")
        if self._answers is None:
            self._answers = answers(self.df)
        if self._why is None:
            self._why = reasons_column(self.df, _expected_rows(self._source))
        self.pairs = pair_frame(self.df, a, b, self.by, self._answers, self._why)
        # A comparison of models leaves out answers a fallback gave (they are not theirs).
        sub, self.excluded = own_answers(self.df, [a, b], self.by)
        if a != b:
            self.result = stats.paired_comparison(sub, a, b, self.by)
            self.stats_box.value = self._stats_html(sub)
        else:
            self.result = None
            self.stats_box.value = ""
        self.modes_box.value = self._modes_html(a, b)
        if self.show_charts:
            self.charts.set(
                {
                    "success": plots.success_chart(sub, self.by),
                    "forest": plots.forest_chart(sub, self.by, baseline=b if a != b else None),
                }
            )
        self.update_rows()

    def view(self) -> pd.DataFrame:
        """The rows of the current pair that pass the filters."""
        import pandas as pd

        if self.pairs is None:
            return pd.DataFrame()
        p = self.pairs
        mask = pd.Series(True, index=p.index)
        if self.disagreements.value:
            mask &= p["disagree"]
        if self.failures.value:
            mask &= p["failed"]
        if self.low.value:
            t = self.threshold.value
            mask &= (p["confidence_a"] < t) | (p["confidence_b"] < t)
        return p[mask]

    def update_rows(self) -> None:
        if self._quiet or self.pairs is None:
            return
        rows = self.view()
        n_dis = int(self.pairs["disagree"].sum())
        n_fail = int(self.pairs["failed"].sum())
        self.count.value = (
            f"<span style='font-size:12px'>{len(rows)} of {len(self.pairs)} rows shown · "
            f"{n_dis} disagreements · {n_fail} with a failure"
            + (f" · first {self.max_rows} listed" if len(rows) > self.max_rows else "")
            + "</span>"
        )
        self.table.value = self._table_html(rows.head(self.max_rows))

    # ----------------------------------------------------------------- rendering
    def _stats_html(self, sub: pd.DataFrame) -> str:
        from ..experiments import stats

        r = self.result
        a, b = esc(self.a.value), esc(self.b.value)
        if r is None or r.n_items == 0:
            return "<div style='font-size:12px'>no items answered by both: nothing to compare</div>"
        sig = significant(r)
        said = verdict(r, f"A ({self.a.value})", f"B ({self.b.value})")
        mcnemar = (
            "Exact McNemar test: counts only the discordant items (one variant right, the other "
            f"wrong); p = {r.p_value:.3g}. The verdict follows the interval, one rule everywhere."
        )
        lines = [
            f"<b class='labkit-verdict' data-significant='{str(sig).lower()}' "
            f"style='color:{'#2e7d32' if sig else '#555'}'>{esc(said)}</b>",
            f"<b>A</b> {a} {r.rate_a:.0%} vs <b>B</b> {b} {r.rate_b:.0%} on {r.n_items} shared "
            f"items · difference {r.diff:+.0%} (95% CI {r.ci_low:+.0%} to {r.ci_high:+.0%}) · "
            f"<span title='{esc(mcnemar)}' style='text-decoration:underline dotted'>discordant"
            f"</span> items: A right and B wrong on {r.a_only}, B right and A wrong on {r.b_only}",
        ]
        if self.excluded:
            lines.append(
                f"<i>{self.excluded} answers given by a fallback model (not the variant's own) "
                "are left out of this comparison of models</i>"
            )
        try:
            cost = stats.cost_summary(sub, self.by).set_index(self.by)
            lat = stats.latency_summary(sub, self.by).set_index(self.by)
            for name, tag in ((self.a.value, "A"), (self.b.value, "B")):
                rows = sub[sub[self.by] == name]
                who = rows.loc[rows["error"].isna(), "model_id"].dropna().astype(str)
                answered = ", ".join(f"{m} ({c})" for m, c in who.value_counts().items())
                lines.append(
                    f"{tag}: {money(float(cost.loc[name, 'total_cost']))} total, "
                    f"{money(_num(cost.loc[name, 'cost_per_success']))} per success, "
                    f"latency p50 {_num(lat.loc[name, 'latency_p50']):.2f} s"
                    + (f" · answered by {esc(answered)}" if answered else "")
                )
        except (KeyError, ValueError):  # frames without cost/latency/model columns: rates only
            pass
        notes = "".join(f"<br><i>{esc(n)}</i>" for n in r.notes)
        return (
            "<div style='font-size:12px;line-height:1.5;padding:4px;background:#f6f8fa'>"
            + "<br>".join(lines)
            + notes
            + "<br><span style='color:#777'>Statistics use every item both answered; the filters "
            "below only change which rows are listed.</span></div>"
        )

    def _modes_html(self, a: str, b: str) -> str:
        from ..experiments.diagnostics import failure_modes

        if self.modes is None:
            own = getattr(self._source, "failure_modes", None)
            if callable(own) and self.by == "variant":
                self.modes = own()  # the Results' own, computed once
            else:
                self.modes = failure_modes(self._source, by=self.by)
        return modes_html(self.modes, [a, b] if a != b else [a])

    def _table_html(self, rows: pd.DataFrame) -> str:
        if rows.empty:
            return "<div style='color:#777;font-size:12px;padding:4px'>no rows match these filters</div>"
        has_expected = "expected" in rows.columns
        has_repeats = (
            self.pairs is not None
            and "repeat" in self.pairs
            and (self.pairs["repeat"].nunique() > 1)
        )
        head = [("item", "9%")] + ([("rep", "4%")] if has_repeats else [])
        if has_expected:
            head.append(("expected", "17%"))
        side = f"{(100 - sum(int(w[:-1]) for _, w in head)) // 2}%"
        head += [(f"A: {self.a.value}", side), (f"B: {self.b.value}", side)]
        out = [
            "<table class='labkit-table labkit-pairs' style='border-collapse:collapse;"
            "font-size:12px;width:100%;table-layout:fixed'><thead><tr>"
            + "".join(
                f"<th style='text-align:left;padding:2px 6px;width:{w}'>{esc(h)}</th>"
                for h, w in head
            )
            + "</tr></thead><tbody>"
        ]
        for r in rows.to_dict("records"):
            da, db = _diff_html(r.get("answer_a"), r.get("answer_b"))
            style = "background:#fff6e5" if r["passed_differ"] else ""
            cells = [esc(r["item_id"])]
            if has_repeats:
                cells.append(esc(r.get("repeat", "")))
            if has_expected:
                cells.append(f"<code>{esc(_answer(r.get('expected'), None))}</code>")
            cells += [
                _side(da, r, "a", self.threshold.value),
                _side(db, r, "b", self.threshold.value),
            ]
            out.append(
                f"<tr style='border-top:1px solid #eee;{style}'>"
                + "".join(
                    f"<td style='padding:3px 6px;vertical-align:top;word-break:break-word'>{c}</td>"
                    for c in cells
                )
                + "</tr>"
            )
        out.append("</tbody></table>")
        return "".join(out)


def modes_html(modes: Any, variants: list[str]) -> str:
    """Each variant's baseline and failure-mode warnings, as a warning strip (or nothing)."""
    t = modes.table.set_index("variant")
    lines = []
    for v in variants:
        if v not in t.index:
            continue
        r = t.loc[v]
        base = r["baseline"]
        head = (
            f"<b>{esc(v)}</b>: success {r['rate']:.0%} vs majority-class baseline {base:.0%} "
            f"(always answering {esc(r['baseline_answer'])!s})"
            if base == base and r["rate"] == r["rate"]
            else ""
        )
        warns = list(r["warnings"])
        if head or warns:
            lines.append(head + "".join(f"<br>⚠ {esc(x)}" for x in warns))
    if not lines:
        return ""
    warned = any(modes.warnings(v) for v in variants)
    kind = "warn" if warned else "info"
    color, bg = ("#8a6d3b", "#fcf8e3") if warned else ("#31708f", "#eef6fb")
    return (
        f"<div class='labkit-notice labkit-{kind} labkit-failure-modes' style='padding:4px 8px;"
        f"margin:2px 0;border-left:3px solid {color};background:{bg};color:{color};"
        "font-size:12px;line-height:1.4'>"
        + "<br>".join(lines)
        + "<br><span style='color:#777' title='The success rate of a model that always gives "
        "the most common label; a variant must beat it to show any skill.'>baseline = "
        "always answering the most common label</span></div>"
    )


def _side(diffed: str, r: dict[str, Any], s: str, threshold: float) -> str:
    answer = r.get(f"answer_{s}")
    if not isinstance(answer, str):
        return "<span style='color:#777'>(no row)</span>"
    ok = r[f"ok_{s}"]
    mark = "<b style='color:#2e7d32'>✓</b>" if ok else "<b style='color:#c62828'>✗</b>"
    conf = r.get(f"confidence_{s}")
    conf_txt = ""
    if conf is not None and conf == conf:
        color = "#c62828" if conf < threshold else "#555"
        conf_txt = f" <span style='color:{color}'>conf {conf:.2f}</span>"
    err = r.get(f"error_type_{s}")
    err_txt = (
        f" <span style='color:#c62828'>{esc(err)}</span>" if isinstance(err, str) and err else ""
    )
    raw = r.get(f"output_{s}")
    said = ""
    if isinstance(raw, str) and raw.strip() != answer:  # show what the model wrote, too
        text = " ".join(raw.split())
        text = text if len(text) <= 160 else text[:157] + "..."
        said = f"<div style='color:#888;font-size:11px'>reply: {esc(text)}</div>"
    body = f"<code style='white-space:pre-wrap'>{diffed}</code>" if answer else ""
    if not answer and not err_txt:
        body = "<span style='color:#777'>(nothing parsed)</span>"
    why = r.get(f"why_{s}")
    why_txt = (
        f"<div class='lk-why' style='color:#a94442;font-size:11px'>{esc(why)}</div>"
        if isinstance(why, str) and why
        else ""
    )
    return f"{mark}{conf_txt}{err_txt}<br>{body}{said}{why_txt}"


def _expected_rows(results: Any) -> list[Any] | None:
    """One expected dict per results row (an `expected` column, else the run's dataset)."""
    from ..experiments.diagnostics import expected_labels

    df = getattr(results, "df", results)
    labels = expected_labels(results)
    return [labels.get(str(i)) for i in df["item_id"]] if labels else None


def _diff_html(a: Any, b: Any) -> tuple[str, str]:
    """Word-level diff: words only in A are marked red on the A side, only in B green on B."""
    ta = a if isinstance(a, str) else ""
    tb = b if isinstance(b, str) else ""
    if ta == tb:
        return esc(ta), esc(tb)
    wa, wb = _words(ta), _words(tb)
    sm = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False)
    left, right = [], []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        sa, sb = esc("".join(wa[i1:i2])), esc("".join(wb[j1:j2]))
        if op == "equal":
            left.append(sa)
            right.append(sb)
        else:
            if sa:
                left.append(f"<mark style='background:#ffd6d6'>{sa}</mark>")
            if sb:
                right.append(f"<mark style='background:#d4f7d4'>{sb}</mark>")
    return "".join(left), "".join(right)


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"\w+|\s+|[^\w\s]", text)


def _num(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v
