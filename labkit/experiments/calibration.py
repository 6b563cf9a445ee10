"""Calibration: how far a model's self-reported confidence deserves to be trusted.

Functions of the results frame (the contract in the `labkit.experiments.stats` docstring), per group:
reliability-diagram data, expected calibration error, Brier score, and the coverage-vs-accuracy
curve from which `choose_threshold` picks the "send to human review below X" cut-off.
`labkit.experiments.stats` re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._frame import (
    _as_float,
    _check,
    _field_values,
    _floats,
    _ints,
    _keys,
    _ratio,
    _wilson,
)

__all__ = [
    "CalibrationResult",
    "calibration",
    "choose_threshold",
    "confidence_frame",
    "coverage_curve",
]


@dataclass(frozen=True)
class CalibrationResult:
    """Self-reported confidence against correctness, per group."""

    field: str | None
    """The field calibrated; None = row-level ``confidence`` against ``passed``."""
    bins: int
    reliability: pd.DataFrame
    """Non-empty bins: ``by, bin, bin_low, bin_high, mean_confidence, accuracy, count``."""
    summary: pd.DataFrame
    """Per group: ``by, n, mean_confidence, accuracy, overconfidence, ece, brier``."""

    @property
    def ece(self) -> pd.Series:
        """Expected calibration error per group (index = group)."""
        return self.summary.set_index(self.summary.columns[0])["ece"]


def confidence_frame(
    df: pd.DataFrame, field: str | None = None, by: str = "variant"
) -> pd.DataFrame:
    """``by, confidence, correct`` for rows whose correctness is known (confidence may be NaN).

    ``field=None`` pairs ``confidence`` with ``passed``; a field name pairs
    ``confidences[field]`` with ``field_correct[field]``. A confidence outside [0, 1] (7.0,
    -0.2, inf) is not a probability: it is left out (NaN, so never auto-accepted) with a
    warning counting each kind, rather than clipped into a false certainty.
    """
    if field is None:
        df = _check(df, [by, "confidence", "passed"])
        conf, correct = _as_float(df["confidence"]), _as_float(df["passed"])
    else:
        df = _check(df, [by, "confidences", "field_correct"])
        conf = _field_values(df["confidences"], field)
        correct = _field_values(df["field_correct"], field)
    out = pd.DataFrame({by: df[by], "confidence": _in_range(conf, field), "correct": correct})
    return out[out["correct"].notna()]


def _in_range(conf: pd.Series, field: str | None) -> pd.Series:
    """`conf` with values outside [0, 1] set to NaN, after one warning that counts them."""
    v = conf.to_numpy(dtype=float)
    counts = {
        "above 1": int(np.sum(np.isfinite(v) & (v > 1))),
        "below 0": int(np.sum(np.isfinite(v) & (v < 0))),
        "infinite": int(np.sum(np.isinf(v))),
    }
    bad = sum(counts.values())
    if not bad:
        return conf
    import warnings

    where = "confidence" if field is None else f"confidences[{field!r}]"
    found = ", ".join(f"{k} {kind}" for kind, k in counts.items() if k)
    warnings.warn(
        f"{bad} of {v.size} {where} values are outside [0, 1] ({found}); they are left out "
        "of calibration and thresholds (treated as missing), not clipped. Rescale them to "
        "probabilities (e.g. divide a 0-10 score by 10) if the model used another scale",
        UserWarning,
        stacklevel=3,
    )
    return conf.where((conf >= 0) & (conf <= 1))


def calibration(
    df: pd.DataFrame, field: str | None = None, by: str = "variant", bins: int = 10
) -> CalibrationResult:
    """Reliability-diagram data, ECE and Brier score of self-reported confidence.

    ``field=None`` checks the row's ``confidence`` against ``passed``; a field name checks
    ``confidences[field]`` against ``field_correct[field]``. Rows without a confidence are
    left out. Bins are equal-width on [0, 1] (bin i = [i/bins, (i+1)/bins), the last closed);
    ECE = sum over bins of count/n * |accuracy - mean confidence|; Brier = mean (conf - y)^2.
    A model whose 0.9s are right 90% of the time can have its answers auto-accepted above a
    threshold; one that says 0.9 about everything cannot.
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    keys = _keys(_check(df, [by]), by)
    cf = confidence_frame(df, field, by)
    cf = cf[cf["confidence"].notna()]
    cf = cf.assign(
        bin=np.minimum(np.floor(cf["confidence"] * bins + 1e-9), bins - 1).astype("int64"),
        sq=(cf["confidence"] - cf["correct"]) ** 2,
    )
    rel = (
        cf.groupby([by, "bin"], observed=True, sort=False)
        .agg(
            mean_confidence=("confidence", "mean"),
            accuracy=("correct", "mean"),
            count=("correct", "size"),
        )
        .reset_index()
    )
    rel.insert(2, "bin_low", rel["bin"] / bins)
    rel.insert(3, "bin_high", (rel["bin"] + 1) / bins)
    rel["_g"] = pd.Categorical(rel[by], categories=keys)
    rel = rel.sort_values(["_g", "bin"]).drop(columns="_g").reset_index(drop=True)
    gap = (rel["accuracy"] - rel["mean_confidence"]).abs() * rel["count"]
    g = cf.groupby(by, observed=True, sort=False)
    n = _ints(g.size(), keys)
    summary = pd.DataFrame({by: keys, "n": n})
    summary["mean_confidence"] = _floats(g["confidence"].mean(), keys)
    summary["accuracy"] = _floats(g["correct"].mean(), keys)
    summary["overconfidence"] = summary["mean_confidence"] - summary["accuracy"]
    summary["ece"] = _ratio(_floats(gap.groupby(rel[by], observed=True).sum(), keys), n)
    summary["brier"] = _floats(g["sq"].mean(), keys)
    return CalibrationResult(field=field, bins=bins, reliability=rel, summary=summary)


