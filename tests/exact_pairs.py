"""Exact enumeration of paired binary outcomes: the oracle the statistics' level checks (tests
and bench_stats) weigh every possible result with, written apart from labkit's own code."""

from __future__ import annotations

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
