"""scripts/stats.py: hand-made samples whose answers are known, scipy's own functions as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from scripts import stats

# Two rows of five seeds whose losses span decades: one seed of B sits far above the others.
A = [1.0e-8, 2.0e-8, 5.0e-9, 3.0e-8, 1.5e-8]
B = [2.0e-5, 3.0e-5, 1.0e-5, 2.5e-5, 9.0e-3]


def test_welch_is_scipys_welch_on_log10_and_differs_from_the_raw_scale() -> None:
    want = sps.ttest_ind(np.log10(A), np.log10(B), equal_var=False).pvalue
    assert stats.welch(A, B, "log10") == pytest.approx(want, rel=1e-12)
    raw = sps.ttest_ind(A, B, equal_var=False).pvalue
    assert stats.welch(A, B, "linear") == pytest.approx(raw, rel=1e-12)
    # the raw test is driven by B's one large seed: it cannot see a 1000-fold separation
    assert stats.welch(A, B, "log10") < 0.01 < 0.3 < stats.welch(A, B, "linear")


def test_welch_is_nan_where_it_is_undefined() -> None:
    assert math.isnan(stats.welch([0.0, 1e-3], [1e-3, 2e-3], "log10"))  # log10(0)
    assert not math.isnan(stats.welch([0.0, 1e-3], [1e-3, 2e-3], "linear"))
    assert math.isnan(stats.welch([1e-3], [1e-3, 2e-3], "log10"))  # n < 2
    assert math.isnan(stats.welch([1.0, 1.0], [1.0, 1.0], "linear"))  # no spread anywhere
    with pytest.raises(ValueError, match="scale='log'"):
        stats.welch(A, B, "log")


def test_mann_whitney_is_scipys_exact_test() -> None:
    assert stats.mann_whitney(A, B) == pytest.approx(2 / 252, rel=1e-12)  # fully separated, 5 vs 5
    a, b = [3.0, 1.0, 4.0, 1.5, 5.0], [9.0, 2.0, 6.0, 5.5, 3.5]
    want = sps.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue
    assert stats.mann_whitney(a, b) == pytest.approx(want, rel=1e-12)
    assert want != pytest.approx(sps.mannwhitneyu(a, b, method="asymptotic").pvalue, rel=1e-3)
    assert math.isnan(stats.mann_whitney([2.0, 2.0], [2.0, 2.0]))


def test_holm_step_down_by_hand() -> None:
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> kept monotone at 0.06
    got = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN is not a member of the family: m = 2 here, and it stays NaN; adjusted p never exceeds 1
    got = stats.holm([0.3, math.nan, 0.8])
    assert got[0] == pytest.approx(0.6) and math.isnan(got[1]) and got[2] == pytest.approx(0.8)
    assert stats.holm([0.7, 0.9]) == [1.0, 1.0]


def test_effect_is_the_ratio_of_geometric_means_with_scipys_bootstrap_interval() -> None:
    b = [1e-5, 2e-5, 4e-5, 3e-5, 1.5e-5]
    a = [10 * v for v in b]  # every seed exactly 10x: the ratio of geometric means is 10
    eff = stats.effect(a, b, "log10")
    assert eff.estimate == pytest.approx(1.0, abs=1e-12)
    oracle = sps.bootstrap(
        (np.log10(a), np.log10(b)),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        vectorized=True,
        paired=False,
        n_resamples=stats.BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(stats.BOOTSTRAP_SEED),
    ).confidence_interval
    assert (eff.low, eff.high) == pytest.approx((oracle.low, oracle.high), rel=1e-12)
    assert eff.low < 1.0 < eff.high
    assert stats.effect(a, b, "log10") == eff  # a fixed RNG seed: the same interval every time
    assert eff.text().startswith("×10 [")
    lin = stats.effect([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], "linear")  # no spread: the interval is the point
    assert (lin.estimate, lin.low, lin.high) == (1.0, 1.0, 1.0)
    assert math.isnan(stats.effect([1.0], [1.0, 2.0], "linear").estimate)


def test_verdict_rule() -> None:
    below = stats.Effect(-1.0, -1.5, -0.5, "log10")
    straddles = stats.Effect(-1.0, -1.5, 0.2, "log10")
    assert stats.verdict(0.01, below, "lower") == "supported"
    assert stats.verdict(0.01, below, "higher") == "contradicted"
    assert stats.verdict(0.05, below, "lower") == "not supported"  # p must be < alpha
    assert stats.verdict(0.049, below, "lower") == "supported"
    assert stats.verdict(0.01, straddles, "lower") == "not supported"
    assert stats.verdict(math.nan, below, "lower") == "not supported"
    with pytest.raises(ValueError, match="claim='better'"):
        stats.verdict(0.01, below, "better")


def test_adjust_holms_within_each_family_only() -> None:
    ref = [1.0, 1.1, 0.9, 1.05, 0.95]
    cs = [
        stats.compare("landmarks", "adam", "loss@T", [v / 100 for v in ref], ref, "log10", claim="higher"),
        stats.compare("landmarks", "adax", "loss@T", [v * 1.01 for v in ref], ref, "log10", claim="lower"),
        stats.compare("top-1", "adam", "top1_err", [1.0, 1.2, 0.9, 1.1, 1.0], ref, "linear"),
    ]
    stats.adjust(cs)
    assert stats.family_sizes(cs) == {"landmarks": 2, "top-1": 1}
    assert cs[0].p_welch_holm == pytest.approx(min(1.0, 2 * cs[0].p_welch))  # the smaller of two: x2
    assert cs[2].p_welch_holm == pytest.approx(cs[2].p_welch)  # a family of one: unadjusted
    assert cs[0].verdict == "contradicted"  # the row is 100x lower where the claim says higher
    assert cs[1].verdict == "not supported"
    assert cs[2].verdict == ""  # no claim, no verdict
    md = stats.comparisons_markdown("t", cs)
    assert "landmarks (2 tests); top-1 (1 tests)" in md
    assert "| landmarks | adam | loss@T | log10 | 5 | 0.01 | 5 | 1 |" in md
    csv = stats.comparisons_csv(cs).splitlines()
    assert csv[1].split(",")[:4] == ["landmarks", "adam", "loss@T", "log10"]


def test_area_split_puts_a_spike_above_the_running_median() -> None:
    loss = [1.0] * 20
    loss[7] = 11.0  # one step 10 above the trend
    area, trend, spikes = stats.area_split(loss, 5)
    assert (area, trend, spikes) == (30.0, 20.0, 10.0)
    # a steady decline has no spike part: the running median follows it
    decline = list(np.geomspace(1.0, 1e-3, 50))
    area, trend, spikes = stats.area_split(decline, 5)
    assert spikes == pytest.approx(0.0, abs=1e-12) and trend == pytest.approx(area)
    with pytest.raises(ValueError, match="window=4"):
        stats.area_split(loss, 4)
    assert math.isnan(stats.area_split([1.0, math.nan], 1)[0])
