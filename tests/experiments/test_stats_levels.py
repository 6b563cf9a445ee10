"""The level of every decision labkit.experiments.stats makes, by exact enumeration or seeded simulation.

Oracles: the multinomial pmf from scipy (`gammaln`), summed over every possible table, for the
non-inferiority size and the paired interval's coverage; a seeded simulation for the item-level
success-rate interval. These are the figures bench/bench_stats.py prints beside the old methods.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from exact_pairs import pmf, scenarios, tables
from frames import binary_frame, make_results
from scipy.stats import norm

from labkit.errors import InputError
from labkit.experiments import _noninferiority as ni
from labkit.experiments import _paired as pk
from labkit.experiments import calibration as calib
from labkit.experiments import stats
from labkit.experiments._frame import _wilson

ALPHA = 0.05


def ni_size(n: int, margin: float, reject: np.ndarray, psis: np.ndarray) -> np.ndarray:
    """P(reject) at the boundary delta = -margin, per discordance rate psi = q + r."""
    b, c = tables(n)
    out = []
    for psi in psis:
        r = (psi + margin) / 2
        out.append(pmf(b[reject], c[reject], n, r - margin, r).sum())
    return np.array(out)


PSIS = np.array([0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9])


@pytest.mark.parametrize("n", [10, 30, 50, 200])
@pytest.mark.parametrize("margin", [0.05, 0.1])
def test_noninferiority_size_at_most_alpha(n: int, margin: float) -> None:
    b, c = tables(n)
    z = pk.tango_z(b, c, n, -margin)
    reject = z >= pk.exact_ni_critical(n, -margin, ALPHA)
    psis = PSIS[margin < PSIS]
    size = ni_size(n, margin, reject, psis)
    assert size.max() <= ALPHA, dict(zip(psis.round(2), size.round(4), strict=True))
    assert size.max() > 0.6 * ALPHA or n == 10  # not a test that never promotes


def test_asymptotic_tango_exceeds_alpha_which_is_why_the_gate_is_exact() -> None:
    worst = 0.0
    for n, margin in ((30, 0.05), (200, 0.1)):
        b, c = tables(n)
        reject = pk.tango_z(b, c, n, -margin) > norm.ppf(1 - ALPHA)
        worst = max(worst, ni_size(n, margin, reject, PSIS[margin < PSIS]).max())
    assert worst > 0.052


@pytest.mark.parametrize(
    ("b", "c", "n", "d0"), [(6, 2, 20, -0.05), (3, 5, 20, -0.2), (9, 1, 25, 0.1)]
)
def test_exact_pvalue_against_brute_force(b: int, c: int, n: int, d0: float) -> None:
    """The supremum over a fine nuisance grid of P(z >= z_obs), summed cell by cell."""
    bb, cc = tables(n)
    region = pk.tango_z(bb, cc, n, d0) >= float(pk.tango_z(b, c, n, d0)) - 1e-9
    rs = np.linspace(max(0.0, -d0), (1 - d0) / 2, 4001)
    brute = max(pmf(bb[region], cc[region], n, r + d0, r).sum() for r in rs)
    assert pk.exact_ni_pvalue(b, c, n, d0) == pytest.approx(brute, abs=2e-6)


def test_noninferiority_decision_matches_its_interval() -> None:
    rng = np.random.default_rng(4)
    for _ in range(12):
        n = int(rng.integers(10, 60))
        a = (rng.random(n) < 0.8).astype(int)
        b = np.where(rng.random(n) < 0.25, 1 - a, a)
        margin = float(rng.choice([0.02, 0.05, 0.1, 0.2]))
        r = ni.noninferiority(binary_frame(b, a, ("new", "old")), "new", "old", margin)
        assert r.promote == (r.p_value <= ALPHA) == (r.interval[0] > -margin)
        assert r.interval[0] <= r.estimate <= r.interval[1]
        assert (r.candidate_only, r.current_only) == (
            int(((b == 1) & (a == 0)).sum()),
            int(((b == 0) & (a == 1)).sum()),
        )


def test_noninferiority_no_discordant_items_is_not_an_automatic_promotion() -> None:
    """The percentile bootstrap collapsed to [0, 0] here and always promoted."""
    same = [1] * 18 + [0] * 2
    r = ni.noninferiority(binary_frame(same, same, ("new", "old")), "new", "old", 0.05)
    assert r.estimate == 0 and r.interval[0] < -0.05 and not r.promote
    big = [1] * 180 + [0] * 20
    assert ni.noninferiority(binary_frame(big, big, ("new", "old")), "new", "old", 0.05).promote


def test_noninferiority_bootstrap_for_repeats_and_minimum_items() -> None:
    df = make_results(n_items=60, repeats=3, seed=5, skills=(0.5, 0.5, 0.6, 1.5))
    v = list(pd.unique(df["variant"]))
    r = ni.noninferiority(df, v[3], v[0], 0.1)
    assert "bootstrap" in r.method and r.n == 60 and r.promote
    assert r.interval[0] <= r.estimate <= r.interval[1]
    assert r.p_value < 0.05 and r.interval[0] > -0.1
    assert not ni.noninferiority(df, v[0], v[3], 0.1).promote
    small = df[df["item_id"].isin(df["item_id"].unique()[:40])]
    with pytest.raises(InputError, match="at least 50"):
        ni.noninferiority(small, v[3], v[0], 0.1)
    with pytest.raises(InputError, match="margin"):
        ni.noninferiority(df, v[3], v[0], 1.5)


# --------------------------------------------------------------------------- two-sided intervals


def coverage(n: int, lo: np.ndarray, hi: np.ndarray) -> list[tuple[float, float, float, float]]:
    b, c = tables(n)
    out = []
    for pa, pb, rho, q, r in scenarios():
        hit = (lo <= q - r + 1e-12) & (q - r - 1e-12 <= hi)
        out.append((pa, pb, rho, float(pmf(b[hit], c[hit], n, q, r).sum())))
    return out


@pytest.mark.parametrize("n", [20, 30, 50, 100])
def test_paired_score_interval_coverage_by_enumeration(n: int) -> None:
    b, c = tables(n)
    lo, hi = pk.score_interval(b, c, n, ALPHA)
    cov = coverage(n, lo, hi)
    worst = min(cov, key=lambda t: t[3])
    assert worst[3] >= 0.94, worst
    assert np.mean([t[3] for t in cov]) < 0.975  # not bought with uselessly wide intervals


def test_significant_iff_interval_excludes_zero_for_every_table() -> None:
    for n in (10, 23, 40):
        b, c = tables(n)
        lo, hi = pk.score_interval(b, c, n, ALPHA)
        sig = pk.score_pvalue(b, c) < ALPHA
        assert (sig == ((lo > 0) | (hi < 0))).all()


def test_item_level_rate_interval_coverage_with_repeats() -> None:
    """30 items x 5 repeats, items differing in difficulty: rows are not independent draws."""
    rng = np.random.default_rng(11)
    sims, n_items, repeats = 20000, 30, 5
    for mean, conc in ((0.7, 1.0), (0.5, 0.5), (0.3, 20.0)):
        p = rng.beta(mean * conc, (1 - mean) * conc, (sims, n_items))
        k = rng.binomial(repeats, p)
        per = k / repeats
        lo, hi = stats.item_interval(
            per.mean(1), per.var(1, ddof=1), np.full(sims, n_items), np.full(sims, 150), ALPHA
        )
        items = np.mean((lo <= mean) & (mean <= hi))
        rlo, rhi = _wilson(k.sum(1), np.full(sims, 150), ALPHA)
        rows = np.mean((rlo <= mean) & (mean <= rhi))
        assert items >= 0.935, (mean, conc, items)
        if conc <= 1:  # strong item effect: the old row-count interval under-covers badly
            assert rows < 0.8


def test_summary_reports_items_and_rows_and_uses_the_item_interval() -> None:
    df = make_results(n_items=30, repeats=5, seed=3)
    t = stats.success_rates(df)
    assert (t["n_items"] == 30).all() and (t["n_rows"] == 150).all()
    per = df.assign(y=df["passed"].astype(float)).groupby(["variant", "item_id"])["y"].mean()
    g = per.groupby(level=0)
    row = t.set_index("variant").loc[df["variant"].iloc[0]]
    lo, hi = stats.item_interval(
        np.array([g.mean()[row.name]]),
        np.array([g.var()[row.name]]),
        np.array([30]),
        np.array([150]),
        ALPHA,
    )
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo[0]), pytest.approx(hi[0]))
    naive = stats.wilson_interval(int(row["successes"]), 150)
    assert row["ci_high"] - row["ci_low"] > naive[1] - naive[0]


def test_duplicate_rows_are_an_error_naming_them() -> None:
    df = binary_frame([1, 0, 1], [1, 1, 0])
    dup = pd.concat([df, df.iloc[[1]]], ignore_index=True)
    for call in (
        lambda: stats.success_rates(dup),
        lambda: stats.paired_comparison(dup, "A", "B"),
        lambda: stats.pass_k(dup),
    ):
        with pytest.raises(InputError, match=r"\('i1', 'A', 0\)"):
            call()


def test_out_of_range_confidences_warn_with_counts() -> None:
    df = make_results(n_items=10, seed=1)
    df["confidence"] = [7.0, -0.2, np.inf, *df["confidence"].iloc[3:]]
    with pytest.warns(UserWarning, match=r"3 of \d+ confidence.*1 above 1, 1 below 0, 1 infinite"):
        cf = calib.confidence_frame(df)
    assert cf["confidence"].dropna().between(0, 1).all()
    assert cf["confidence"].iloc[:3].isna().all()  # left out, not clipped to 1.0 / 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calib.confidence_frame(make_results(n_items=10, seed=1))  # in range: silent
