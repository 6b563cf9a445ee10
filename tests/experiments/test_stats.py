"""labkit.experiments.stats against scipy/statsmodels reference values and hand-computed cases."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from frames import binary_frame, make_results
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from labkit.experiments import _paired as pk
from labkit.experiments import calibration as calib
from labkit.experiments import stats

pytestmark = pytest.mark.filterwarnings("error")  # no RuntimeWarning spam on edge cases


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_results(n_items=80, repeats=1, seed=1)


@pytest.fixture(scope="module")
def repeated() -> pd.DataFrame:
    return make_results(n_items=30, repeats=4, seed=2)


# --------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("k", "n", "alpha"),
    [(0, 10, 0.05), (10, 10, 0.05), (3, 10, 0.05), (47, 120, 0.05), (1, 1, 0.05), (5, 40, 0.1)],
)
def test_wilson_matches_statsmodels(k: int, n: int, alpha: float) -> None:
    ref = proportion_confint(k, n, alpha=alpha, method="wilson")
    assert stats.wilson_interval(k, n, alpha) == pytest.approx(ref, abs=1e-12)


def test_wilson_edge_cases() -> None:
    low, high = stats.wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


def test_success_rates_match_groupby_and_statsmodels(frame: pd.DataFrame) -> None:
    t = stats.success_rates(frame)
    assert list(t.columns[:6]) == ["variant", "n", "successes", "rate", "ci_low", "ci_high"]
    assert list(t["variant"]) == list(pd.unique(frame["variant"]))  # order of appearance
    ref = frame.groupby("variant", sort=False)["passed"].agg(["size", "sum", "mean"])
    assert t["n"].tolist() == ref["size"].tolist()
    assert t["successes"].tolist() == ref["sum"].tolist()
    assert np.allclose(t["rate"], ref["mean"])
    low, high = proportion_confint(ref["sum"].to_numpy(), ref["size"].to_numpy(), method="wilson")
    assert np.allclose(t["ci_low"], low) and np.allclose(t["ci_high"], high)
    errors = frame["error"].notna().groupby(frame["variant"], sort=False).sum()
    assert t["errors"].tolist() == errors.tolist()
    assert (t["errors"] > 0).any(), "fixture should contain error rows (counted as failures)"


def test_success_rates_other_grouping(frame: pd.DataFrame) -> None:
    t = stats.success_rates(frame, by="model")
    assert set(t["model"]) == {"small", "large"}
    assert t["n"].sum() == len(frame)


# --------------------------------------------------------------------------- McNemar, Holm


@pytest.mark.parametrize(
    ("a_only", "b_only"), [(0, 0), (5, 0), (3, 9), (9, 3), (20, 31), (130, 100)]
)
def test_mcnemar_exact_matches_statsmodels_and_binomtest(a_only: int, b_only: int) -> None:
    table = [[17, a_only], [b_only, 11]]
    ref = mcnemar(table, exact=True).pvalue
    assert stats.mcnemar_exact(a_only, b_only) == pytest.approx(ref, rel=1e-10)
    if a_only + b_only:
        binom = sps.binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert stats.mcnemar_exact(a_only, b_only) == pytest.approx(binom, rel=1e-10)


def test_mcnemar_exact_large_counts_stay_finite() -> None:
    p = stats.mcnemar_exact(2000, 2200)
    assert p == pytest.approx(sps.binomtest(2000, 4200, 0.5).pvalue, rel=1e-8)


def test_holm_matches_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, 0.04])
    assert np.allclose(stats.holm_adjust(p), multipletests(p, method="holm")[1])
    with_nan = stats.holm_adjust([0.01, np.nan, 0.04])
    assert np.isnan(with_nan[1])
    assert np.allclose(with_nan[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])
    assert stats.holm_adjust([]).size == 0


# --------------------------------------------------------------------------- paired comparison


def test_paired_comparison_binary_reference() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random(200) < 0.7).astype(int)
    b = np.where(rng.random(200) < 0.2, 1 - a, a)  # b mostly agrees with a
    r = stats.paired_comparison(binary_frame(a, b), "A", "B")
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    assert (r.n_items, r.a_only, r.b_only) == (200, a_only, b_only)
    assert r.rate_a == pytest.approx(a.mean()) and r.rate_b == pytest.approx(b.mean())
    assert r.diff == pytest.approx(a.mean() - b.mean())
    table = [[int(((a == 1) & (b == 1)).sum()), a_only], [b_only, int(((a == 0) & (b == 0)).sum())]]
    assert r.p_exact == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-10)
    # The score test is McNemar's chi-square (statsmodels) with a 0.2 continuity correction.
    chi2 = (abs(a_only - b_only) - 0.2) ** 2 / (a_only + b_only)
    assert r.p_value == pytest.approx(sps.chi2.sf(chi2, 1), rel=1e-9)
    # The interval ends are where the corrected Tango statistic equals -+1.96 (inverted test).
    z = sps.norm.ppf(0.975)
    for end, target in ((r.ci_low, z), (r.ci_high, -z)):
        assert float(pk.tango_z(a_only, b_only, 200, end, pk.CC)) == pytest.approx(target, abs=1e-6)
    assert r.ci_low <= r.diff <= r.ci_high
    assert r.significant == (r.p_value < 0.05) == (not r.ci_low <= 0 <= r.ci_high)
    assert r.notes == ()
    assert "significant" in str(r)


def test_tango_statistic_is_mcnemar_at_zero_and_matches_statsmodels() -> None:
    for b, c in ((7, 2), (30, 41), (1, 0), (12, 12)):
        chi2 = mcnemar([[5, b], [c, 9]], exact=False, correction=False).statistic
        assert float(pk.tango_z(b, c, 60, 0.0)) ** 2 == pytest.approx(chi2, rel=1e-12)


def test_paired_comparison_is_deterministic(frame: pd.DataFrame) -> None:
    v = list(pd.unique(frame["variant"]))
    one = stats.paired_comparison(frame, v[0], v[3], seed=5)
    assert one == stats.paired_comparison(frame, v[0], v[3], seed=6)  # no resampling left


def test_paired_comparison_averages_repeats_per_item(repeated: pd.DataFrame) -> None:
    v = list(pd.unique(repeated["variant"]))
    r = stats.paired_comparison(repeated, v[0], v[1])
    means = repeated.groupby(["item_id", "variant"])["passed"].mean().unstack()
    ma, mb = means[v[0]], means[v[1]]
    assert r.n_items == 30
    assert r.rate_a == pytest.approx(ma.mean()) and r.diff == pytest.approx((ma - mb).mean())
    assert (r.a_only, r.b_only) == (int((ma > mb).sum()), int((mb > ma).sum()))
    assert r.p_exact == pytest.approx(sps.binomtest(r.a_only, r.a_only + r.b_only).pvalue)
    ref = sps.ttest_rel(ma.to_numpy(), mb.to_numpy())  # items are the unit, not rows
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert any("repeats averaged" in note for note in r.notes)


def test_paired_comparison_uses_item_intersection() -> None:
    df = binary_frame([1, 1, 0, 1, 0, 1], [1, 0, 0, 0, 1, 1])
    df = df[~((df["variant"] == "A") & df["item_id"].isin(["i0"]))]
    df = df[~((df["variant"] == "B") & df["item_id"].isin(["i4", "i5"]))]
    r = stats.paired_comparison(df, "A", "B")
    assert (r.n_items, r.items_only_a, r.items_only_b) == (3, 2, 1)
    assert (r.rate_a, r.rate_b, r.a_only, r.b_only) == (pytest.approx(2 / 3), 0.0, 2, 0)
    assert "3 items both answered" in r.notes[0]


def test_paired_comparison_no_common_items_and_unknown_name() -> None:
    df = binary_frame([1, 0], [0, 1])
    df = df[~((df["variant"] == "B") & df["item_id"].isin(["i0", "i1"]))]
    df = pd.concat([df, pd.DataFrame({"item_id": ["x"], "variant": ["B"], "passed": [True]})])
    r = stats.paired_comparison(df, "A", "B")
    assert r.n_items == 0 and math.isnan(r.diff) and math.isnan(r.p_value)
    with pytest.raises(ValueError, match="not in the frame"):
        stats.paired_comparison(df, "A", "nope")


def test_pairwise_comparisons_holm_and_consistency(frame: pd.DataFrame) -> None:
    t = stats.pairwise_comparisons(frame, n_boot=500)
    assert len(t) == 6
    assert np.allclose(t["p_holm"], multipletests(t["p"], method="holm")[1])
    assert (t["significant"] == (t["p_holm"] < 0.05)).all()
    # One rule: significant iff the Holm-adjusted interval excludes 0.
    outside = (t["ci_low_holm"] > 0) | (t["ci_high_holm"] < 0)
    assert (t["significant"] == outside).all()
    assert ((t["ci_high_holm"] - t["ci_low_holm"]) >= (t["ci_high"] - t["ci_low"])).all()
    row = t.iloc[4]
    single = stats.paired_comparison(frame, row["a"], row["b"], n_boot=500)
    assert row["p"] == single.p_value and row["diff"] == pytest.approx(single.diff)
    assert row["ci_low"] == pytest.approx(single.ci_low) and row["ci_high"] == pytest.approx(
        single.ci_high
    )


def test_pairwise_against_baseline_orients_challenger_first(frame: pd.DataFrame) -> None:
    base = frame["variant"].iloc[0]
    t = stats.pairwise_comparisons(frame, baseline=base, n_boot=200)
    assert len(t) == 3 and (t["b"] == base).all() and base not in set(t["a"])
    rates = stats.success_rates(frame).set_index("variant")["rate"]
    assert np.allclose(t["diff"], rates[t["a"]].to_numpy() - rates[base])
    with pytest.raises(ValueError, match="baseline"):
        stats.pairwise_comparisons(frame, baseline="nope")


def test_pairwise_single_variant_is_empty(frame: pd.DataFrame) -> None:
    one = frame[frame["variant"] == frame["variant"].iloc[0]]
    t = stats.pairwise_comparisons(one)
    assert t.empty and "p_holm" in t.columns


# --------------------------------------------------------------------------- repeats


@pytest.mark.parametrize(
    ("n", "c", "k", "at", "hat"),
    [
        (5, 2, 1, 0.4, 0.4),
        (5, 2, 2, 1 - 3 / 10, 1 / 10),
        (5, 2, 3, 1 - 1 / 10, 0.0),
        (5, 2, 4, 1.0, 0.0),
        (4, 4, 3, 1.0, 1.0),
        (4, 0, 2, 0.0, 0.0),
        (10, 3, 5, 1 - 21 / 252, 0.0),
    ],
)
def test_pass_at_k_and_pass_hat_k_by_hand(n: int, c: int, k: int, at: float, hat: float) -> None:
    assert stats.pass_at_k(n, c, k) == pytest.approx(at)
    assert stats.pass_hat_k(n, c, k) == pytest.approx(hat)
    # The numerically stable product form from Chen et al. (2021), Figure 3.
    stable = 1.0 if n - c < k else 1 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))
    assert stats.pass_at_k(n, c, k) == pytest.approx(stable)


def test_pass_at_k_needs_enough_samples() -> None:
    assert math.isnan(stats.pass_at_k(2, 1, 3)) and math.isnan(stats.pass_hat_k(2, 1, 3))
    with pytest.raises(ValueError):
        stats.pass_at_k(3, 4, 1)


def test_pass_k_table_by_hand() -> None:
    # Variant V: item x passes 2 of 4, item y 4 of 4, item z only 1 usable repeat (passed).
    outcomes = {"x": [1, 0, 1, 0], "y": [1, 1, 1, 1], "z": [1]}
    rows = [
        {"variant": "V", "item_id": i, "repeat": r, "passed": bool(v), "error": None}
        for i, vs in outcomes.items()
        for r, v in enumerate(vs)
    ]
    t = stats.pass_k(pd.DataFrame(rows), ks=[1, 2, 4]).set_index("k")
    assert t.loc[1, "n_items"] == 3 and t.loc[2, "n_items"] == 2
    assert t.loc[1, "pass_at_k"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert t.loc[2, "pass_at_k"] == pytest.approx(((1 - 1 / 6) + 1) / 2)
    assert t.loc[2, "pass_hat_k"] == pytest.approx((1 / 6 + 1) / 2)
    assert t.loc[4, "pass_hat_k"] == pytest.approx((0 + 1) / 2)


def test_pass_k_defaults_and_monotonicity(repeated: pd.DataFrame) -> None:
    t = stats.pass_k(repeated)
    assert sorted(set(t["k"])) == [1, 2, 3, 4]
    for _, g in t.groupby("variant"):
        assert g["pass_at_k"].is_monotonic_increasing and g["pass_hat_k"].is_monotonic_decreasing
    k1 = t[t["k"] == 1].set_index("variant")["pass_at_k"]
    rates = stats.success_rates(repeated).set_index("variant")["rate"]
    assert np.allclose(k1, rates[k1.index])  # pass@1 == success rate with balanced repeats


def test_repeat_spread_by_hand() -> None:
    outcomes = {"x": [1, 0, 1, 0], "y": [1, 1, 1, 1], "z": [0, 0, 0, 1]}
    rows = [
        {"variant": "V", "item_id": i, "repeat": r, "passed": bool(v)}
        for i, vs in outcomes.items()
        for r, v in enumerate(vs)
    ]
    t = stats.repeat_spread(pd.DataFrame(rows)).iloc[0]
    assert t["n_items"] == 3 and t["repeats"] == 4
    assert t["agreement"] == pytest.approx((0.5 + 1 + 0.75) / 3)
    assert t["consistent"] == pytest.approx(1 / 3)
    assert t["item_std"] == pytest.approx((0.5 + 0 + math.sqrt(0.75 * 0.25)) / 3)
    per_repeat = [2 / 3, 1 / 3, 2 / 3, 2 / 3]
    assert t["repeat_rate_std"] == pytest.approx(np.std(per_repeat, ddof=1))


# --------------------------------------------------------------------------- sample size


@pytest.mark.parametrize(("p_a", "p_b"), [(0.7, 0.8), (0.5, 0.6), (0.9, 0.95), (0.3, 0.1)])
def test_sample_size_unpaired_matches_statsmodels(p_a: float, p_b: float) -> None:
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import (
        power_proportions_2indep,
        proportion_effectsize,
        samplesize_proportions_2indep_onetail,
    )

    n = stats.sample_size(p_a, p_b)
    ref = samplesize_proportions_2indep_onetail(p_b - p_a, p_a, 0.8, alpha=0.05)
    assert n == math.ceil(ref)
    # n reaches the power and n - 1 does not (statsmodels' power of the pooled z-test).
    assert power_proportions_2indep(p_b - p_a, p_a, n).power >= 0.8
    assert power_proportions_2indep(p_b - p_a, p_a, n - 1).power < 0.8
    # Cohen's arcsine approximation (NormalIndPower) is a different formula: close, not equal.
    h = proportion_effectsize(p_a, p_b)
    assert n == pytest.approx(NormalIndPower().solve_power(h, power=0.8, alpha=0.05), rel=0.1)


def _power_by_enumeration(n: int, q: float, r: float, reject: Any) -> float:
    """Power summed over every (b, c) table of n items with the multinomial pmf (scipy)."""
    b, c = (x.ravel() for x in np.meshgrid(np.arange(n + 1), np.arange(n + 1)))
    keep = b + c <= n
    b, c = b[keep], c[keep]
    pmf = sps.multinomial.pmf(np.column_stack([b, c, n - b - c]), n, [q, r, 1 - q - r])
    return float(pmf[reject(b, c)].sum())


@pytest.mark.parametrize(("p_a", "p_b", "psi"), [(0.8, 0.7, 0.3), (0.9, 0.75, 0.2)])
@pytest.mark.parametrize("test", ["score", "exact"])
def test_sample_size_paired_reaches_exact_power(
    p_a: float, p_b: float, psi: float, test: str
) -> None:
    n = stats.sample_size(p_a, p_b, paired=True, discordant=psi, test=test)
    q, r = (psi + p_a - p_b) / 2, (psi - p_a + p_b) / 2

    def reject(b: np.ndarray, c: np.ndarray) -> np.ndarray:
        if test == "score":  # the decision paired_comparison makes
            return pk.score_pvalue(b, c) < 0.05
        m = b + c
        p = np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(b, c), m, 0.5))
        return (m > 0) & (p <= 0.05)

    assert _power_by_enumeration(n, q, r, reject) >= 0.8
    assert _power_by_enumeration(n - 1, q, r, reject) < 0.8
    z_a, z_b = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    d = p_a - p_b
    connor = math.ceil((z_a * math.sqrt(psi) + z_b * math.sqrt(psi - d**2)) ** 2 / d**2)
    if test == "exact":  # the normal formula falls short of the exact test
        assert n > connor
        assert _power_by_enumeration(connor, q, r, reject) < 0.8


def test_sample_size_paired_errors() -> None:
    independent = stats.sample_size(0.8, 0.7, paired=True)
    assert independent > stats.sample_size(0.8, 0.7, paired=True, discordant=0.3)
    with pytest.raises(ValueError, match="discordant"):
        stats.sample_size(0.8, 0.7, paired=True, discordant=0.05)
    with pytest.raises(ValueError, match="no difference"):
        stats.sample_size(0.5, 0.5)
    with pytest.raises(ValueError, match="test"):
        stats.sample_size(0.8, 0.7, paired=True, test="wald")


# --------------------------------------------------------------------------- cost, latency, repairs


def test_cost_summary(frame: pd.DataFrame) -> None:
    t = stats.cost_summary(frame).set_index("variant")
    g = frame.groupby("variant")
    assert np.allclose(t["total_cost"], g["cost_usd"].sum()[t.index])
    assert np.allclose(t["cost_per_item"], g["cost_usd"].mean()[t.index])
    assert np.allclose(t["cost_per_success"], (g["cost_usd"].sum() / g["passed"].sum())[t.index])
    assert (t["prompt_tokens"] == g["prompt_tokens"].sum()[t.index]).all()
    assert np.allclose(t["cached_tokens_mean"], g["cached_tokens"].mean()[t.index])
    assert t["prompt_tokens"].dtype == np.int64


def test_cost_per_success_nan_without_successes(frame: pd.DataFrame) -> None:
    df = frame.assign(
        passed=np.where(frame["variant"] == frame["variant"].iloc[0], False, frame["passed"])
    )
    t = stats.cost_summary(df)
    assert math.isnan(t["cost_per_success"].iloc[0]) and t["successes"].iloc[0] == 0
    assert t["cost_per_success"].iloc[1:].notna().all()


def test_latency_summary_matches_numpy(frame: pd.DataFrame) -> None:
    t = stats.latency_summary(frame, percentiles=(50, 95)).set_index("variant")
    ok = frame[frame["error"].isna()]
    for v, g in ok.groupby("variant"):
        assert t.loc[v, "latency_n"] == len(g)
        assert t.loc[v, "latency_p95"] == pytest.approx(np.percentile(g["latency_s"], 95))
        ttft = g["ttft_s"].dropna()
        assert t.loc[v, "ttft_n"] == len(ttft)
        assert t.loc[v, "ttft_p50"] == pytest.approx(np.median(ttft))
    with_errors = stats.latency_summary(frame, include_errors=True)
    assert with_errors["latency_n"].sum() == len(frame)


def test_repair_breakdown_by_hand() -> None:
    df = pd.DataFrame(
        {
            "variant": ["A", "A", "A", "A", "B", "B"],
            "repairs": [["fence"], ["fence", "quotes", "fence"], [], None, ("quotes",), []],
            "error": [None, None, None, "boom", None, None],
        }
    )
    t = stats.repair_breakdown(df)
    got = {(r.variant, r.step): (r.rows, r.n, r.share) for r in t.itertuples()}
    assert got == {
        ("A", "fence"): (2, 3, pytest.approx(2 / 3)),
        ("A", "quotes"): (1, 3, pytest.approx(1 / 3)),
        ("B", "quotes"): (1, 2, 0.5),
    }
    assert stats.repair_breakdown(df.assign(repairs=[[]] * 6)).empty


# --------------------------------------------------------------------------- calibration


def _calib_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "variant": ["A"] * 5 + ["B"] * 2,
            "confidence": [0.95, 0.9, 0.85, 0.3, np.nan, 0.5, 0.7],
            "passed": [True, True, False, False, False, True, False],
            "confidences": [{"x": 0.9}, {"x": 0.8}, {"x": 0.1}, {}, None, {"x": 1.0}, {"x": 0.2}],
            "field_correct": [
                {"x": True},
                {"x": False},
                {"x": False},
                {},
                None,
                {"x": True},
                {"x": True},
            ],
        }
    )


def test_calibration_overall_by_hand() -> None:
    cal = calib.calibration(_calib_frame(), bins=10)
    a = cal.summary.set_index("variant").loc["A"]
    assert a["n"] == 4  # the NaN-confidence row is left out
    # Bins: 9 -> {0.95 ok, 0.9 ok}, 8 -> {0.85 wrong}, 3 -> {0.3 wrong}
    ece = (2 * abs(1 - 0.925) + 1 * abs(0 - 0.85) + 1 * abs(0 - 0.3)) / 4
    assert a["ece"] == pytest.approx(ece)
    brier = ((0.95 - 1) ** 2 + (0.9 - 1) ** 2 + 0.85**2 + 0.3**2) / 4
    assert a["brier"] == pytest.approx(brier)
    assert a["overconfidence"] == pytest.approx(0.75 - 0.5)
    rel = cal.reliability[cal.reliability["variant"] == "A"]
    assert rel["bin"].tolist() == [3, 8, 9] and rel["count"].tolist() == [1, 1, 2]
    assert rel["bin_low"].tolist() == pytest.approx([0.3, 0.8, 0.9])
    assert cal.ece["B"] == pytest.approx((abs(1 - 0.5) + abs(0 - 0.7)) / 2)


def test_calibration_per_field_and_bin_edges() -> None:
    cal = calib.calibration(_calib_frame(), field="x", bins=5)
    rel = cal.reliability.set_index(["variant", "bin"])
    assert rel.loc[("B", 4), "accuracy"] == 1.0  # confidence 1.0 falls in the last bin
    assert rel.loc[("A", 4), "count"] == 2  # 0.8 is the low edge of bin 4 of 5
    assert cal.summary.set_index("variant").loc["A", "n"] == 3
    sk = ((0.9 - 1) ** 2 + 0.8**2 + 0.1**2) / 3
    assert cal.summary.set_index("variant").loc["A", "brier"] == pytest.approx(sk)


def test_calibration_on_synthetic_frame(frame: pd.DataFrame) -> None:
    cal = calib.calibration(frame, field="date")
    assert (cal.summary["n"] > 0).all() and cal.summary["ece"].between(0, 1).all()
    counts = cal.reliability.groupby("variant")["count"].sum()
    assert (counts[cal.summary["variant"]].to_numpy() == cal.summary["n"].to_numpy()).all()


def test_coverage_curve_by_hand() -> None:
    c = calib.coverage_curve(_calib_frame(), thresholds=[0.0, 0.5, 0.9, 0.96])
    a = c[c["variant"] == "A"].set_index("threshold")
    assert (a["n"] == 5).all()  # the NaN-confidence row counts but is never accepted
    assert a["n_accepted"].tolist() == [4, 3, 2, 0]
    assert a["coverage"].tolist() == pytest.approx([0.8, 0.6, 0.4, 0.0])
    assert a.loc[0.5, "accuracy"] == pytest.approx(2 / 3) and a.loc[0.9, "accuracy"] == 1.0
    assert math.isnan(a.loc[0.96, "accuracy"])
    default = calib.coverage_curve(_calib_frame())
    assert len(default) == 2 * 101 and 0.7 in set(default["threshold"])


def test_choose_threshold() -> None:
    t = calib.choose_threshold(_calib_frame(), target_accuracy=0.9).set_index("variant")
    assert t.loc["A", "threshold"] == 0.9 and t.loc["A", "n_accepted"] == 2
    assert t.loc["A", "coverage"] == pytest.approx(2 / 5) and bool(t.loc["A", "met"])
    assert math.isnan(t.loc["B", "threshold"]) and not t.loc["B", "met"]
    # Two right answers are not evidence of 90% accuracy: the Wilson bound refuses.
    strict = calib.choose_threshold(_calib_frame(), 0.9, conservative=True)
    assert not strict["met"].any()
    lenient = calib.choose_threshold(_calib_frame(), 0.6).set_index("variant")
    assert lenient.loc["A", "threshold"] == 0.85 and lenient.loc["A", "accuracy"] == pytest.approx(
        2 / 3
    )
    half = calib.choose_threshold(_calib_frame(), 0.5).set_index("variant")
    assert half.loc["A", "threshold"] == 0.3 and half.loc["B", "threshold"] == 0.5


# --------------------------------------------------------------------------- edge cases


def test_empty_frames_give_empty_results() -> None:
    empty = make_results(n_items=3).iloc[:0]
    for df in (empty, pd.DataFrame()):
        assert stats.success_rates(df).empty
        assert stats.pairwise_comparisons(df).empty
        assert stats.pass_k(df).empty
        assert stats.repeat_spread(df).empty
        assert stats.cost_summary(df).empty
        assert stats.latency_summary(df).empty
        assert stats.repair_breakdown(df).empty
        assert calib.calibration(df).summary.empty
        assert calib.calibration(df, field="x").reliability.empty
        assert calib.coverage_curve(df).empty
        assert calib.choose_threshold(df, 0.9).empty


def test_missing_column_is_a_clear_error(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="lacks column"):
        stats.success_rates(frame.drop(columns="passed"))
    no_error_column = stats.success_rates(frame.drop(columns="error"))  # optional: no errors
    assert (no_error_column["errors"] == 0).all()
    assert stats.latency_summary(frame.drop(columns="error"))["latency_n"].sum() == len(frame)


def test_group_without_usable_rows_reports_zero_and_nan(frame: pd.DataFrame) -> None:
    v0 = frame["variant"].iloc[0]
    df = frame.copy()
    df["passed"] = df["passed"].astype(object).where(df["variant"] != v0, None)
    df["confidence"] = df["confidence"].where(df["variant"] != v0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = stats.success_rates(df).set_index("variant")
        assert (
            s.loc[v0, "n"] == 0
            and math.isnan(s.loc[v0, "rate"])
            and math.isnan(s.loc[v0, "ci_low"])
        )
        t = stats.pairwise_comparisons(df, n_boot=100)
        assert (t.loc[t["a"] == v0, "n_items"] == 0).all() and t.loc[
            t["a"] == v0, "p_holm"
        ].isna().all()
        c = calib.calibration(df).summary.set_index("variant")
        assert c.loc[v0, "n"] == 0 and math.isnan(c.loc[v0, "ece"])
        assert stats.pass_k(df).set_index("variant").loc[v0, "n_items"] == 0


def test_all_error_variant_counts_as_failures(frame: pd.DataFrame) -> None:
    v0 = frame["variant"].iloc[0]
    bad = frame["variant"] == v0
    df = frame.assign(
        passed=frame["passed"] & ~bad,
        error=frame["error"].where(~bad, "boom"),
        confidence=frame["confidence"].where(~bad),
        latency_s=frame["latency_s"],
    )
    s = stats.success_rates(df).set_index("variant")
    assert s.loc[v0, "rate"] == 0 and s.loc[v0, "errors"] == s.loc[v0, "n"] > 0
    lat = stats.latency_summary(df).set_index("variant")
    assert lat.loc[v0, "latency_n"] == 0 and math.isnan(lat.loc[v0, "latency_p50"])
    assert stats.repair_breakdown(df)["variant"].ne(v0).all()
    cost = stats.cost_summary(df).set_index("variant")
    assert math.isnan(cost.loc[v0, "cost_per_success"])


def test_nullable_and_object_dtypes(frame: pd.DataFrame) -> None:
    df = frame.assign(passed=frame["passed"].astype("boolean"))
    df.loc[df.index[:5], "passed"] = pd.NA
    assert stats.success_rates(df)["n"].sum() == len(frame) - 5
    obj = frame.assign(passed=frame["passed"].astype(object))
    assert stats.success_rates(obj)["successes"].sum() == frame["passed"].sum()


def test_categorical_grouping_keeps_category_order_and_empty_groups(frame: pd.DataFrame) -> None:
    cats = ["unused", *reversed(pd.unique(frame["variant"]))]
    df = frame.assign(variant=pd.Categorical(frame["variant"], categories=cats))
    s = stats.success_rates(df)
    assert s["variant"].tolist() == cats and s["n"].iloc[0] == 0 and math.isnan(s["rate"].iloc[0])
    t = stats.pairwise_comparisons(df, baseline=cats[1], n_boot=100)
    assert t["a"].tolist() == [cats[0], *cats[2:]]
    assert t["n_items"].iloc[0] == 0 and t["n_items"].iloc[1:].gt(0).all()
    assert stats.cost_summary(df)["n"].iloc[0] == 0
    assert stats.latency_summary(df)["latency_n"].iloc[0] == 0
