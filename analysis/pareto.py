"""Pareto front and hypervolume of (score, fraction) points.

Pure numpy, no I/O, so the search loop, the report and the benchmarks all share one definition.

Objectives: maximise ``score`` (the task metric as logged) and minimise ``fraction``
(stored PETL parameters / backbone parameters, 0..1).

Decisions documented here because the report, the MLflow tags and the tests all depend on them:

* A point is *dominated* if another point is >= in score and <= in fraction, with at least one strict.
* Identical optimal points (same score AND same fraction): exactly ONE representative is kept optimal,
  the first by index. Duplicates arise when a design is re-evaluated or a preset is re-run; marking all of
  them optimal would inflate the front's size and tag several MLflow runs for one point of the front.
* Non-finite scores or fractions (NaN: failed or unscored trials) are never optimal and add no hypervolume.

Hypervolume is computed in (score, log10 fraction) space, see :func:`hypervolume`.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray


class Reference(NamedTuple):
    """Reference (worst) point of the hypervolume, in the units the search logs."""

    ref_score: float  # task score as logged (e.g. accuracy 0..1, BLEU 0..100); higher is better
    ref_fraction: float  # stored PETL params / backbone params, 0..1; lower is better


# Fixed on purpose: a hypervolume is only comparable between searches (or between the prefix histories of
# one search) if the reference point does not move with the data. Score 0 is "no skill" for most task
# metrics; fraction 1.0 is "as many stored parameters as fine-tuning the whole backbone", i.e. no saving.
REFERENCE = Reference(ref_score=0.0, ref_fraction=1.0)

# Fractions are clamped to this floor before taking log10 so that a design with ~0 stored parameters
# (e.g. a bias-only or zero-size module) contributes a finite width: at most 6 decades below fraction 1.0.
MIN_FRACTION = 1e-6


def _as_float(a: ArrayLike) -> NDArray[np.float64]:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def pareto_mask(score: ArrayLike, fraction: ArrayLike) -> NDArray[np.bool_]:
    """Boolean mask of Pareto-optimal points (maximise score, minimise fraction).

    O(n log n): sort by fraction ascending (score descending, then index ascending to break ties), then sweep
    keeping the best score seen so far; a point is optimal iff its score is strictly greater than every
    score at a smaller-or-equal fraction earlier in that order. The tie-breaks make the first identical
    duplicate (by index) the single representative, and a point sharing the fraction of a better-scoring
    point dominated. Non-finite scores/fractions are never optimal.
    """
    s, f = _as_float(score), _as_float(fraction)
    if s.shape != f.shape:
        raise ValueError(f"score and fraction must have the same length, got {s.size} and {f.size}")
    mask = np.zeros(s.size, dtype=bool)
    valid = np.flatnonzero(np.isfinite(s) & np.isfinite(f))
    if valid.size == 0:
        return mask
    # lexsort: last key is primary -> fraction asc, then score desc, then original index asc.
    order = valid[np.lexsort((valid, -s[valid], f[valid]))]
    ss = s[order]
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], ss[:-1])))
    mask[order[ss > best_before]] = True
    return mask


def _log_fraction(f: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore"):
        return np.log10(np.maximum(f, MIN_FRACTION))


def _front_area(xs: NDArray[np.float64], ss: NDArray[np.float64], ref_score: float, ref_x: float) -> float:
    """Area dominated by a front sorted by x (= log10 fraction) ascending, scores strictly increasing.

    Between x_i and x_{i+1} the best score reachable at that budget is s_i, so the area is
    sum_i (x_{i+1} - x_i) * (s_i - ref_score) with x_n = ref_x.
    """
    if xs.size == 0:
        return 0.0
    widths = np.diff(np.append(xs, ref_x))
    return float(np.sum(widths * (ss - ref_score)))


def hypervolume(
    score: ArrayLike,
    fraction: ArrayLike,
    ref_score: float = REFERENCE.ref_score,
    ref_fraction: float = REFERENCE.ref_fraction,
) -> float:
    """Area dominated by the Pareto front, bounded by the reference point, in (score, log10 fraction) space.

    Why log10 fraction: PETL designs span orders of magnitude (0.01% .. 10% of the backbone). With a linear
    fraction axis and reference 1.0, a 0.1% and a 1% design differ by under 1% of the area, so the
    hypervolume would only reward score. In log space each decade of parameter saving counts the same.
    Fractions are clamped to ``MIN_FRACTION`` (1e-6), so the x extent is at most 6 decades.
    Units: score units x decades. With the default ``REFERENCE`` an ideal search on a 0..1 metric has a
    hypervolume of at most 6.0.

    Points with score <= ref_score or fraction >= ref_fraction contribute nothing; non-finite points are ignored.
    """
    s, f = _as_float(score), _as_float(fraction)
    ref_x = math.log10(max(ref_fraction, MIN_FRACTION))
    x = _log_fraction(f)
    keep = np.isfinite(s) & np.isfinite(x) & (s > ref_score) & (x < ref_x)
    s, x = s[keep], x[keep]
    if s.size == 0:
        return 0.0
    # pareto_mask minimises its 2nd argument; x is monotone in the clamped fraction so the front is the same.
    on_front = pareto_mask(s, x)
    xs, ss = x[on_front], s[on_front]
    idx = np.argsort(xs, kind="stable")
    return _front_area(xs[idx], ss[idx], ref_score, ref_x)


def hypervolume_history(
    score: ArrayLike,
    fraction: ArrayLike,
    order: ArrayLike,
    ref_score: float = REFERENCE.ref_score,
    ref_fraction: float = REFERENCE.ref_fraction,
) -> NDArray[np.float64]:
    """Hypervolume after each trial, with trials added in ``order`` (positional indices, completion order).

    ``result[k] == hypervolume(score[order[:k+1]], fraction[order[:k+1]])``. Points that cannot add area
    (non-finite, outside the reference, dominated) repeat the previous value, so the history is
    non-decreasing. Incremental: the front is kept sorted by log fraction and only changes when a new
    point is not dominated, so the cost is O(n log n + n * |front|), milliseconds for thousands of trials.
    """
    s, f = _as_float(score), _as_float(fraction)
    idx = np.asarray(order, dtype=np.int64).reshape(-1)
    ref_x = math.log10(max(ref_fraction, MIN_FRACTION))
    x_all = _log_fraction(f)
    out = np.empty(idx.size, dtype=np.float64)
    front_x: list[float] = []  # ascending
    front_s: list[float] = []  # strictly ascending along with front_x
    hv = 0.0
    for k, i in enumerate(idx):
        si, xi = float(s[i]), float(x_all[i])
        if not (math.isfinite(si) and math.isfinite(xi)) or si <= ref_score or xi >= ref_x:
            out[k] = hv
            continue
        j = bisect_right(front_x, xi)  # front[:j] has x <= xi; front_s[j-1] is the best of them
        if j > 0 and front_s[j - 1] >= si:
            out[k] = hv  # weakly dominated (or an identical duplicate): the front does not change
            continue
        # Remove front points the new one dominates: x >= xi and score <= si form a contiguous run.
        lo = bisect_left(front_x, xi)
        hi = lo
        while hi < len(front_x) and front_s[hi] <= si:
            hi += 1
        front_x[lo:hi] = [xi]
        front_s[lo:hi] = [si]
        hv = _front_area(np.asarray(front_x), np.asarray(front_s), ref_score, ref_x)
        out[k] = hv
    return out


def promotion_order(
    score: ArrayLike,
    fraction: ArrayLike,
    ref_score: float = REFERENCE.ref_score,
    ref_fraction: float = REFERENCE.ref_fraction,
) -> NDArray[np.int64]:
    """Indices best first: by non-dominated front, then by exclusive hypervolume contribution within a front.

    Fronts are peeled with :func:`pareto_mask` (front 0 = the Pareto front, front 1 = the front of the rest, ...).
    Within a front sorted by x = log10 fraction (scores then ascend), point i alone dominates the rectangle
    (x_{i+1} - x_i) * (s_i - s_{i-1}), with s_{-1} = ref_score and x_n = log10 ref_fraction: that is its
    contribution, so the cheapest point of a front (which alone covers the decades below the next one) and the
    best-scoring one rank high. Ties keep index order; non-finite points come last. This is the order a
    multi-objective successive-halving rung promotes in (search/scheduler.py).
    """
    s, f = _as_float(score), _as_float(fraction)
    x = _log_fraction(f)
    ref_x = math.log10(max(ref_fraction, MIN_FRACTION))
    left = np.flatnonzero(np.isfinite(s) & np.isfinite(x))
    order: list[int] = []
    while left.size:
        on = pareto_mask(s[left], x[left])
        front, left = left[on], left[~on]
        front = front[np.argsort(x[front], kind="stable")]
        xs, ss = x[front], s[front]
        contrib = np.diff(np.append(xs, ref_x)) * (ss - np.concatenate([[ref_score], ss[:-1]]))
        order.extend(front[np.argsort(-contrib, kind="stable")].tolist())
    nonfinite = np.setdiff1d(np.arange(s.size), np.asarray(order, dtype=np.int64))
    return np.asarray(order + nonfinite.tolist(), dtype=np.int64)
