"""Pareto mask and hypervolume on hand-made arrays (no MLflow)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from analysis.pareto import MIN_FRACTION, REFERENCE, hypervolume, hypervolume_history, pareto_mask, promotion_order

NAN = float("nan")


def test_reference_point_is_documented_constant() -> None:
    assert REFERENCE.ref_score == 0.0 and REFERENCE.ref_fraction == 1.0
    assert MIN_FRACTION == 1e-6


def test_simple_front() -> None:
    score = [0.5, 0.7, 0.6, 0.9]
    fraction = [0.01, 0.1, 0.2, 0.5]
    # (0.6, 0.2) is dominated by (0.7, 0.1); the rest trade score for parameters.
    assert pareto_mask(score, fraction).tolist() == [True, True, False, True]


def test_ties_in_score_keep_the_cheaper() -> None:
    # Same score 0.8: the smaller fraction dominates the larger one.
    assert pareto_mask([0.8, 0.8, 0.9], [0.2, 0.1, 0.3]).tolist() == [False, True, True]


def test_ties_in_fraction_keep_the_better() -> None:
    # Same fraction 0.1: the higher score dominates.
    assert pareto_mask([0.7, 0.75, 0.9], [0.1, 0.1, 0.3]).tolist() == [False, True, True]


def test_exact_duplicates_keep_one_representative_first_by_index() -> None:
    score = [0.9, 0.8, 0.8, 0.8, 0.7]
    fraction = [0.5, 0.1, 0.1, 0.1, 0.4]
    assert pareto_mask(score, fraction).tolist() == [True, True, False, False, False]
    # A dominated duplicate pair: neither is kept.
    assert pareto_mask([0.9, 0.5, 0.5], [0.1, 0.2, 0.2]).tolist() == [True, False, False]


def test_single_point_and_empty() -> None:
    assert pareto_mask([0.3], [0.9]).tolist() == [True]
    assert pareto_mask([], []).tolist() == []


def test_all_dominated_chain() -> None:
    # Every later point is worse in both objectives than the first.
    score = [0.9, 0.8, 0.7, 0.6]
    fraction = [0.01, 0.02, 0.03, 0.04]
    assert pareto_mask(score, fraction).tolist() == [True, False, False, False]


def test_nan_scores_and_fractions_are_never_optimal() -> None:
    score = [NAN, 0.5, 0.4, 0.99]
    fraction = [0.001, 0.2, 0.1, NAN]
    assert pareto_mask(score, fraction).tolist() == [False, True, True, False]
    assert pareto_mask([NAN, NAN], [0.1, 0.2]).tolist() == [False, False]


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same length"):
        pareto_mask([1.0, 2.0], [0.1])


def test_mask_matches_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(1)
    s = np.round(rng.random(300), 2)  # rounding makes many ties and duplicates
    f = np.round(rng.random(300), 2)
    s[::37] = np.nan
    mask = pareto_mask(s, f)
    for i in range(s.size):
        if not np.isfinite(s[i]):
            assert not mask[i]
            continue
        dominated = np.any((s >= s[i]) & (f <= f[i]) & ((s > s[i]) | (f < f[i])))
        earlier_twin = np.any((s[:i] == s[i]) & (f[:i] == f[i]))
        assert mask[i] == (not dominated and not earlier_twin), i


def test_hypervolume_one_point() -> None:
    # x = log10(fraction): log10(0.01) = -2, reference x = log10(1.0) = 0.
    # Area = width (0 - (-2)) * height (0.8 - 0.0) = 2 * 0.8 = 1.6
    assert hypervolume([0.8], [0.01]) == pytest.approx(1.6)


def test_hypervolume_two_points() -> None:
    # Points (s=0.5, x=-3) and (s=0.9, x=-1).
    # From x=-3 to -1 the best score is 0.5: 2 * 0.5 = 1.0; from -1 to 0 it is 0.9: 1 * 0.9 = 0.9. Total 1.9.
    assert hypervolume([0.5, 0.9], [0.001, 0.1]) == pytest.approx(1.9)


def test_hypervolume_three_points_with_a_dominated_one() -> None:
    # Front: (0.4, x=-4), (0.6, x=-2), (0.9, x=-1); (0.5, x=-1.5) is dominated by (0.6, -2) and adds nothing.
    # Strips: [-4,-2] * 0.4 = 0.8; [-2,-1] * 0.6 = 0.6; [-1,0] * 0.9 = 0.9. Total 2.3.
    hv = hypervolume([0.4, 0.6, 0.9, 0.5], [1e-4, 1e-2, 1e-1, 10**-1.5])
    assert hv == pytest.approx(2.3)


def test_hypervolume_custom_reference() -> None:
    # Reference score 0.5, fraction 0.1 (x = -1): point (0.8, x=-2) -> 1 * 0.3 = 0.3.
    assert hypervolume([0.8], [0.01], ref_score=0.5, ref_fraction=0.1) == pytest.approx(0.3)


def test_points_outside_the_reference_contribute_nothing() -> None:
    assert hypervolume([-0.2], [0.01]) == 0.0  # worse than reference score 0
    assert hypervolume([0.9], [1.0]) == 0.0  # at the reference fraction: zero width
    assert hypervolume([0.9], [2.0]) == 0.0  # more parameters than the backbone
    assert hypervolume([NAN, 0.8], [0.01, NAN]) == 0.0
    assert hypervolume([], []) == 0.0
    # Mixed: only the inside point counts (1.6 as in the one-point case).
    assert hypervolume([0.8, 0.95, -1.0], [0.01, 3.0, 1e-5]) == pytest.approx(1.6)


def test_fraction_floor() -> None:
    # A zero fraction is clamped to 1e-6: width 6 decades * 0.5 = 3.0.
    assert hypervolume([0.5], [0.0]) == pytest.approx(3.0)
    assert hypervolume([0.5], [1e-9]) == pytest.approx(3.0)


def test_history_is_monotone_and_matches_direct_computation() -> None:
    rng = np.random.default_rng(7)
    n = 200
    s = rng.normal(0.6, 0.2, n)
    f = 10 ** rng.uniform(-5, 0.3, n)  # some beyond the reference fraction
    s[::11] = np.nan
    s[3] = s[4]
    f[3] = f[4]  # an exact duplicate
    order = rng.permutation(n)
    hist = hypervolume_history(s, f, order)
    assert hist.shape == (n,)
    assert np.all(np.diff(hist) >= 0)
    for k in range(n):
        direct = hypervolume(s[order[: k + 1]], f[order[: k + 1]])
        assert hist[k] == pytest.approx(direct, rel=1e-12, abs=1e-15), k


def test_history_subset_order_and_empty() -> None:
    # Only the trials in `order` count: point 1 (the best) is never added.
    hist = hypervolume_history([0.8, 0.99, 0.5], [0.01, 0.001, 0.1], [2, 0])
    # After point 2: 1 decade * 0.5 = 0.5; after point 0 (dominates it): 2 decades * 0.8 = 1.6.
    assert hist.tolist() == pytest.approx([0.5, 1.6])
    assert hypervolume_history([], [], []).size == 0


def test_speed_100k_points() -> None:
    rng = np.random.default_rng(0)
    s, f = rng.random(100_000), 10 ** rng.uniform(-6, 0, 100_000)
    t0 = time.perf_counter()
    mask = pareto_mask(s, f)
    hv = hypervolume(s, f)
    hist = hypervolume_history(s[:1000], f[:1000], np.arange(1000))
    elapsed = time.perf_counter() - t0
    assert mask.any() and math.isfinite(hv) and hist[-1] > 0
    assert elapsed < 2.0, elapsed  # target is milliseconds; generous for loaded CI machines


def test_promotion_order_fronts_then_hypervolume_contribution() -> None:
    # x = log10 fraction. Front 0: A(-4, 0.6), B(-2, 0.8), D(-3, 0.7); C(-3, 0.5) is dominated by A; E is NaN.
    # Exclusive contributions on front 0 sorted by x (A, D, B), with x_ref = 0 and s_ref = 0:
    #   A: (-3 - -4) * (0.6 - 0)   = 0.6
    #   D: (-2 - -3) * (0.7 - 0.6) = 0.1
    #   B: ( 0 - -2) * (0.8 - 0.7) = 0.2
    score = [0.6, 0.8, 0.5, 0.7, np.nan]
    fraction = [1e-4, 1e-2, 1e-3, 1e-3, 1e-5]
    assert promotion_order(score, fraction).tolist() == [0, 1, 3, 2, 4]


def test_promotion_order_single_front_cheapest_first_when_scores_equal() -> None:
    # Equal scores: only the cheapest is on front 0; the rest form later fronts one by one (cheapest first).
    assert promotion_order([0.7, 0.7, 0.7], [1e-2, 1e-4, 1e-3]).tolist() == [1, 2, 0]
    assert promotion_order([], []).tolist() == []
