"""Score and exact methods for paired binary outcomes (the kernels behind `labkit.experiments.stats`).

Notation: n items, each answered by two variants; ``b`` items only the first passed, ``c``
items only the second passed; the difference in pass rate is ``delta = (b - c) / n`` in the
sample and ``q - r`` in the population (``q``, ``r`` the two discordant cell probabilities).

* Two-sided intervals and tests for comparisons: Tango's (1998) score interval, inverted from
  the score statistic below, with a continuity correction of `CC` on ``b - c``. Measured by
  exact enumeration over the multinomial (bench/bench_stats.py), plain Tango dips to 93.4%
  coverage at n = 30; with ``CC = 0.2`` the minimum over rates 0.1-0.95, correlations 0-0.6
  and every n in 20..150 is 94.2% (means 95.4-97.4%, wider at small n). Its test at ``delta = 0`` is McNemar's
  z-test with the same correction, so "significant" and "the interval excludes 0" are one rule.
* One-sided non-inferiority (the promotion gate): an exact unconditional test ordered by
  Tango's statistic; the p-value is the supremum over the nuisance discordance rate of the
  tail probability on the boundary ``delta = d0``. Asymptotic Tango reaches 5.1-5.4% false
  promotions at n = 10-200 (5.7% at n = 200, margin 0.1, when the candidate never wins an
  item alone) by exact enumeration; the supremum makes the size <= alpha by construction,
  at a power cost of 0-4 points (measured at delta = 0, n = 10-200).
* Exact power by enumeration (`power`), for `labkit.experiments.stats.sample_size`.

numpy/scipy only (scipy's regularised incomplete beta gives binomial tails without a loop).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CC = 0.2
"""Continuity correction on ``b - c`` of the two-sided score interval and test (see above)."""
_GRID = 48
"""Nuisance grid points of the exact test before the local refinement of its best ones."""

Arr = np.ndarray


def tango_z(
    b: Arr | float, c: Arr | float, n: Arr | float, d0: Arr | float, cc: float = 0.0
) -> Arr:
    """Tango's score statistic for H0: delta = d0 (increasing in b, decreasing in d0).

    ``(b - c - n d0) / sqrt(n (2 r~ + d0 (1 - d0)))`` with ``r~`` the maximum-likelihood
    estimate of ``r`` under the constraint ``q - r = d0``; at ``d0 = 0`` it is McNemar's z.
    """
    b, c = np.asarray(b, dtype=float), np.asarray(c, dtype=float)
    n, d0 = np.asarray(n, dtype=float), np.asarray(d0, dtype=float)
    a2 = 2 * n
    b2 = -b - c + (2 * n - b + c) * d0
    c2 = -c * d0 * (1 - d0)
    r = (np.sqrt(np.maximum(b2 * b2 - 4 * a2 * c2, 0.0)) - b2) / (2 * a2)
    var = n * (2 * r + d0 * (1 - d0))
    num = b - c - n * d0
    if cc:
        num = np.sign(num) * np.maximum(np.abs(num) - cc, 0.0)
    safe = np.where(var > 1e-14, var, 1.0)
    z = num / np.sqrt(safe)
    edge = np.where(num > 0, np.inf, np.where(num < 0, -np.inf, 0.0))
    return np.where(var > 1e-14, z, edge)


def score_interval(
    b: Arr | int, c: Arr | int, n: Arr | int, alpha: float, cc: float = CC
) -> tuple[Arr, Arr]:
    """Two-sided (1 - alpha) Tango score interval of delta, vectorised (bisection, 1e-15)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2)
    b, c, n = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (b, c, n)))
    d = np.divide(b - c, n, out=np.zeros(b.shape), where=n > 0)
    ends = []
    for target, lo, hi in ((z, -np.ones(b.shape), d.copy()), (-z, d.copy(), np.ones(b.shape))):
        for _ in range(52):
            mid = (lo + hi) / 2
            right = tango_z(b, c, n, mid, cc) > target  # the statistic falls as d0 rises
            lo, hi = np.where(right, mid, lo), np.where(right, hi, mid)
        ends.append((lo + hi) / 2)
    return ends[0], ends[1]


