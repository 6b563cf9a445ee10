"""Statistics over a results frame: success rates, paired tests, repeats, cost, calibration.

Every function takes the tidy results frame an experiment produces and a grouping column
(`by="variant"` unless told otherwise) and returns a small DataFrame or dataclass, so a chart,
a report and a promotion gate all read the same numbers.

The results frame (the contract)
--------------------------------
One row per (item, prompt variant, model, repeat):

=====================  ===============  =====================================================
column                 type             meaning
=====================  ===============  =====================================================
``run_id``             str              the experiment run the row belongs to
``item_id``            str              dataset row; the unit that paired tests resample
``prompt``             str              prompt-variant name
``model``              str              model as asked (alias or id)
``model_id``           str              pinned model id that answered
``variant``            str              unit of comparison, ``f"{prompt} · {model}"``
``repeat``             int              sample index (0..repeats-1)
``output``             str | None       raw text; None on an error row
``parsed``             dict | None      parsed value; None when parsing failed
``parse_ok``           bool             parsing succeeded
``passed``             bool             the success metric; False on an error row
``score``              float            0-1, NaN when not scored
``scores``             dict[str,float]  per-evaluator scores
``reasons``            dict[str,str]    per-evaluator reason (or why it could not judge)
``confidence``         float            mean self-reported confidence, NaN when absent
``confidences``        dict[str,float]  self-reported confidence per field
``field_correct``      dict[str,bool]   per field, vs the expected value where known
``prompt_tokens``      int              input tokens, cached ones included
``completion_tokens``  int              output tokens
``cached_tokens``      int              input tokens served from the provider's prompt cache
``cost_usd``           float            cost of the call (original cost on a cache hit)
``latency_s``          float            total latency (original latency on a cache hit)
``ttft_s``             float            time to first token, NaN when not streamed
``cache_hit``          bool             served from labkit's cache
``repairs``            list[str]        names of the repair steps the parser applied
``error``              str | None       error message; None on success
``error_type``         str | None       exception class name
``trace_id``           str | None       link to the trace store
=====================  ===============  =====================================================

Conventions
-----------
* A row is *usable* for success statistics when ``passed`` is not missing. Error rows have
  ``passed=False`` and count as failures: for whoever ships the variant an error is a failed
  item, and dropping errors would flatter a flaky model.
* Groups keep the order of first appearance (or the categories of a categorical column); a
  group whose rows are all unusable is reported with ``n = 0`` and NaN, never an exception.
* Items are the unit of sampling: with repeats, each item's outcome is first averaged over
  its repeats, so repeats never pose as independent items (in success-rate intervals too).
* Two rows for one (item, group, repeat) are an error (`labkit.errors.InputError`), not
  silently averaged.
* Every interval's level is measured, by exact enumeration over the multinomial or seeded
  simulation, in tests/test_stats.py and bench/bench_stats.py (table in the README).
* numpy/pandas, plus scipy for binomial tails and t quantiles (imported inside functions).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from . import _paired as pk
from ._frame import (
    _as_float,
    _binary,
    _check,
    _errored,
    _floats,
    _ints,
    _item_matrix,
    _keys,
    _no_duplicates,
    _ratio,
    _wilson,
    _z,
)

__all__ = [
    "PairedResult",
    "cost_summary",
    "holm_adjust",
    "item_interval",
    "latency_summary",
    "mcnemar_exact",
    "paired_comparison",
    "pairwise_comparisons",
    "pass_at_k",
    "pass_hat_k",
    "pass_k",
    "repair_breakdown",
    "repeat_spread",
    "sample_size",
    "success_rates",
    "wilson_interval",
]


# --------------------------------------------------------------------------- success rates


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (NaN, NaN) when n = 0.

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps its
    coverage at the small n and extreme rates that prompt experiments live in.
    """
    if k < 0 or n < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    low, high = _wilson(np.array([k]), np.array([n]), alpha)
    return float(low[0]), float(high[0])


