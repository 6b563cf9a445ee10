"""Failure modes a success rate hides, and the one verdict rule for a paired comparison.

A success rate alone can crown a variant that answers "positive" to every review: on a dataset
with 44% positive labels it scores 44%, and nothing else in a summary says so. `failure_modes`
reads the same results frame as `labkit.experiments.stats` and adds, per variant:

* the **majority-class baseline**: the success rate of always giving the most common label
  (over the variant's own rows), printed beside every success rate;
* per-label accuracy, a confusion matrix and the distribution of predicted values;
* warnings when the predictions **collapse** to one value while the labels vary, when the
  variant **does not beat the baseline**, when its replies **copy the format example**
  (`labkit.instructions.copies_example`), and when **another model answered** (a fallback).

The first three make a variant *degenerate*: `best_variant` and the export panel refuse it
unless told `allow_degenerate=True`, and say why.

`significant` is the single decision rule for "significant / not" everywhere the kit shows a
paired comparison (the compare header, the forest plot, the export panel): the paired interval
excludes 0. The header's words and the plot's marker therefore always agree with the interval
printed next to them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

from ..errors import LabkitError
from .datasets import run_records

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FailureModes",
    "answered_by_other",
    "dataset_records",
    "expected_labels",
    "failure_modes",
    "own_answers",
    "reasons_column",
    "reasons_text",
    "significant",
    "verdict",
]

COLLAPSE_SHARE = 0.9
"""A variant whose most common answer covers this share of its replies has collapsed."""
MIN_ROWS = 5
"""Fewer answered rows than this are too few to call a collapse."""
PARROT_SHARE = 0.5
"""A variant copying the format example in this share of replies is flagged."""
MAX_CLASSES = 10
"""An expected field with more distinct values is free text, not a class."""
NONE = "(no answer)"


# ----------------------------------------------------------------------------- verdict


def significant(result: Any) -> bool:
    """The one decision rule: significant iff the paired interval excludes 0.

    Reads `result.significant` when the comparison carries it, else decides from
    `ci_low` / `ci_high` (a `PairedResult`, or a row of `stats.pairwise_comparisons`).
    """
    flag = getattr(result, "significant", None)
    if isinstance(flag, bool):
        return flag

    def get(key: str) -> Any:
        return result.get(key) if isinstance(result, Mapping) else getattr(result, key, None)

    try:
        lo, hi = float(get("ci_low")), float(get("ci_high"))
    except (TypeError, ValueError):
        return False
    if math.isnan(lo) or math.isnan(hi):
        return False
    return lo > 0 or hi < 0


def verdict(result: Any, a: str | None = None, b: str | None = None) -> str:
    """The comparison in words, winner first: "A is better: +31 points (95% CI …)"."""
    a = str(a if a is not None else result.a)
    b = str(b if b is not None else result.b)
    if not getattr(result, "n_items", 0):
        return "nothing to compare: no items answered by both"
    ci = f"95% CI {result.ci_low * 100:+.0f} to {result.ci_high * 100:+.0f} points"
    if significant(result):
        winner, loser = (a, b) if result.diff > 0 else (b, a)
        lo, hi = sorted(abs(x) * 100 for x in (result.ci_low, result.ci_high))
        return (
            f"{winner} is better than {loser} by {abs(result.diff) * 100:.0f} points "
            f"(95% CI {lo:.0f} to {hi:.0f} points: the interval excludes 0)"
        )
    return (
        f"no significant difference between {a} and {b}: {result.diff * 100:+.0f} points "
        f"({ci}: the interval includes 0, so either could be better)"
    )


# ----------------------------------------------------------------------------- inputs


def dataset_records(results: Any) -> dict[str, dict[str, Any]]:
    """item_id -> dataset row (inputs and `expected`) of the run, or {} when unknown.

    From the Experiment that made `results`, else the dataset reloaded from the run's `meta`
    (fingerprint-checked); a bare frame has none.
    """
    if not hasattr(results, "df") or not getattr(results, "meta", None):
        return {}
    try:
        records = run_records(results)
    except (LabkitError, OSError):
        return {}
    return {str(r["id"]): dict(r) for r in records}


def expected_labels(results: Any) -> dict[str, dict[str, Any]]:
    """item_id -> expected dict: from an `expected` column, else the run's dataset."""
    df = getattr(results, "df", results)
    out: dict[str, dict[str, Any]] = {}
    if "expected" in getattr(df, "columns", ()):
        for item, exp in zip(df["item_id"], df["expected"], strict=True):
            if isinstance(exp, Mapping):
                out.setdefault(str(item), dict(exp))
        return out
    for item, rec in dataset_records(results).items():
        if isinstance(rec.get("expected"), Mapping):
            out[item] = dict(rec["expected"])
    return out


