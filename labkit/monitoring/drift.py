"""Shift tests for monitoring: two proportions, two distributions (KS) and PSI.

`labkit.monitor` aggregates traces in SQLite and hands these functions counts and histograms,
never raw rows, so the memory they need is bounded by the number of bins, not of calls.

* `two_proportions`: the pooled two-sample z test (the score test) of p_window = p_baseline.
* `ks_from_counts`: the two-sample Kolmogorov-Smirnov statistic computed on histograms over a
  shared set of bins (exact for discrete values such as confidences on a 0.05 grid; for
  latencies binned at 1% relative width it is the statistic of the rounded values) and its
  asymptotic p-value (Kolmogorov's series with Stephens' small-sample correction), so scipy is
  not needed at runtime. Ties and binning make the test conservative, never liberal.
* `psi`: the population stability index over the baseline's deciles. It is an effect size
  with conventional readings (< 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift), not a test;
  the monitor alerts only when a test agrees.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["hist_quantile", "ks_from_counts", "ks_pvalue", "psi", "two_proportions"]


def two_proportions(k0: int, n0: int, k1: int, n1: int) -> tuple[float, float]:
    """(p1 - p0, two-sided p-value) of the pooled z test; p = 1 when there is nothing to test."""
    if n0 <= 0 or n1 <= 0:
        return math.nan, math.nan
    p0, p1 = k0 / n0, k1 / n1
    pooled = (k0 + k1) / (n0 + n1)
    var = pooled * (1 - pooled) * (1 / n0 + 1 / n1)
    if var <= 0:
        return p1 - p0, 1.0
    z = (p1 - p0) / math.sqrt(var)
    return p1 - p0, 2 * NormalDist().cdf(-abs(z))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic two-sided p-value of the two-sample KS statistic `d` for sizes n and m."""
    if n <= 0 or m <= 0 or not math.isfinite(d):
        return math.nan
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 0.2:
        return 1.0
    total, sign = 0.0, 1.0
    for j in range(1, 101):
        term = sign * math.exp(-2.0 * j * j * lam * lam)
        total += term
        if abs(term) < 1e-12 * max(total, 1e-300):
            break
        sign = -sign
    return min(1.0, max(0.0, 2.0 * total))


def ks_from_counts(
    bins0: np.ndarray, counts0: np.ndarray, bins1: np.ndarray, counts1: np.ndarray
) -> tuple[float, float, int, int]:
    """(D, p-value, n0, n1) of two histograms given as sorted bin keys and their counts."""
    n0, n1 = int(counts0.sum()), int(counts1.sum())
    if n0 == 0 or n1 == 0:
        return math.nan, math.nan, n0, n1
    keys = np.union1d(bins0, bins1)
    c0 = np.zeros(keys.size)
    c1 = np.zeros(keys.size)
    c0[np.searchsorted(keys, bins0)] = counts0
    c1[np.searchsorted(keys, bins1)] = counts1
    d = float(np.max(np.abs(np.cumsum(c0) / n0 - np.cumsum(c1) / n1)))
    return d, ks_pvalue(d, n0, n1), n0, n1


def psi(
    bins0: np.ndarray,
    counts0: np.ndarray,
    bins1: np.ndarray,
    counts1: np.ndarray,
    groups: int = 10,
    floor: float = 1e-4,
) -> float:
    """Population stability index of histogram 1 against baseline histogram 0.

    The fine bins are merged into (up to) `groups` bins of roughly equal baseline mass (its
    deciles); empty proportions are floored at `floor` so the log stays finite.
    """
    n0, n1 = counts0.sum(), counts1.sum()
    if n0 == 0 or n1 == 0:
        return math.nan
    cum = np.cumsum(counts0) / n0
    # Upper edges (inclusive) of each coarse bin: the first fine bin reaching each decile.
    cuts = np.unique(
        bins0[np.minimum(np.searchsorted(cum, np.arange(1, groups) / groups), cum.size - 1)]
    )
    g0 = np.searchsorted(cuts, bins0, side="left")
    g1 = np.searchsorted(cuts, bins1, side="left")
    k = cuts.size + 1
    q0 = np.bincount(g0, weights=counts0, minlength=k) / n0
    q1 = np.bincount(g1, weights=counts1, minlength=k) / n1
    q0 = np.maximum(q0, floor)
    q1 = np.maximum(q1, floor)
    return float(np.sum((q1 - q0) * np.log(q1 / q0)))


def hist_quantile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The q-quantile (lower) of a histogram whose sorted bins stand for `values`."""
    n = counts.sum()
    if n == 0:
        return math.nan
    idx = int(np.searchsorted(np.cumsum(counts), q * n, side="left"))
    return float(values[min(idx, values.size - 1)])