def success_rates(df: pd.DataFrame, by: str = "variant", alpha: float = 0.05) -> pd.DataFrame:
    """Per-group success rate over items, with a (1 - alpha) interval that counts items.

    Columns: ``by, n, successes, rate, ci_low, ci_high, n_items, errors, n_rows, ci_method``.
    ``n`` and ``n_rows`` count usable rows, ``n_items`` distinct items. The rate is the mean
    of per-item success rates (the row rate when every item has as many repeats). With one
    row per item the interval is Wilson's; with repeats, repeats of an item are not
    independent draws, so it is Wilson's at the effective size ``rate (1 - rate) / var``
    (``var`` the cluster-robust variance of the rate over items; see `item_interval`).
    """
    df = _check(df, [by, "passed", "item_id"])
    _no_duplicates(df, by)
    keys = _keys(df, by)
    y = _as_float(df["passed"])
    usable = y.notna()
    g = y.groupby(df[by], sort=False, observed=True)
    n, k = _ints(g.count(), keys), _ints(g.sum(), keys)
    per = y[usable].groupby([df.loc[usable, by], df.loc[usable, "item_id"]], observed=True).mean()
    gi = per.groupby(level=0, observed=True, sort=False)
    items = _ints(gi.size(), keys)
    rate, var = _floats(gi.mean(), keys), _floats(gi.var(ddof=1), keys)
    errors = _errored(df).groupby(df[by], sort=False, observed=True).sum()
    low, high = item_interval(rate, var, items, n, alpha)
    return pd.DataFrame(
        {by: keys, "n": n, "successes": k, "rate": rate, "ci_low": low, "ci_high": high}
        | {"n_items": items, "errors": _ints(errors, keys), "n_rows": n}
        | {"ci_method": np.where(n > items, "wilson over items (design effect)", "wilson")}
    )