def _label_fields(expected: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen: dict[str, set[str]] = {}
    for exp in expected.values():
        for k, v in exp.items():
            if v is None or isinstance(v, dict | list):
                continue
            seen.setdefault(str(k), set()).add(_key(v))
    return [k for k, vals in seen.items() if 2 <= len(vals) <= MAX_CLASSES]


def _key(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    if isinstance(value, str):
        return value.strip().lower()
    return json.dumps(value, sort_keys=True, default=str)


def answered_by_other(df: pd.DataFrame) -> pd.Series:
    """Rows whose answer came from a model other than the one the variant asked for.

    Decided for variants that name a model id ("provider/model"): `model_id` (what answered)
    differs from `model`. An alias (no "/") may legitimately resolve to several ids, so its
    rows are never flagged here.
    """
    import pandas as pd

    if not {"model", "model_id"} <= set(df.columns):
        return pd.Series(False, index=df.index)
    asked = df["model"].astype(str)
    got = df["model_id"].astype(str)
    ok = df["error"].isna() if "error" in df.columns else pd.Series(True, index=df.index)
    return asked.str.contains("/", regex=False) & (asked != got) & ok & df["model_id"].notna()


def reasons_text(row: Mapping[str, Any], expected: Mapping[str, Any] | None = None) -> str:
    """Why a results row passed or failed, in words: the one text the item matrix, the compare
    view and exports show.

    Read from what the row stores: its error, the evaluators' own `reasons` (the results
    frame's column) for every evaluator that did not give full marks, and a parse failure.
    Only a row with no stored reason (a frame from before the column, or a run without
    evaluators) gets its field mismatches spelled out from `field_correct` and `expected`.
    """
    err = row.get("error")
    if isinstance(err, str) and err:
        return f"error: {err}"
    given, graded = row.get("reasons"), row.get("scores")
    stored: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    scores: Mapping[str, Any] = graded if isinstance(graded, Mapping) else {}
    parts: list[str] = []
    for name, value in scores.items():
        if name == "human" or not isinstance(value, int | float):
            continue
        if math.isnan(value) or value < 1:
            said = stored.get(name)
            parts.append(f"{name}: {said}" if said else f"{name} = {value:.2g}")
    if not stored:
        for name, ok in (row.get("field_correct") or {}).items():
            if ok:
                continue
            want = (expected or {}).get(name)
            got = row["parsed"].get(name) if isinstance(row.get("parsed"), Mapping) else None
            parts.insert(0, f"{name}: expected {json.dumps(want)}, got {json.dumps(got)}")
    if row.get("parse_ok") is False and not any("JSON" in p for p in parts):
        parts.append("no JSON object could be read from the reply")
    return "; ".join(parts)


def reasons_column(df: pd.DataFrame, expected: list[Any] | None = None) -> pd.Series:
    """`reasons_text` of every row of a results frame (`expected`: one dict per row, or None)."""
    import pandas as pd

    names = ("error", "field_correct", "parsed", "parse_ok", "scores", "reasons")
    cols = [df[c].tolist() if c in df.columns else [None] * len(df) for c in names]
    exp = expected if expected is not None else [None] * len(df)
    return pd.Series(
        [
            reasons_text(dict(zip(names, values, strict=True)), e)
            for e, *values in zip(exp, *cols, strict=True)
        ],
        index=df.index,
        dtype=object,
    )


def own_answers(df: pd.DataFrame, groups: Any, by: str = "variant") -> tuple[pd.DataFrame, int]:
    """The rows of `groups` (names in column `by`), minus answers a fallback model gave when
    the groups ask for different models (a comparison of models), and how many were left out.

    A fallback's answer scores the fallback, not the model the variant names: "gpt-4o" must
    not be credited with what mini answered. Comparing prompts on one model keeps every row.
    """
    sub = df[df[by].isin(list(groups))]
    if "model" not in sub.columns or sub.groupby(by)["model"].first().nunique() < 2:
        return sub, 0
    other = answered_by_other(sub)
    return sub[~other], int(other.sum())


# ----------------------------------------------------------------------------- the report


@dataclass
class FailureModes:
    """Per-variant failure modes of a run (see the module docstring)."""

    table: pd.DataFrame
    """One row per variant: n, rate, baseline, baseline_answer, top_answer, top_share,
    parrot_rows, other_model_rows, answered_by, warnings (list of str), degenerate (bool)."""
    per_label: pd.DataFrame
    """variant, field, label, n, correct, accuracy."""
    distribution: pd.DataFrame
    """variant, field, value, count, share: what each variant predicted."""
    fields: list[str] = field(default_factory=list)
    """The categorical expected fields the breakdowns use."""
    _pairs: pd.DataFrame | None = field(default=None, repr=False)

    def warnings(self, variant: str) -> list[str]:
        row = self.table[self.table["variant"] == variant]
        return list(row["warnings"].iloc[0]) if len(row) else []

    def reasons(self, variant: str) -> list[str]:
        """Why `variant` is degenerate (empty when it is not)."""
        row = self.table[self.table["variant"] == variant]
        return list(row["reasons"].iloc[0]) if len(row) else []

    def confusion(self, variant: str, field: str | None = None) -> pd.DataFrame:
        """Counts of expected (rows) x predicted (columns) labels for one variant and field."""
        import pandas as pd

        if self._pairs is None or not self.fields:
            return pd.DataFrame()
        f = field or self.fields[0]
        p = self._pairs[(self._pairs["variant"] == variant) & (self._pairs["field"] == f)]
        return pd.crosstab(p["expected"], p["predicted"]).rename_axis(
            index="expected", columns="predicted"
        )

    def _repr_html_(self) -> str:
        """Per variant: success vs baseline, warnings, then where the answers go: what it
        predicted, accuracy per label and the confusion matrix (expected x predicted)."""
        parts = ["<div class='labkit-modes' style='font-size:12px'>"]
        for r in self.table.to_dict("records"):
            v = r["variant"]
            base = (
                f" · baseline {r['baseline']:.0%} (always {escape(str(r['baseline_answer']))})"
                if r["baseline"] == r["baseline"]
                else ""
            )
            rate = f"{r['rate']:.0%}" if r["rate"] == r["rate"] else "n/a"
            parts.append(f"<b>{escape(str(v))}</b>: success {rate}{base}")
            parts += [f"<br>&nbsp;&nbsp;⚠ {escape(str(w))}" for w in r["warnings"]]
            for f in self.fields:
                parts.append(self._field_html(v, f))
            parts.append("<br>")
        return "".join(parts) + "</div>"

    def _field_html(self, variant: str, field: str) -> str:
        d = self.distribution
        d = d[(d["variant"] == variant) & (d["field"] == field)]
        p = self.per_label
        p = p[(p["variant"] == variant) & (p["field"] == field)]
        said = ", ".join(
            f"{escape(str(x))} {s:.0%}" for x, s in zip(d["value"], d["share"], strict=True)
        )
        acc = ", ".join(
            f"{escape(str(lab))} {int(c)}/{int(n)}"
            for lab, c, n in zip(p["label"], p["correct"], p["n"], strict=True)
        )
        cm = self.confusion(variant, field)
        table = (
            cm.to_html(classes="labkit-table labkit-confusion", border=0).replace(
                "<table", "<table style='font-size:11px;border-collapse:collapse'", 1
            )
            if not cm.empty
            else ""
        )
        return (
            f"<br>&nbsp;&nbsp;<code>{escape(str(field))}</code> predicted: {said or '–'} · right per "
            f"label: {acc or '–'}<details style='margin-left:12px'><summary style='color:#555'>"
            f"confusion matrix (rows expected, columns predicted)</summary>{table}</details>"
        )


def failure_modes(
    results: Any,
    *,
    expected: Mapping[str, Mapping[str, Any]] | None = None,
    schema: Any = None,
    by: str = "variant",
) -> FailureModes:
    """Failure modes of each variant of `results` (a Results or a results frame).

    `expected` maps item_id -> expected dict (default: `expected_labels(results)`); `schema`
    is the output schema the format example came from (default: the run's `meta`).
    """
    import pandas as pd

    from ..structured import copies_example
    from . import stats

    df: pd.DataFrame = getattr(results, "df", results)
    labels = dict(expected) if expected is not None else expected_labels(results)
    if schema is None:
        schema = (getattr(results, "meta", None) or {}).get("schema")
    fields = _label_fields(labels)
    rates = stats.success_rates(df, by).set_index(by) if len(df) else None
    other = answered_by_other(df)
    ok = df["error"].isna() if "error" in df.columns else pd.Series(True, index=df.index)

    pair_rows: list[dict[str, Any]] = []
    if fields:
        items = df["item_id"].astype(str)
        for f in fields:
            exp = items.map(lambda i, f=f: _key(labels.get(i, {}).get(f, None)))
            pred = [
                _key(p.get(f)) if isinstance(p, Mapping) else NONE
                for p in df.get("parsed", pd.Series(None, index=df.index))
            ]
            fc = df.get("field_correct", pd.Series([{}] * len(df), index=df.index))
            for i, (v, e, p, c, o) in enumerate(zip(df[by], exp, pred, fc, ok, strict=True)):
                if e == NONE:
                    continue
                right = c.get(f) if isinstance(c, Mapping) and f in c else (p == e)
                pair_rows.append(
                    {"row": i, "variant": v, "field": f, "expected": e}
                    | {"predicted": p, "correct": bool(right), "answered": bool(o)}
                )
    pairs = pd.DataFrame(
        pair_rows,
        columns=["row", "variant", "field", "expected", "predicted", "correct", "answered"],
    )

    table_rows = []
    for variant in dict.fromkeys(df[by].tolist()):
        sub = df[df[by] == variant]
        rate = float(rates.loc[variant, "rate"]) if rates is not None else math.nan
        n = int(rates.loc[variant, "n"]) if rates is not None else 0
        warns: list[str] = []
        reasons: list[str] = []
        baseline, base_answer, top, top_share = math.nan, "", "", math.nan
        vp = pairs[pairs["variant"] == variant] if len(pairs) else pairs
        if len(vp):
            joint = vp.pivot_table(
                index="row", columns="field", values=["expected", "predicted"], aggfunc="first"
            )
            exp_key = joint["expected"].astype(str).agg(" · ".join, axis=1)
            answered = vp.groupby("row")["answered"].first()
            pred_key = joint["predicted"].astype(str).agg(" · ".join, axis=1)[answered]
            counts = exp_key.value_counts()
            baseline, base_answer = float(counts.iloc[0] / counts.sum()), str(counts.index[0])
            if len(pred_key):
                pc = pred_key.value_counts()
                top, top_share = str(pc.index[0]), float(pc.iloc[0] / pc.sum())
                if (
                    len(pred_key) >= MIN_ROWS
                    and top_share >= COLLAPSE_SHARE
                    and NONE not in top
                    and len(counts) > 1
                    and baseline < COLLAPSE_SHARE
                ):
                    msg = (
                        f"predictions collapse to one value: {top!r} in {int(pc.iloc[0])} of "
                        f"{len(pred_key)} answers while the labels take {len(counts)} values; "
                        f"its success rate is the share of {top!r} labels, not skill"
                    )
                    warns.append(msg)
                    reasons.append(msg)
            if n and rate <= baseline + 1e-9:
                msg = (
                    f"does not beat the majority-class baseline: success {rate:.0%} vs "
                    f"{baseline:.0%} for always answering {base_answer!r}"
                )
                warns.append(msg)
                reasons.append(msg)
        parrots = 0
        if schema is not None and len(sub) and "output" in sub.columns:
            parrots = sum(copies_example(o, schema) for o in sub["output"])
            answered_n = int(sub["error"].isna().sum()) if "error" in sub else len(sub)
            if answered_n and parrots / answered_n >= PARROT_SHARE:
                msg = (
                    f"replies copy the format example in {parrots} of {answered_n} answers "
                    "(its <...> slots, not answers)"
                )
                warns.append(msg)
                reasons.append(msg)
        n_other = int(other[sub.index].sum())
        answered_by = ""
        if "model_id" in sub.columns:
            by_model = sub.loc[ok[sub.index], "model_id"].dropna().astype(str).value_counts()
            answered_by = ", ".join(f"{m} ({c})" for m, c in by_model.items())
        if n_other:
            asked = str(sub["model"].iloc[0])
            warns.append(
                f"{n_other} of {int(ok[sub.index].sum())} answers came from another model "
                f"than {asked} (a fallback answered: {answered_by}); a comparison of models "
                "leaves them out"
            )
        table_rows.append(
            {"variant": variant, "n": n, "rate": rate, "baseline": baseline}
            | {"baseline_answer": base_answer, "top_answer": top, "top_share": top_share}
            | {"parrot_rows": parrots, "other_model_rows": n_other, "answered_by": answered_by}
            | {"warnings": warns, "reasons": reasons, "degenerate": bool(reasons)}
        )
    table = pd.DataFrame(
        table_rows,
        columns=[
            "variant", "n", "rate", "baseline", "baseline_answer", "top_answer", "top_share",
            "parrot_rows", "other_model_rows", "answered_by", "warnings", "reasons", "degenerate",
        ],
    )  # fmt: skip
    if len(pairs):
        per_label = (
            pairs.groupby(["variant", "field", "expected"], sort=False)["correct"]
            .agg(n="size", correct="sum")
            .reset_index()
            .rename(columns={"expected": "label"})
        )
        per_label["accuracy"] = per_label["correct"] / per_label["n"]
        dist = (
            pairs.groupby(["variant", "field", "predicted"], sort=False)
            .size()
            .rename("count")
            .reset_index()
            .rename(columns={"predicted": "value"})
        )
        dist["share"] = dist["count"] / dist.groupby(["variant", "field"])["count"].transform("sum")
    else:
        per_label = pd.DataFrame(columns=["variant", "field", "label", "n", "correct", "accuracy"])
        dist = pd.DataFrame(columns=["variant", "field", "value", "count", "share"])
    return FailureModes(table, per_label, dist, fields, pairs)
