"""The study's statistics: paired differences over training seeds, their 95% t-interval, and the verdict words.

Two designs of a matched pair are trained at the same seeds (the tier's seeds), and a seed fixes the order of the
training batches whatever the design (finetune/batching.py draws it from its own generator), so the replicate is
the per-seed difference d_s = score_a(s) - score_b(s), with `a` the side the paper says wins; pairing removes the
part of the seed-to-seed noise that comes from the data order. The interval is
Student's t over those n differences: mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n). A bootstrap would be the wrong tool
here: with n = 3 seeds it can draw only 10 distinct resamples and its percentile interval is far too narrow.

Verdicts (the words docs/study.md uses):
  reproduced                   the CI lies above 0: the paper's winner wins here
  reversed                     the CI lies below 0: the other side wins here
  tie                          the CI holds 0 and lies inside +-EQUIVALENCE: any difference is smaller than that
  not resolvable at this scale the CI holds 0 but reaches past +-EQUIVALENCE: the seeds' noise hides the answer
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as sps

LEVEL = 0.95
# Half-width of "no difference that matters", in accuracy (0..1): 0.5 points, about 4 of the 872 SST-2 dev sentences
# and half the smallest gap the paper reports for its conclusions on its summarisation tasks (parallel vs sequential
# at the FFN: +0.68 R-2; Table 3).
EQUIVALENCE = 0.005
REPRODUCED, REVERSED, TIE, UNRESOLVED = "reproduced", "reversed", "tie", "not resolvable at this scale"


@dataclass(frozen=True)
class Interval:
    """Mean of `n` values with its two-sided t-interval; low = high = mean when n < 2 (no spread measured)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float  # sample standard deviation of the values (0.0 when n < 2)

    @property
    def half(self) -> float:
        return (self.high - self.low) / 2


def t_quantile(n: int, level: float = LEVEL) -> float:
    """Student's t quantile for a two-sided `level` interval of a mean of n >= 2 values."""
    return float(sps.t.ppf((1 + level) / 2, n - 1))


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """mean +- t_{(1+level)/2, n-1} * sd / sqrt(n) of `values` (any unit); needs at least one value."""
    if not values:
        raise ValueError("t_interval needs at least one value, got none")
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Interval(mean, mean, mean, n, 0.0)
    sd = statistics.stdev(values)
    half = t_quantile(n, level) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[tuple[int, ...], Interval | None]:
    """The seeds both sides have and the t-interval of score_a - score_b over them (None below 2 common seeds)."""
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        return seeds, None
    return seeds, t_interval([a[s] - b[s] for s in seeds])


def verdict(ci: Interval, margin: float = EQUIVALENCE) -> str:
    if ci.low > 0:
        return REPRODUCED
    if ci.high < 0:
        return REVERSED
    if -margin <= ci.low and ci.high <= margin:
        return TIE
    return UNRESOLVED


def points(x: float) -> str:
    """An accuracy difference (0..1) in signed accuracy points: 0.0123 -> '+1.23'."""
    return f"{100 * x:+.2f}"