def item_interval(
    rate: np.ndarray, var: np.ndarray, n_items: np.ndarray, n_rows: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson interval of a rate averaged over items, at the effective number of draws.

    ``rate``: mean of per-item success rates; ``var``: variance (ddof=1) of those per-item
    rates. The rate's cluster-robust variance is ``var / n_items``, so the effective size is
    ``n_eff = rate (1 - rate) n_items / var``, kept within [1, n_rows]: ``n_rows`` when
    repeats are as good as new items, about ``n_items`` when an item's repeats always agree.
    With one row per item (or a rate of 0 or 1, or one item) it is plain Wilson on items.
    Coverage at 30 items x 5 repeats is checked by simulation in tests/test_stats.py.
    """
    rate, var = np.asarray(rate, dtype=float), np.asarray(var, dtype=float)
    items, rows = np.asarray(n_items, dtype=float), np.asarray(n_rows, dtype=float)
    pq = rate * (1 - rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.clip(pq * items / var, 1.0, np.maximum(rows, 1.0))
    plain = (rows <= items) | ~np.isfinite(eff) | (pq <= 0) | (items < 2)
    n_eff = np.where(plain, items, eff)
    return _wilson(np.nan_to_num(rate) * n_eff, n_eff, alpha)


# --------------------------------------------------------------------------- paired tests


@dataclass(frozen=True)
class PairedResult:
    """Two groups compared on the items both answered. ``diff = rate_a - rate_b``."""

    a: Hashable
    b: Hashable
    n_items: int
    """Items in the comparison (the intersection of the two groups' usable items)."""
    rate_a: float
    rate_b: float
    diff: float
    ci_low: float
    """Two-sided (1 - alpha) interval of ``diff``: Tango's score interval for binary outcomes,
    a t interval over per-item differences when repeats are averaged (see ``method``)."""
    ci_high: float
    a_only: int
    """Discordant items where a did better (with repeats: higher per-item mean)."""
    b_only: int
    """Discordant items where b did better."""
    p_value: float
    """Two-sided p of the test the interval inverts (McNemar's z with Tango's correction, or
    the paired t-test), so ``p_value < alpha`` exactly when the interval excludes 0."""
    items_only_a: int = 0
    """Items a answered but b did not, left out of the comparison."""
    items_only_b: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    significant: bool = False
    """``p_value < alpha``, equivalently: the interval excludes 0 (one rule, not two)."""
    p_exact: float = float("nan")
    """Exact two-sided McNemar (sign-test) p on the discordant items, for the record only."""
    alpha: float = 0.05
    method: str = ""
    """How the interval and p-value were computed."""

    def __str__(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (
            f"{self.a} vs {self.b}: {self.rate_a:.3f} vs {self.rate_b:.3f}, "
            f"diff {self.diff:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}], "
            f"p={self.p_value:.4g}, {verdict} at {self.alpha:g} (n_items={self.n_items}, "
            f"discordant {self.a_only}/{self.b_only}; {self.method})"
        )


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: 2 * P(X <= min) for X ~ Binomial(a_only + b_only, 1/2).

    Computed with integer binomial coefficients, so it is exact at any size; 1.0 when there
    are no discordant pairs (statsmodels' convention).
    """
    if a_only < 0 or b_only < 0:
        raise ValueError("discordant counts must be >= 0")
    n, m = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    term = total = 1
    for i in range(1, m + 1):
        term = term * (n - i + 1) // i
        total += term
    return min(1.0, 2 * total / 2**n)


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaNs stay NaN and do not count towards m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * q[order]))
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def _t_interval(d: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(low, high, p) of the mean of per-item differences `d`: t interval and paired t-test."""
    from scipy.stats import t as student

    n, mean = d.size, float(d.mean())
    if n < 2:
        return float("nan"), float("nan"), 1.0
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:  # every item moved by the same amount
        return mean, mean, 1.0 if mean == 0 else 0.0
    half = float(student.ppf(1 - alpha / 2, n - 1)) * se
    return mean - half, mean + half, float(2 * student.sf(abs(mean) / se, n - 1))


_SCORE = f"Tango score interval (continuity correction {pk.CC}); McNemar z-test"
_TMEAN = "t interval of the mean per-item difference (items are the unit); paired t-test"


def _paired(a: Hashable, b: Hashable, ya: np.ndarray, yb: np.ndarray, alpha: float) -> PairedResult:
    """Compare per-item means `ya`, `yb` (same items, NaN = not answered)."""
    _z(alpha)
    has_a, has_b = ~np.isnan(ya), ~np.isnan(yb)
    both = has_a & has_b
    only_a, only_b = int((has_a & ~has_b).sum()), int((has_b & ~has_a).sum())
    notes: list[str] = []
    if only_a or only_b:
        notes.append(
            f"compared on the {int(both.sum())} items both answered; "
            f"{only_a} items only in {a!r} and {only_b} only in {b!r} were left out"
        )
    va, vb = ya[both], yb[both]
    n = va.size
    if n == 0:
        notes.append("no items in common: nothing to compare")
        nan = float("nan")
        none = (a, b, 0, nan, nan, nan, nan, nan, 0, 0, nan, only_a, only_b)
        return PairedResult(*none, notes=tuple(notes), alpha=alpha)
    a_only, b_only = int((va > vb).sum()), int((vb > va).sum())
    if _binary(va, vb):
        lo, hi = (float(v) for v in pk.score_interval(a_only, b_only, n, alpha))
        p, method = float(pk.score_pvalue(a_only, b_only)), _SCORE
    else:
        notes.append(
            "repeats averaged per item; discordant = items where one group's mean is higher "
            "(p_exact is then the sign test)"
        )
        (lo, hi, p), method = _t_interval(va - vb, alpha), _TMEAN
    ra, rb = float(va.mean()), float(vb.mean())
    found = (a, b, n, ra, rb, ra - rb, lo, hi, a_only, b_only, p, only_a, only_b)
    return PairedResult(
        *found,
        notes=tuple(notes),
        significant=bool(p < alpha),
        p_exact=mcnemar_exact(a_only, b_only),
        alpha=alpha,
        method=method,
    )


def paired_comparison(
    df: pd.DataFrame,
    a: Hashable,
    b: Hashable,
    by: str = "variant",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedResult:
    """Compare groups `a` and `b` on the items both answered.

    Binary outcomes: Tango's score interval of ``rate_a - rate_b`` and the McNemar z-test it
    inverts (coverage >= 94% from 20 items, where the percentile bootstrap gave 87%). With
    repeats, per-item means: a t interval and t-test over per-item differences. Either way
    ``significant`` is ``p_value < alpha``, which is the interval excluding 0. Pairing removes
    the item-difficulty variance both groups share, so it needs far fewer items than two
    independent rates. `n_boot` and `seed` are accepted for older calls and unused.
    """
    del n_boot, seed
    mat = _item_matrix(df, by)
    for name in (a, b):
        if name not in mat.columns:
            raise ValueError(f"{by}={name!r} not in the frame; have {list(mat.columns)}")
    return _paired(a, b, mat[a].to_numpy(dtype=float), mat[b].to_numpy(dtype=float), alpha)


def pairwise_comparisons(
    df: pd.DataFrame,
    by: str = "variant",
    baseline: Hashable | None = None,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """All pairs (or every group vs `baseline`) with Holm-adjusted p-values and intervals.

    Columns: ``a, b, n_items, rate_a, rate_b, diff, ci_low, ci_high, a_only, b_only, p,
    p_holm, significant, items_only_a, items_only_b, notes, ci_low_holm, ci_high_holm,
    ci_level_holm, p_exact, method``. ``ci_low/ci_high`` and ``p`` are per pair, NOT adjusted
    (each row equals `paired_comparison`). ``p_holm`` is Holm-adjusted over the rows and
    ``significant`` is ``p_holm < alpha``; ``ci_*_holm`` are adjusted to match it: each pair's
    interval at the level of its Holm step (``1 - alpha / (m - rank + 1)``, the step where
    the step-down stopped for pairs after it), so ``significant`` is exactly "the adjusted
    interval excludes 0". Against a baseline, ``a`` is the challenger and ``b`` the baseline.
    `n_boot` and `seed` are accepted for older calls and unused.
    """
    del n_boot, seed
    mat = _item_matrix(df, by)
    keys = list(mat.columns)
    if baseline is not None:
        if baseline not in keys:
            raise ValueError(f"baseline {baseline!r} not in {by}; have {keys}")
        pairs = [(k, baseline) for k in keys if k != baseline]
    else:
        pairs = [(keys[i], keys[j]) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    values = mat.to_numpy(dtype=float)
    rows: list[dict[str, Any]] = []
    for a, b in pairs:
        r = asdict(_paired(a, b, values[:, keys.index(a)], values[:, keys.index(b)], alpha))
        r.pop("significant")
        rows.append(r | {"p": r.pop("p_value"), "notes": "; ".join(r["notes"])})
    cols = ["a", "b", "n_items", "rate_a", "rate_b", "diff", "ci_low", "ci_high", "a_only"]
    cols += ["b_only", "p", "p_holm", "significant", "items_only_a", "items_only_b", "notes"]
    cols += ["ci_low_holm", "ci_high_holm", "ci_level_holm", "p_exact", "method"]
    adjusted = ("p_holm", "significant", "ci_low_holm", "ci_high_holm", "ci_level_holm")
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in adjusted])
    p = out["p"].to_numpy(dtype=float)
    out["p_holm"] = holm_adjust(p)
    out["significant"] = (out["p_holm"] < alpha).to_numpy(dtype=bool)
    level = _holm_levels(p, alpha)
    out["ci_level_holm"] = 1 - level
    low, high = np.full(len(out), np.nan), np.full(len(out), np.nan)
    for i, (a, b) in enumerate(pairs):
        if not math.isnan(level[i]):
            adj = _paired(a, b, values[:, keys.index(a)], values[:, keys.index(b)], level[i])
            low[i], high[i] = adj.ci_low, adj.ci_high
    out["ci_low_holm"], out["ci_high_holm"] = low, high
    return out[cols]


def _holm_levels(p: np.ndarray, alpha: float) -> np.ndarray:
    """Per p-value, the alpha of its Holm step: alpha / (m - rank + 1), frozen at the first
    step that fails, so a test at that level rejects exactly when Holm does."""
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    order = np.argsort(q, kind="stable")
    levels = np.empty(m)
    stopped: float | None = None
    for rank, i in enumerate(order):
        step = alpha / (m - rank)
        if stopped is None and not q[i] < step:
            stopped = step
        levels[i] = step if stopped is None else stopped
    out[ok] = levels
    return out


# --------------------------------------------------------------------------- repeats


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k draws passes) = 1 - C(n-c,k)/C(n,k).

    `n` samples of an item, `c` of them passed. NaN when n < k (not enough samples).
    """
    return float("nan") if _too_few(n, c, k) else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k (tau-bench, Yao et al. 2024): P(all of k draws pass) = C(c,k)/C(n,k); NaN if n < k.

    pass@k rewards a model that *sometimes* succeeds; pass^k measures whether it succeeds
    *reliably*, which is what a production pipeline without retries needs.
    """
    return float("nan") if _too_few(n, c, k) else math.comb(c, k) / math.comb(n, k)


def _too_few(n: int, c: int, k: int) -> bool:
    """Validate (n, c, k); True when there are fewer than k samples."""
    if k < 1 or c < 0 or c > n:
        raise ValueError(f"need k >= 1 and 0 <= c <= n, got n={n}, c={c}, k={k}")
    return n < k


def _per_item(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per (group, item): usable repeats `n` and passes `c`."""
    df = _check(df, [by, "item_id", "passed"])
    _no_duplicates(df, by)
    y = _as_float(df["passed"])
    ok = y.notna()
    g = y[ok].groupby([df.loc[ok, by], df.loc[ok, "item_id"]], observed=True, sort=False)
    return pd.DataFrame({"n": g.count(), "c": g.sum().round()}).astype("int64").reset_index()


def pass_k(df: pd.DataFrame, ks: Sequence[int] | None = None, by: str = "variant") -> pd.DataFrame:
    """pass@k and pass^k per group, averaged over items that have at least k usable repeats.

    Columns: ``by, k, n_items, pass_at_k, pass_hat_k``. ``ks`` defaults to 1..max repeats.
    Each item's estimate uses all its n repeats (the unbiased estimator), not just the first k.
    """
    df = _check(df, [by, "item_id", "passed"])
    keys = _keys(df, by)
    items = _per_item(df, by)
    if ks is None:
        ks = range(1, int(items["n"].max()) + 1) if len(items) else [1]
    combos = items[["n", "c"]].drop_duplicates()  # few: at most repeats^2 / 2 rows
    frames = []
    for k in ks:
        table = combos[combos["n"] >= k]
        table = table.assign(
            at=[pass_at_k(n, c, k) for n, c in zip(table["n"], table["c"], strict=True)],
            hat=[pass_hat_k(n, c, k) for n, c in zip(table["n"], table["c"], strict=True)],
        )
        part = items[items["n"] >= k].merge(table, on=["n", "c"], how="left")
        g = part.groupby(by, observed=True, sort=False)
        n_items, at, hat = (
            _ints(g.size(), keys),
            _floats(g["at"].mean(), keys),
            _floats(g["hat"].mean(), keys),
        )
        frames.append(
            pd.DataFrame(
                {by: keys, "k": int(k), "n_items": n_items, "pass_at_k": at, "pass_hat_k": hat}
            )
        )
    cols = [by, "k", "n_items", "pass_at_k", "pass_hat_k"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def repeat_spread(df: pd.DataFrame, by: str = "variant") -> pd.DataFrame:
    """How much repeats of the same item disagree: the run-to-run noise a single run hides.

    Columns: ``by, n_items`` (items with >= 2 usable repeats), ``repeats`` (mean usable
    repeats per item), ``agreement`` (mean share of an item's repeats that agree with its
    majority outcome), ``consistent`` (share of items whose repeats all agree), ``item_std``
    (mean per-item std of the 0/1 outcome), ``repeat_rate_std`` (std, ddof=1, of the success
    rate computed separately for each repeat index).
    """
    df = _check(df, [by, "item_id", "passed", "repeat"])
    keys = _keys(df, by)
    items = _per_item(df, by)
    multi = items[items["n"] >= 2]
    p = multi["c"] / multi["n"]
    spread = pd.DataFrame(
        {
            by: multi[by],
            "n": multi["n"],
            "agreement": np.maximum(p, 1 - p),
            "consistent": ((multi["c"] == 0) | (multi["c"] == multi["n"])).astype(float),
            "item_std": np.sqrt(p * (1 - p)),
        }
    )
    g = spread.groupby(by, observed=True, sort=False)
    y = _as_float(df["passed"])
    ok = y.notna()
    per_repeat = y[ok].groupby([df.loc[ok, by], df.loc[ok, "repeat"]], observed=True).mean()
    rate_std = per_repeat.groupby(level=0, observed=True).std(ddof=1)
    out = pd.DataFrame({by: keys})
    out["n_items"] = _ints(g.size(), keys)
    for col, s in (
        ("repeats", g["n"].mean()),
        ("agreement", g["agreement"].mean()),
        ("consistent", g["consistent"].mean()),
        ("item_std", g["item_std"].mean()),
        ("repeat_rate_std", rate_std),
    ):
        out[col] = _floats(s, keys)
    return out


# --------------------------------------------------------------------------- planning


def sample_size(
    p_a: float,
    p_b: float,
    alpha: float = 0.05,
    power: float = 0.8,
    paired: bool = False,
    discordant: float | None = None,
    test: str = "score",
) -> int:
    """Items needed to detect ``p_a`` vs ``p_b`` with a two-sided test at `alpha` and `power`.

    Unpaired (two independent groups, n items *each*), the normal approximation to the
    two-proportion z-test without continuity correction (Fleiss)::

        n = (z_{1-a/2} sqrt(2 pbar qbar) + z_{power} sqrt(p_a q_a + p_b q_b))^2 / (p_a - p_b)^2

    with ``pbar = (p_a + p_b) / 2`` and ``q = 1 - p``.

    Paired (both variants on the same n items): the smallest n at which the *exact* power of
    the test the comparison will use reaches `power`, found by enumerating the discordant
    counts (Connor's 1987 normal formula, about 5% short, only seeds the search). ``test`` is
    ``"score"`` (what `paired_comparison` decides with) or ``"exact"`` (exact McNemar, the
    ``p_exact`` field). ``discordant`` is the expected share psi of discordant items; it
    defaults to ``p_a q_b + p_b q_a``, the value if the two variants failed independently;
    real variants fail on the same hard items, so psi is usually smaller and the paired
    design needs fewer items. Pass a psi measured on a pilot run when you have one. Exact
    power is not monotone in n (a saw-tooth), so a slightly larger n can fall just short.
    """
    for name, p in (("p_a", p_a), ("p_b", p_b)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be a proportion in [0, 1], got {p}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    d = p_a - p_b
    if d == 0:
        raise ValueError("p_a == p_b: there is no difference to detect")
    z_a, z_b = _z(alpha), NormalDist().inv_cdf(power)
    if not paired:
        pbar = (p_a + p_b) / 2
        num = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(
            p_a * (1 - p_a) + p_b * (1 - p_b)
        )
        return math.ceil(num * num / (d * d))
    psi = p_a * (1 - p_b) + p_b * (1 - p_a) if discordant is None else discordant
    if not abs(d) <= psi <= 1:
        raise ValueError(
            f"discordant share must lie in [|p_a - p_b|, 1] = [{abs(d):.3g}, 1], got {psi}"
        )
    if test not in ("score", "exact"):
        raise ValueError(f"test must be 'score' or 'exact', got {test!r}")
    num = z_a * math.sqrt(psi) + z_b * math.sqrt(psi - d * d)
    seed = math.ceil(num * num / (d * d))
    q, r = (psi + d) / 2, (psi - d) / 2  # the two discordant cells
    n = max(1, seed // 2)
    while pk.power(n, q, r, alpha, test) < power:
        n += 1
        if n > 50 * seed + 1000:
            raise ValueError(f"power {power} is not reached below {n} items")
    return n


# --------------------------------------------------------------------------- cost and latency


_TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens")


def cost_summary(df: pd.DataFrame, by: str = "variant") -> pd.DataFrame:
    """Cost and tokens per group; what a success costs is what decides between variants.

    Columns: ``by, n, n_items, successes, total_cost, cost_per_item`` (mean cost of running one
    item once, i.e. per row), ``cost_per_success`` (total cost / passed rows; NaN with no
    successes), then token sums (``prompt_tokens, completion_tokens, cached_tokens``) and
    per-row means (``*_mean``). Error rows count: failed calls are paid for too. Unknown costs
    (NaN) are skipped; ``total_cost`` is NaN only when no row has a cost.
    """
    df = _check(df, [by, "item_id", "passed", "cost_usd", *_TOKENS])
    keys = _keys(df, by)
    frame = pd.DataFrame({"cost": _as_float(df["cost_usd"]), "passed": _as_float(df["passed"])})
    for col in _TOKENS:
        frame[col] = _as_float(df[col])
    g = frame.groupby(df[by], observed=True, sort=False)
    n, successes = _ints(g.size(), keys), _ints(g["passed"].sum(), keys)
    total = _floats(g["cost"].sum(min_count=1), keys)
    items = _ints(df["item_id"].groupby(df[by], observed=True, sort=False).nunique(), keys)
    out = pd.DataFrame({by: keys, "n": n, "n_items": items, "successes": successes})
    out["total_cost"] = total
    out["cost_per_item"] = _ratio(total, n)
    out["cost_per_success"] = _ratio(total, successes)
    sums, means = g[list(_TOKENS)].sum(), g[list(_TOKENS)].mean()
    for col in _TOKENS:
        out[col] = _ints(sums[col], keys)
    for col in _TOKENS:
        out[f"{col}_mean"] = _floats(means[col], keys)
    return out


def latency_summary(
    df: pd.DataFrame,
    by: str = "variant",
    percentiles: Sequence[float] = (50, 90, 95, 99),
    include_errors: bool = False,
) -> pd.DataFrame:
    """Latency and time-to-first-token percentiles per group, in seconds.

    Columns: ``by, latency_n, latency_mean, latency_p50, ..., ttft_n, ttft_mean, ttft_p50,
    ...``. Error rows are left out by default: a fast rejection or a timeout says nothing
    about how long an answer takes. Percentiles interpolate linearly (numpy's default).
    """
    df = _check(df, [by, "latency_s", "ttft_s"])
    keys = _keys(df, by)
    rows = df if include_errors else df[~_errored(df)]
    qs = [p / 100 for p in percentiles]
    out = pd.DataFrame({by: keys})
    for col, name in (("latency_s", "latency"), ("ttft_s", "ttft")):
        v = _as_float(rows[col])
        v = v[v.notna()]
        g = v.groupby(rows.loc[v.index, by], observed=True, sort=False)
        out[f"{name}_n"] = _ints(g.count(), keys)
        out[f"{name}_mean"] = _floats(g.mean(), keys)
        quant = g.quantile(qs).unstack() if len(v) else pd.DataFrame(columns=qs)
        quant = quant.reindex(index=keys, columns=qs)
        for p, q in zip(percentiles, qs, strict=True):
            out[f"{name}_p{p:g}"] = quant[q].to_numpy(dtype=float)
    return out


def repair_breakdown(df: pd.DataFrame, by: str = "variant") -> pd.DataFrame:
    """Share of answered rows (no error) that needed each repair step, per group.

    Columns: ``by, step, rows, n, share``; steps ordered by how often they occur overall. A
    step listed twice on one row counts once. Tells which prompt leaves the model writing
    fences, prose or bad types, i.e. what to fix in the prompt instead of in the parser.
    """
    df = _check(df, [by, "repairs"])
    keys = _keys(df, by)
    ok = df.loc[~_errored(df), [by, "repairs"]].reset_index(drop=True)
    n = ok.groupby(by, observed=True, sort=False).size()
    steps = ok.explode("repairs")
    steps = steps[steps["repairs"].notna()].rename(columns={"repairs": "step"})
    steps = steps.assign(step=steps["step"].astype(str), row=steps.index)
    steps = steps.drop_duplicates(["row", "step"])
    cols = [by, "step", "rows", "n", "share"]
    if steps.empty:
        return pd.DataFrame(columns=cols)
    counts = steps.groupby([by, "step"], observed=True, sort=False).size().rename("rows")
    out = counts.reset_index()
    out["n"] = out[by].map(n).astype("int64")
    out["share"] = _ratio(out["rows"], out["n"])
    order = steps["step"].value_counts().index
    out["_g"] = pd.Categorical(out[by], categories=keys)
    out["_s"] = pd.Categorical(out["step"], categories=order)
    return out.sort_values(["_g", "_s"]).reset_index(drop=True)[cols]
