"""Exact enumeration of paired binary outcomes: the oracle the statistics' level checks (tests
and bench_stats) weigh every possible result with, written apart from labkit's own code."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scipy.special import gammaln


def tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (b, c) with b + c <= n: the discordant counts of n paired items."""
    b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = b + c <= n
    return b[keep], c[keep]


def pmf(b: np.ndarray, c: np.ndarray, n: int, q: float, r: float) -> np.ndarray:
    """Multinomial probability of (b, c, n - b - c) with cell probabilities (q, r, 1 - q - r)."""
    rest = n - b - c
    logp = gammaln(n + 1) - gammaln(b + 1) - gammaln(c + 1) - gammaln(rest + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, p in ((b, q), (c, r), (rest, 1 - q - r)):
            logp = logp + np.where(k > 0, k * np.log(max(p, 1e-300)), 0.0)
    return np.exp(logp)


RATES = (0.1, 0.3, 0.5, 0.7, 0.85, 0.95)
RHOS = (0.0, 0.2, 0.5)


def scenarios() -> Iterator[tuple[float, float, float, float, float]]:
    """(rate a, rate b, correlation, q, r) over the grid the level checks cover: q and r are
    the discordant cells' probabilities; combinations with no valid table are left out."""
    for pa in RATES:
        for pb in RATES:
            for rho in RHOS:
                p11 = pa * pb + rho * math.sqrt(pa * (1 - pa) * pb * (1 - pb))
                q, r = pa - p11, pb - p11
                if min(q, r, 1 - p11 - q - r) < 0 or q + r == 0:
                    continue
                yield pa, pb, rho, q, r