def score_pvalue(b: Arr | int, c: Arr | int, cc: float = CC) -> Arr:
    """Two-sided p of the score test of delta = 0 (McNemar's z with correction `cc`).

    p < alpha exactly when `score_interval` at the same alpha excludes 0; 1.0 when b = c = 0.
    """
    from scipy.special import ndtr

    b, c = np.asarray(b, dtype=float), np.asarray(c, dtype=float)
    m = b + c
    z = np.maximum(np.abs(b - c) - cc, 0.0) / np.sqrt(np.where(m > 0, m, 1.0))
    return np.where(m > 0, np.minimum(1.0, 2 * ndtr(-z)), 1.0)


# --------------------------------------------------------------------------- exact one-sided


def _thresholds(n: int, d0: float, t: float) -> Arr:
    """Per discordant total m = 0..n: the smallest b with Tango's z(b, m - b) >= t (m + 1: none).

    The statistic rises with b at fixed m, so the region {z >= t} is {b >= threshold(m)}.
    """
    m = np.arange(n + 1, dtype=float)
    lo, hi = np.zeros(n + 1), m + 1  # answer in [lo, hi]; hi = m + 1 means none
    for _ in range(int(np.ceil(np.log2(n + 2))) + 1):
        mid = np.floor((lo + hi) / 2)
        ok = (mid <= m) & (tango_z(mid, m - mid, n, d0) >= t - 1e-9)
        lo, hi = np.where(ok, lo, mid + 1), np.where(ok, mid, hi)
    return hi


def _binom_pmf(k: Arr, n: Arr | int, p: Arr) -> Arr:
    """Binomial pmf from log-gamma (broadcasting; 0 log 0 = 0 at p = 0 or 1)."""
    from scipy.special import gammaln, xlog1py, xlogy

    logc = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    return np.exp(logc + xlogy(k, p) + xlog1py(n - k, -p))


def _tail(n: int, d0: float, bmin: Arr, r: Arr) -> Arr:
    """P(b >= bmin[m]) under (q, r) = (r + d0, r), for each nuisance value in `r`."""
    from scipy.special import betainc

    m = np.arange(n + 1, dtype=float)[None, :]
    q = r + d0
    psi = np.clip(q + r, 0.0, 1.0)
    theta = np.divide(q, psi, out=np.zeros_like(psi), where=psi > 0)
    pm = _binom_pmf(m, n, psi[:, None])
    k = bmin[None, :]
    # P(B >= k) for B ~ Bin(m, theta) is the regularised incomplete beta I_theta(k, m - k + 1).
    safe_k, safe_rest = np.maximum(k, 1), np.maximum(m - k + 1, 1)
    upper = betainc(safe_k, safe_rest, np.broadcast_to(theta[:, None], pm.shape))
    pb = np.where(k <= 0, 1.0, np.where(k > m, 0.0, upper))
    return (pm * pb).sum(axis=1)


def _supremum(f: Callable[[Arr], Arr], lo: float, hi: float) -> float:
    """Max of a smooth function on [lo, hi]: a grid, then three zooms around its best two
    points (each zoom narrows the bracket 12-fold; the max is flat, so the value is exact
    to far below the 1e-6 that matters for a p-value)."""
    grid = np.linspace(lo, hi, _GRID)
    vals = f(grid)
    best = float(vals.max())
    for i in np.argsort(vals)[-2:]:
        a, b = grid[max(i - 1, 0)], grid[min(i + 1, _GRID - 1)]
        for _ in range(3):
            zoom = np.linspace(a, b, 25)
            v = f(zoom)
            j = int(v.argmax())
            best = max(best, float(v[j]))
            a, b = zoom[max(j - 1, 0)], zoom[min(j + 1, 24)]
    return best


def exact_ni_pvalue(b: int, c: int, n: int, d0: float) -> float:
    """Exact unconditional one-sided p for H0: delta <= d0 against delta > d0.

    The supremum over the nuisance r (with q = r + d0 on the boundary) of P(z >= z_observed),
    z being Tango's statistic; rejecting when p <= alpha keeps the size <= alpha at every n.
    """
    if n <= 0:
        return 1.0
    if d0 <= -1:
        return 0.0
    if d0 >= 1:
        return 1.0
    t = float(tango_z(b, c, n, d0))
    bmin = _thresholds(n, d0, t)
    lo, hi = max(0.0, -d0), (1 - d0) / 2
    return min(1.0, _supremum(lambda r: _tail(n, d0, bmin, r), lo, hi))


