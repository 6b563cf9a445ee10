"""Benchmark: the level of labkit's statistical decisions beside the methods they replaced.

Goal (issue 14): the promotion gate's false-promotion rate <= alpha at every suite size, and
paired difference intervals covering >= 94% (nominal 95%) from 20 items, where the old
percentile bootstrap gave 6-9% false promotions and 87-89% coverage.

Everything is summed over every possible table of discordant counts (b, c) with the
multinomial pmf, so sizes and coverages are exact for the deterministic methods; the
percentile bootstrap is evaluated on every table too, with its quantiles from 500 seeded
resamples per table. Tables:

1. Non-inferiority size (one-sided 5%, margin 0.05 and 0.10) at the boundary
   (true difference = -margin), max over discordance rates psi in 0.06-0.9:
   exact Tango (labkit), asymptotic Tango, Wald, percentile bootstrap (the old gate).
2. Two-sided 95% paired interval coverage, min and mean over rates 0.1-0.95 x correlations
   0-0.5: Tango score with correction 0.2 (labkit), plain Tango, Wald, percentile bootstrap.
3. Success-rate interval with repeats (30 items x 5 repeats), seeded simulation: the item-level
   interval (labkit) vs Wilson on rows (the old summary).
4. Paired sample size: Connor's normal formula vs the exact search, and the power each gives.

Run: ``.venv/bin/python bench/bench_stats.py [--boot 500]`` (under a minute on a shared core).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from exact_pairs import pmf, scenarios, tables  # noqa: E402

from labkit.experiments import _paired as pk  # noqa: E402
from labkit.experiments import stats  # noqa: E402
from labkit.experiments._frame import _wilson  # noqa: E402

ALPHA = 0.05
PSIS = np.array([0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9])


_BOOT: dict[int, np.ndarray] = {}
QS = [ALPHA / 2, ALPHA, 1 - ALPHA / 2]


def boot_quantiles(b: np.ndarray, c: np.ndarray, n: int, draws: int) -> np.ndarray:
    """Percentile-bootstrap quantiles `QS` of (b* - c*) / n per table (items resampled)."""
    if n not in _BOOT:
        _BOOT[n] = _boot(b, c, n, QS, draws)
    return _BOOT[n]


def _boot(b: np.ndarray, c: np.ndarray, n: int, qs: list[float], draws: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.empty((len(qs), b.size))
    for start in range(0, b.size, 400):
        bb, cc = b[start : start + 400], c[start : start + 400]
        bs = rng.binomial(n, bb / n, size=(draws, bb.size))
        rest = n - bs
        share = np.divide(cc, n - bb, out=np.zeros(bb.size), where=(n - bb) > 0)
        cs = rng.binomial(rest, np.broadcast_to(share, rest.shape))
        out[:, start : start + 400] = np.quantile((bs - cs) / n, qs, axis=0)
    return out


def wald(b: np.ndarray, c: np.ndarray, n: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    d = (b - c) / n
    se = np.sqrt(np.maximum((b + c) / n - d * d, 0.0) / n)
    return d - z * se, d + z * se


def ni_table(draws: int) -> list[str]:
    rows = [
        "| n | margin | exact Tango (labkit) | asymptotic Tango | Wald | percentile bootstrap "
        "(old gate) | power at diff 0, psi 0.2: exact / asymptotic |"
    ]
    rows.append("|---|---|---|---|---|---|---|")
    z1 = norm.ppf(1 - ALPHA)
    for margin in (0.05, 0.10):
        for n in (10, 30, 50, 200):
            b, c = tables(n)
            zt = pk.tango_z(b, c, n, -margin)
            rules = {
                "exact": zt >= pk.exact_ni_critical(n, -margin, ALPHA),
                "tango": zt > z1,
                "wald": wald(b, c, n, z1)[0] > -margin,
                "boot": boot_quantiles(b, c, n, draws)[1] > -margin,
            }
            psis = PSIS[margin < PSIS]
            cells = []
            for reject in rules.values():
                size = []
                for psi in psis:
                    r = (psi + margin) / 2
                    size.append(pmf(b[reject], c[reject], n, r - margin, r).sum())
                i = int(np.argmax(size))
                cells.append(f"{100 * size[i]:.2f}% (psi {psis[i]:g})")
            w = pmf(b, c, n, 0.1, 0.1)
            power = [100 * w[rules[k]].sum() for k in ("exact", "tango")]
            cells.append(f"{power[0]:.1f}% / {power[1]:.1f}%")
            rows.append(f"| {n} | {margin:g} | " + " | ".join(cells) + " |")
    return rows


def coverage_table(draws: int) -> list[str]:
    rows = [
        "| n | Tango score, cc 0.2 (labkit) | plain Tango | Wald | percentile bootstrap (old) |"
    ]
    rows.append("|---|---|---|---|---|")
    z2 = norm.ppf(1 - ALPHA / 2)
    for n in (20, 30, 50, 100):
        b, c = tables(n)
        q_lo, _, q_hi = boot_quantiles(b, c, n, draws)
        intervals = {
            "cc": pk.score_interval(b, c, n, ALPHA),
            "plain": pk.score_interval(b, c, n, ALPHA, cc=0.0),
            "wald": wald(b, c, n, z2),
            "boot": (q_lo, q_hi),
        }
        cov: dict[str, list[float]] = {k: [] for k in intervals}
        for _, _, _, q, r in scenarios():
            w = pmf(b, c, n, q, r)
            for k, (lo, hi) in intervals.items():
                hit = (lo <= q - r + 1e-12) & (q - r - 1e-12 <= hi)
                cov[k].append(float(w[hit].sum()))
        cells = [f"min {100 * min(v):.1f}%, mean {100 * np.mean(v):.1f}%" for v in cov.values()]
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return rows


def repeats_table() -> list[str]:
    rows = [
        "| items x repeats | population rate, item spread | item-level interval (labkit) | Wilson on rows (old) |"
    ]
    rows.append("|---|---|---|---|")
    rng = np.random.default_rng(11)
    sims = 20000
    for n_items, reps in ((30, 5), (50, 10)):
        for mean, conc in ((0.7, 1.0), (0.9, 2.0), (0.5, 0.5), (0.3, 20.0)):
            p = rng.beta(mean * conc, (1 - mean) * conc, (sims, n_items))
            k = rng.binomial(reps, p)
            per = k / reps
            ones = np.ones(sims)
            lo, hi = stats.item_interval(
                per.mean(1), per.var(1, ddof=1), n_items * ones, n_items * reps * ones, ALPHA
            )
            rlo, rhi = _wilson(k.sum(1), n_items * reps * ones, ALPHA)
            spread = f"{mean:g}, Beta concentration {conc:g}"
            rows.append(
                f"| {n_items} x {reps} | {spread} | {100 * np.mean((lo <= mean) & (mean <= hi)):.1f}% "
                f"| {100 * np.mean((rlo <= mean) & (mean <= rhi)):.1f}% |"
            )
    return rows


def sample_size_table() -> list[str]:
    rows = [
        "| p_a vs p_b, discordant | Connor (old) n, exact-McNemar power | labkit n (exact test), power | labkit n (score test), power |"
    ]
    rows.append("|---|---|---|---|")
    z_a, z_b = norm.ppf(1 - ALPHA / 2), norm.ppf(0.8)
    for p_a, p_b, psi in ((0.8, 0.7, 0.3), (0.9, 0.75, 0.2), (0.6, 0.5, 0.4)):
        d = p_a - p_b
        connor = math.ceil((z_a * math.sqrt(psi) + z_b * math.sqrt(psi - d * d)) ** 2 / d**2)
        q, r = (psi + d) / 2, (psi - d) / 2
        cells = [f"{connor}, {pk.power(connor, q, r, ALPHA, 'exact'):.3f}"]
        for test in ("exact", "score"):
            n = stats.sample_size(p_a, p_b, paired=True, discordant=psi, test=test)
            cells.append(f"{n}, {pk.power(n, q, r, ALPHA, test):.3f}")
        rows.append(f"| {p_a} vs {p_b}, {psi} | " + " | ".join(cells) + " |")
    return rows


def bootstrap_t_table(sims: int = 1000, draws: int = 500) -> list[str]:
    """Non-binary outcomes (per-item means of 3 repeats): false promotions at the margin."""
    rows = [
        "| items | margin | studentised bootstrap (labkit) | percentile bootstrap (old) | t bound |"
    ]
    rows.append("|---|---|---|---|---|")
    rng = np.random.default_rng(5)
    reps = 3
    for n in (30, 50, 100):
        for margin in (0.05, 0.10):
            p = rng.uniform(0.35, 0.95, (sims, n))
            d = (rng.binomial(reps, p - margin) - rng.binomial(reps, p)) / reps
            mean, sd = d.mean(1), d.std(1, ddof=1)
            se = sd / math.sqrt(n)
            t_lo, pct_lo = np.empty(sims), np.empty(sims)
            for start in range(0, sims, 50):
                dd = d[start : start + 50]
                idx = rng.integers(0, n, (dd.shape[0], draws, n))
                boot = np.take_along_axis(dd[:, None, :], idx, axis=2)
                m1, s1 = boot.mean(2), boot.std(2, ddof=1) / math.sqrt(n)
                m0, s0 = mean[start : start + 50, None], se[start : start + 50, None]
                t = np.where(s1 > 0, (m1 - m0) / np.where(s1 > 0, s1, 1), np.nan)
                t_lo[start : start + 50] = (
                    m0[:, 0] - np.nanquantile(t, 1 - ALPHA, axis=1) * s0[:, 0]
                )
                pct_lo[start : start + 50] = np.quantile(m1, ALPHA, axis=1)
            from scipy.stats import t as student

            tb = mean - student.ppf(1 - ALPHA, n - 1) * se
            cells = [f"{100 * np.mean(lo > -margin):.1f}%" for lo in (t_lo, pct_lo, tb)]
            rows.append(f"| {n} | {margin:g} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boot", type=int, default=500, help="bootstrap resamples per table")
    args = parser.parse_args()
    start = time.perf_counter()
    sections = [
        (
            "False promotions at the margin (nominal 5%, worst discordance rate)",
            ni_table(args.boot),
        ),
        ("Paired 95% interval coverage over rates x correlations", coverage_table(args.boot)),
        ("Success-rate 95% interval coverage with repeats (20,000 seeded runs)", repeats_table()),
        ("Paired sample size for 80% power (two-sided 5%)", sample_size_table()),
        (
            "Non-binary outcomes (3 repeats per item): false promotions at the margin, "
            "nominal 5%, 1,000 seeded runs (Monte Carlo error about 0.7 points)",
            bootstrap_t_table(),
        ),
    ]
    for title, rows in sections:
        print(f"\n### {title}\n")
        print("\n".join(rows))
    print(f"\n(bench_stats: {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
