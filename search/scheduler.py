"""Early stopping that does not starve small designs: ASHA run separately within parameter-budget bands.

Plain ASHA compares every trial against every other at each rung. Low-budget designs learn slower, so they lose
those comparisons early and the cheap end of the Pareto front stays empty. Here a trial only competes with trials
whose parameter fraction (known exactly before training) falls in the same band of `1 / bands_per_decade` decades,
so each region of the budget axis keeps its own best designs.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

MIN_FRACTION = 1e-7


def band_of(fraction: float, bands_per_decade: int) -> int:
    return math.floor(math.log10(max(fraction, MIN_FRACTION)) * bands_per_decade)


class BudgetBandedASHA(FIFOScheduler):
    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float = 3, bands_per_decade: int = 2,
                 metric: str = "score", mode: str = "max", time_attr: str = "step") -> None:
        super().__init__()
        self._metric, self._mode = metric, mode
        self._kw = dict(time_attr=time_attr, metric=metric, mode=mode, max_t=max_t, grace_period=grace_period,
                        reduction_factor=reduction_factor, brackets=1)
        self.bands_per_decade = bands_per_decade
        self._bands: dict[int, AsyncHyperBandScheduler] = {}

    def band(self, trial: Any) -> AsyncHyperBandScheduler:
        key = band_of(float(trial.config.get("fraction", 1.0)), self.bands_per_decade)
        if key not in self._bands:
            self._bands[key] = AsyncHyperBandScheduler(**self._kw)
        return self._bands[key]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.band(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.band(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.band(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.band(trial).on_trial_remove(tune_controller, trial)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the bands compare on `score` (max) whatever the searcher optimises

    def debug_string(self) -> str:
        return f"BudgetBandedASHA: {len(self._bands)} band(s) of {1 / self.bands_per_decade:g} decade(s)"


def make_scheduler(kind: str, *, max_t: int, grace_period: int, reduction_factor: float,
                   bands_per_decade: int) -> TrialScheduler:
    if kind == "banded":
        return BudgetBandedASHA(max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor,
                                bands_per_decade=bands_per_decade)
    if kind == "asha":
        return AsyncHyperBandScheduler(time_attr="step", metric="score", mode="max", max_t=max_t,
                                       grace_period=grace_period, reduction_factor=reduction_factor, brackets=1)
    if kind == "none":
        return FIFOScheduler()
    raise ValueError(f"scheduler must be one of ['banded', 'asha', 'none'], got {kind!r}")