def _confidence_groups(
    cf: pd.DataFrame, by: str, keys: pd.Index
) -> Iterator[tuple[Hashable, np.ndarray, np.ndarray]]:
    """(group, confidences, correctness) arrays for every group key, empty when absent."""
    groups = dict(tuple(cf.groupby(by, observed=True, sort=False)))
    for key in keys:
        sub = groups.get(key, cf.iloc[:0])
        yield key, sub["confidence"].to_numpy(dtype=float), sub["correct"].to_numpy(dtype=float)


def coverage_curve(
    df: pd.DataFrame,
    field: str | None = None,
    by: str = "variant",
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """For each threshold X: share auto-accepted (confidence >= X) and accuracy among them.

    Columns: ``by, threshold, n, n_accepted, coverage, accuracy``. ``n`` counts rows whose
    correctness is known; rows without a confidence (errors included) are never accepted, as
    they would go to human review. ``thresholds`` default to 0, 0.01, ..., 1. This is the
    curve to read a "send to review below X" threshold from; see `choose_threshold`.
    """
    keys = _keys(_check(df, [by]), by)
    cf = confidence_frame(df, field, by)
    thr = np.round(np.linspace(0, 1, 101), 10) if thresholds is None else np.asarray(thresholds)
    thr = thr.astype(float)
    parts = []
    for key, c, y in _confidence_groups(cf, by, keys):
        has = ~np.isnan(c)
        order = np.argsort(c[has], kind="stable")
        cs, cum = c[has][order], np.concatenate([[0.0], np.cumsum(y[has][order])])
        idx = np.searchsorted(cs, thr, side="left")
        accepted, correct = cs.size - idx, cum[-1] - cum[idx]
        part = {by: [key] * thr.size, "threshold": thr, "n": c.size, "n_accepted": accepted}
        part |= {"coverage": _ratio(accepted, c.size), "accuracy": _ratio(correct, accepted)}
        parts.append(pd.DataFrame(part))
    cols = [by, "threshold", "n", "n_accepted", "coverage", "accuracy"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def choose_threshold(
    df: pd.DataFrame,
    target_accuracy: float,
    field: str | None = None,
    by: str = "variant",
    conservative: bool = False,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Lowest confidence threshold whose auto-accepted rows reach `target_accuracy`, per group.

    Candidates are the confidence values observed; the one accepting the most rows while its
    accepted accuracy (or, with ``conservative=True``, the Wilson lower bound of it, which
    guards against a lucky handful of rows) is >= target wins. Columns: ``by, threshold, n,
    n_accepted, coverage, accuracy, accuracy_low, met``; ``threshold`` is NaN and ``met`` False
    when no threshold reaches the target (send everything to review).
    """
    if not 0 <= target_accuracy <= 1:
        raise ValueError("target_accuracy must be in [0, 1]")
    keys = _keys(_check(df, [by]), by)
    cf = confidence_frame(df, field, by)
    rows = []
    for key, c_all, y_all in _confidence_groups(cf, by, keys):
        n, has = c_all.size, ~np.isnan(c_all)
        c, y = c_all[has], y_all[has]
        order = np.argsort(-c, kind="stable")
        cs, ys = c[order], y[order]
        cum_n = np.arange(1, cs.size + 1)
        cum_y = np.cumsum(ys)
        last = np.r_[cs[1:] != cs[:-1], True] if cs.size else np.zeros(0, dtype=bool)
        acc = cum_y[last] / cum_n[last]
        low, _ = _wilson(cum_y[last], cum_n[last], alpha)
        ok = np.flatnonzero((low if conservative else acc) >= target_accuracy)
        row: dict[str, Any] = {by: key, "threshold": np.nan, "n": n, "n_accepted": 0}
        row |= {"coverage": 0.0 if n else np.nan, "accuracy": np.nan, "accuracy_low": np.nan}
        row["met"] = bool(ok.size)
        if ok.size:
            i = ok[-1]
            acc_n = int(cum_n[last][i])
            row |= {"threshold": float(cs[last][i]), "n_accepted": acc_n, "coverage": acc_n / n}
            row |= {"accuracy": float(acc[i]), "accuracy_low": float(low[i])}
        rows.append(row)
    cols = [by, "threshold", "n", "n_accepted", "coverage", "accuracy", "accuracy_low", "met"]
    return pd.DataFrame(rows, columns=cols)
