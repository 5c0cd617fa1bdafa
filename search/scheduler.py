"""Early stopping that does not starve small designs.

Plain ASHA compares every trial against every other on score at each rung. Low-budget designs learn slower, so they
lose those comparisons early and the cheap end of the Pareto front stays empty. Two budget-aware alternatives, both
using the parameter fraction, which is known exactly before training:

- `ParetoASHA` (`pareto`): a rung ranks the trials recorded at it by non-dominated front on (score, fraction), then
  by exclusive hypervolume contribution, and promotes the top 1/eta (multi-objective ASHA, as MOASHA does).
- `BudgetBandedASHA` (`banded`): plain ASHA run separately inside bands of `1 / bands_per_decade` decades of fraction.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from analysis.pareto import MIN_FRACTION, promotion_order
from search.rungs import milestones


def band_of(fraction: float, bands_per_decade: int) -> int:
    """The fraction's band on the log10 axis the front is scored on: fractions below analysis.pareto.MIN_FRACTION
    share the lowest band, as they share the lowest x of the hypervolume."""
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


class ParetoASHA(FIFOScheduler):
    """Asynchronous successive halving whose rungs promote by Pareto rank on (score max, fraction min).

    Rungs sit at grace_period * eta^k < max_t. When a trial first reaches a rung it is recorded there, and it
    continues only if it ranks in the top ceil(n / eta) of the n trials recorded at that rung, in `promotion_order`
    (front, then hypervolume contribution in log-fraction space: the geometry the final front is scored in). The
    cheapest design at a rung is always on its first front, so the low-fraction end keeps being trained, and an
    expensive design must out-score the cheaper ones to go on. A trial reaching max_t is never stopped: it ends by
    itself after its final report, so its final checkpoint is written and its worker can be reused.
    """

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float = 3, metric: str = "score",
                 time_attr: str = "step") -> None:
        super().__init__()
        self._metric, self._time_attr, self.eta = metric, time_attr, reduction_factor
        self.rungs: list[float] = milestones(max_t, grace_period, reduction_factor)
        self._recorded: dict[float, dict[str, tuple[float, float]]] = {r: {} for r in self.rungs}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        t, score = result.get(self._time_attr), result.get(self._metric)
        if t is None or score is None:
            return TrialScheduler.CONTINUE
        for rung in reversed(self.rungs):  # the highest rung this result reaches decides, once
            if t < rung:
                continue
            recorded = self._recorded[rung]
            if trial.trial_id in recorded:
                break
            fraction = float(result.get("fraction", trial.config.get("fraction", 1.0)))
            recorded[trial.trial_id] = (float(score), fraction)
            return TrialScheduler.CONTINUE if self.promotes(recorded, trial.trial_id) else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def promotes(self, recorded: dict[str, tuple[float, float]], trial_id: str) -> bool:
        ids = list(recorded)
        scores, fractions = zip(*(recorded[i] for i in ids))
        rank = list(promotion_order(scores, fractions)).index(ids.index(trial_id))
        return rank < math.ceil(len(ids) / self.eta)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # ranks on (score, fraction) whatever the searcher optimises

    def debug_string(self) -> str:
        return "ParetoASHA: " + ", ".join(f"rung {r:g}: {len(v)}" for r, v in self._recorded.items())


def make_scheduler(kind: str, *, max_t: int, grace_period: int, reduction_factor: float,
                   bands_per_decade: int) -> TrialScheduler:
    if kind == "pareto":
        return ParetoASHA(max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)
    if kind == "banded":
        return BudgetBandedASHA(max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor,
                                bands_per_decade=bands_per_decade)
    if kind == "asha":
        return AsyncHyperBandScheduler(time_attr="step", metric="score", mode="max", max_t=max_t,
                                       grace_period=grace_period, reduction_factor=reduction_factor, brackets=1)
    if kind == "none":
        return FIFOScheduler()
    raise ValueError(f"scheduler must be one of ['pareto', 'banded', 'asha', 'none'], got {kind!r}")
