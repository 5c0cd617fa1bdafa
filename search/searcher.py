"""Optuna behind Ray Tune, told the truth about every trial.

Ray hands a searcher the last result of an early-stopped trial as if it had completed, which puts partial-fidelity
scores on the Pareto front. Here only a trial that reached full fidelity is COMPLETE (with its [score, fraction]);
an early-stopped one is PRUNED and a failed one FAIL, so the sampler and the front see only real results.
With `--max-param-fraction` the budget is an Optuna constraint (`fraction - limit <= 0`, set on every draw) and no
trial slot goes to a design over it: such a draw is told PRUNED and infeasible and the sampler draws again. TPE learns
the infeasible region from those draws; NSGA-II, whose populations hold only completed trials, breeds from feasible
parents only. (Handing over-budget designs to Ray and skipping them there left NSGA-II in generation 0 for good: it
never counted a skipped trial, so 47-49 of every 50 trials stayed over budget.)
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

# The task score of the checkpoint the run's select_metric/select_mode chose (trainables.selection), as the paper
# reported; the rungs compare the score at their own step instead (search.scheduler).
OBJECTIVES, DIRECTIONS = ["selected_score", "fraction"], ["max", "min"]
BUDGET_KEY = "max_param_fraction"  # the Optuna constraint: fraction - limit, feasible when <= 0
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


class TruthfulOptunaSearch(OptunaSearch):
    def __init__(self, *args: Any, max_steps: int, max_fraction: float | None = None, max_draws: int = 200,
                 **kwargs: Any) -> None:
        super().__init__(*args, metric=OBJECTIVES, mode=DIRECTIONS, **kwargs)
        self.max_steps, self.max_fraction, self.max_draws = max_steps, max_fraction, max_draws
        self.rejected = 0

    def suggest(self, trial_id: str) -> dict | None:
        """A design within `max_fraction`: an over-budget draw is told to the sampler (pruned, infeasible) and
        drawn again, so no trial slot goes to it. After `max_draws` over-budget draws in a row (a budget below
        almost every design) the last one is handed over and skipped untrained by the trial."""
        for draw in range(self.max_draws):
            config = super().suggest(trial_id)
            if self.max_fraction is None or not isinstance(config, dict):
                return config
            ot_trial = self._ot_trials[trial_id]
            violation = float(config["fraction"]) - self.max_fraction
            ot_trial.set_constraint(BUDGET_KEY, violation)  # <= 0 is feasible; read by TPE and NSGA-II alike
            if violation <= 0 or draw == self.max_draws - 1:
                return config
            del self._ot_trials[trial_id]
            ot_trial.set_user_attr("outcome", "rejected")
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            self.rejected += 1
        return None

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
