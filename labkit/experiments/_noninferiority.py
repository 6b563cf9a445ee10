"""Paired non-inferiority: the decision `labkit.gate` promotes a model upgrade with.

Re-exported by `labkit.experiments.stats`; the numerical kernels (Tango's statistic, the exact
unconditional p-value and its inverted bound) are in `labkit.experiments._paired`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import _paired as pk
from ._frame import _binary, _check, _item_matrix

__all__ = ["MIN_BOOTSTRAP_ITEMS", "NonInferiority", "noninferiority"]


MIN_BOOTSTRAP_ITEMS = 50
"""Fewest items `noninferiority` decides on when outcomes are not binary (studentised
bootstrap). Measured at the margin with per-item means of 3 repeats (bench/bench_stats.py):
false promotions 4.5-5.4% at 50-100 items (simulation error 0.7 points) but 6.4% at 30.
Binary outcomes use the exact test, which holds its level at any n."""


@dataclass(frozen=True)
class NonInferiority:
    """Is the candidate no worse than the current one by more than ``margin``?"""

    promote: bool
    """H0 "candidate worse by ``margin`` or more" rejected at ``alpha``: ``p_value <= alpha``,
    which is ``interval[0] > -margin``."""
    estimate: float
    """rate_candidate - rate_current over the items both answered."""
    interval: tuple[float, float]
    """(lower, upper): each a one-sided (1 - alpha) bound, together a (1 - 2 alpha) interval."""
    p_value: float
    """One-sided p of H0: difference <= -margin."""
    n: int
    """Items compared."""
    candidate_only: int
    """Discordant items the candidate passed and the current one failed (higher mean)."""
    current_only: int
    margin: float
    alpha: float
    method: str
    rate_candidate: float
    rate_current: float
    candidate: Hashable = None
    current: Hashable = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        head = "PROMOTE" if self.promote else "KEEP"
        lo, hi = self.interval
        return (
            f"{head}: {self.candidate} vs {self.current}, diff {self.estimate:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}], margin -{self.margin:g}, p={self.p_value:.4g} "
            f"(n={self.n}, discordant {self.candidate_only}/{self.current_only}; {self.method})"
        )


_EXACT = "exact unconditional test ordered by Tango's score (supremum over the nuisance)"
_BOOT_T = "studentised bootstrap of the mean per-item difference"


def noninferiority(
    df: pd.DataFrame,
    candidate: Hashable,
    current: Hashable,
    margin: float,
    alpha: float = 0.05,
    by: str = "variant",
    metric: str = "passed",
    n_boot: int = 4000,
    seed: int = 0,
) -> NonInferiority:
    """Paired non-inferiority of `candidate` against `current`, decided at one-sided `alpha`.

    H0: rate_candidate - rate_current <= -margin. Binary outcomes (one pass/fail per item):
    the exact unconditional test ordered by Tango's (1998) score statistic, whose p-value is
    the supremum of the tail over the nuisance discordance rate, so its size is <= alpha at
    every n (asymptotic Tango reaches 5.4% by exact enumeration; the table is in
    bench/bench_stats.py). The interval inverts the same test. Per-item means (repeats) or a
    continuous `metric` (e.g. ``"score"``): a studentised bootstrap over items (seeded), which
    needs at least `MIN_BOOTSTRAP_ITEMS` items and otherwise raises.
    """
    from ..errors import InputError

    if not 0 <= margin < 1:
        raise InputError(f"margin must be in [0, 1), got {margin}")
    if not 0 < alpha < 0.5:
        raise InputError(f"alpha must be in (0, 0.5), got {alpha}")
    frame = df if metric == "passed" else _check(df, [metric]).assign(passed=df[metric])
    mat = _item_matrix(frame, by)
    for name in (candidate, current):
        if name not in mat.columns:
            raise InputError(f"{by}={name!r} not in the frame; have {list(mat.columns)}")
    ya, yb = mat[candidate].to_numpy(dtype=float), mat[current].to_numpy(dtype=float)
    both = ~np.isnan(ya) & ~np.isnan(yb)
    va, vb = ya[both], yb[both]
    n = int(va.size)
    if n == 0:
        raise InputError(f"{candidate!r} and {current!r} answered no item in common")
    b, c = int((va > vb).sum()), int((vb > va).sum())
    notes = []
    if (~both).any():
        notes.append(f"{int((~both).sum())} items answered by only one of the two left out")
    if _binary(va, vb):
        low = pk.exact_ni_bound(b, c, n, alpha, at=-margin)
        high = -pk.exact_ni_bound(c, b, n, alpha)
        p, method = pk.exact_ni_pvalue(b, c, n, -margin), _EXACT
        promote = p <= alpha
    else:
        if n < MIN_BOOTSTRAP_ITEMS:
            raise InputError(
                f"{n} items: a bootstrap decision on non-binary outcomes needs at least "
                f"{MIN_BOOTSTRAP_ITEMS}; add suite items, or decide on one pass/fail per item "
                "(the exact test holds its level at any size)"
            )
        low, high, p = _bootstrap_t(va - vb, margin, alpha, n_boot, seed)
        method, promote = _BOOT_T, low > -margin
    return NonInferiority(
        promote=bool(promote),
        estimate=float(va.mean() - vb.mean()),
        interval=(float(low), float(high)),
        p_value=float(p),
        n=n,
        candidate_only=b,
        current_only=c,
        margin=margin,
        alpha=alpha,
        method=method,
        rate_candidate=float(va.mean()),
        rate_current=float(vb.mean()),
        candidate=candidate,
        current=current,
        notes=tuple(notes),
    )


def _bootstrap_t(
    d: np.ndarray, margin: float, alpha: float, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """Studentised (bootstrap-t) one-sided bounds of mean(d) and the p of mean(d) <= -margin."""
    n = d.size
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return mean, mean, 0.0 if mean > -margin else 1.0
    boot = _bootstrap_means(np.column_stack([d, d * d]), n_boot, seed)
    m1, m2 = boot[:, 0], boot[:, 1]
    se_b = np.sqrt(np.maximum(m2 - m1 * m1, 0.0) * n / (n - 1) / n)
    t = (m1 - mean) / np.where(se_b > 0, se_b, np.nan)
    t = t[np.isfinite(t)]
    q_hi, q_lo = np.quantile(t, [1 - alpha, alpha])
    t_obs = (mean + margin) / se
    return mean - q_hi * se, mean - q_lo * se, float((np.sum(t >= t_obs) + 1) / (t.size + 1))


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Column means of `values` (items x k) over `n_boot` resamples of the items.

    Resamples are drawn as index arrays and turned into per-item counts with one bincount per
    chunk, so memory stays near a million cells whatever the number of items.
    """
    n = values.shape[0]
    if n == 0:
        return np.full((n_boot, values.shape[1]), np.nan)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, values.shape[1]))
    chunk = max(1, 1_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(float)
        out[start : start + rows] = counts @ values / n
    return out
