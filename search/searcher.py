"""Optuna behind Ray Tune, told the truth about every trial.

Ray hands a searcher the last result of an early-stopped trial as if it had completed, which puts partial-fidelity
scores on the Pareto front. Here only a trial that reached full fidelity is COMPLETE (with its [score, fraction]);
an early-stopped one is PRUNED and a failed one FAIL, so the sampler and the front see only real results.
A design over `--max-param-fraction` is PRUNED too, and infeasible through the sampler's `constraints_func`
(`BudgetConstraint`), so TPE and NSGA-II learn where the budget ends instead of ignoring the skipped trial.
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

# The task score of the checkpoint the run's select_metric/select_mode chose (trainables.selection), as the paper
# reported; the rungs compare the score at their own step instead (search.scheduler).
OBJECTIVES, DIRECTIONS = ["selected_score", "fraction"], ["max", "min"]
log = logging.getLogger(__name__)


def outcome(result: dict[str, Any] | None, max_steps: int, error: bool = False) -> str:
    """finished (full fidelity), stopped (early, by the scheduler), failed or skipped (over the budget)."""
    if error or (result and result.get("failed")):
        return "failed"
    if result and result.get("over_budget"):
        return "skipped"
    if result and result.get("step", 0) >= max_steps and result.get("score") is not None:
        return "finished"
    return "stopped"


class BudgetConstraint:
    """Optuna constraints_func: fraction - limit (<= 0 is feasible); the fraction is set as a user attr when sampled.

    A class, not a closure: the sampler is pickled with the searcher's state for --resume.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, trial: Any) -> tuple[float]:
        return (float(trial.user_attrs.get("fraction", 0.0)) - self.limit,)


class TruthfulOptunaSearch(OptunaSearch):
    def __init__(self, *args: Any, max_steps: int, **kwargs: Any) -> None:
        super().__init__(*args, metric=OBJECTIVES, mode=DIRECTIONS, **kwargs)
        self.max_steps = max_steps

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        state = outcome(result, self.max_steps, error)
        if state == "finished":
            return super().on_trial_complete(trial_id, result, error)
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return None
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("outcome", state)
        if result and "step" in result:
            ot_trial.set_user_attr("fidelity", int(result["step"]))
        self._ot_study.tell(ot_trial, state=TrialState.FAIL if state == "failed" else TrialState.PRUNED)
        self._completed_trials.add(trial_id)
        return None

    @property
    def study(self) -> Any:
        return self._ot_study