def exact_ni_bound(
    b: int, c: int, n: int, alpha: float, at: float | None = None, tol: float = 1e-5
) -> float:
    """One-sided (1 - alpha) lower bound of delta: the d0 where `exact_ni_pvalue` crosses alpha.

    With `at` (the margin's boundary, -margin), the test there is done first and the search
    stays on its side, so "bound > at" is exactly "p(at) <= alpha": the decision and the
    reported bound cannot disagree, whatever the tolerance.
    """
    if n <= 0:
        return float("nan")
    lo, hi = -1.0, (b - c) / n  # p(-1) = 0 <= alpha; p(estimate) >= about 1/2 > alpha
    if at is not None and lo < at < hi:
        if exact_ni_pvalue(b, c, n, at) <= alpha:
            lo = at
        else:
            hi = at
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if exact_ni_pvalue(b, c, n, mid) <= alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def exact_ni_critical(n: int, d0: float, alpha: float) -> float:
    """The smallest Tango z whose exact p <= alpha, among the (b, c) tables of n items.

    The p-value falls as z rises, so the test rejects exactly when z >= this value (inf when
    no table rejects); the size of the test is then a sum over one region (tests, bench).
    """
    i, j = np.triu_indices(n + 1)
    b, c = i, n - j  # every table with b + c <= n
    zs = tango_z(b, c, n, d0)
    z = np.unique(zs)[::-1]
    cell = {float(v): (int(x), int(y)) for v, x, y in zip(zs, b, c, strict=True)}
    lo, hi, found = 0, z.size - 1, np.inf
    while lo <= hi:  # the last z (from the top) whose p <= alpha
        mid = (lo + hi) // 2
        x, y = cell[float(z[mid])]
        if exact_ni_pvalue(x, y, n, d0) <= alpha:
            found, lo = float(z[mid]), mid + 1
        else:
            hi = mid - 1
    return found


# --------------------------------------------------------------------------- power


def reject_counts(m: Arr, alpha: float, test: str) -> Arr:
    """Largest k such that b <= k (or b >= m - k) rejects delta = 0, per discordant total m.

    `test` is "score" (`score_pvalue` < alpha) or "exact" (exact McNemar p <= alpha); -1 when
    no split of m rejects.
    """
    from statistics import NormalDist

    from scipy.stats import binom

    m = np.asarray(m, dtype=float)
    if test == "score":
        z = NormalDist().inv_cdf(1 - alpha / 2)
        # |m - 2k| - cc > z sqrt(m)  <=>  k < (m - cc - z sqrt(m)) / 2
        bound = (m - CC - z * np.sqrt(m)) / 2
        k = np.ceil(bound) - 1
        return np.where(m > 0, np.maximum(k, -1), -1)
    if test == "exact":
        k = binom.ppf(alpha / 2, m, 0.5)  # smallest k with cdf >= alpha / 2
        k = np.where(binom.cdf(k, m, 0.5) * 2 <= alpha, k, k - 1)
        return np.where(m > 0, np.maximum(k, -1), -1)
    raise ValueError(f"test must be 'score' or 'exact', got {test!r}")


def power(n: int, q: float, r: float, alpha: float, test: str) -> float:
    """Exact power of the two-sided paired test of delta = 0 at discordant probabilities (q, r)."""
    from scipy.stats import binom

    m = np.arange(n + 1)
    psi = q + r
    if psi <= 0:
        return 0.0
    theta = q / psi
    k = reject_counts(m, alpha, test)
    low = np.where(k >= 0, binom.cdf(k, m, theta), 0.0)
    high = np.where(k >= 0, binom.sf(m - k - 1, m, theta), 0.0)
    both = np.where(2 * k + 1 >= m, 1.0, low + high)  # regions overlap only if all of m rejects
    return float((binom.pmf(m, n, psi) * np.minimum(both, 1.0)).sum())
