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

from typing import Any

import ray
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

# The task score of the checkpoint the run's select_metric/select_mode chose (finetune.selection), as the paper
# reported; the rungs compare the score at their own step instead (search.scheduler).
OBJECTIVES, DIRECTIONS = ["selected_score", "fraction"], ["max", "min"]
BUDGET_KEY = "max_param_fraction"  # the Optuna constraint: fraction - limit, feasible when <= 0


def outcome(result: dict[str, Any] | None, max_steps: int, error: bool = False) -> str:
    """finished (full fidelity), stopped (early, by the scheduler), failed or skipped (over the budget)."""
    if error or (result and result.get("failed")):
        return "failed"
    if result and result.get("over_budget"):
        return "skipped"
    if result and result.get("step", 0) >= max_steps and result.get("score") is not None:
        return "finished"
    return "stopped"


# ---- adapter: Ray's OptunaSearch keeps the Optuna study and its live trials in private attributes, and telling
# Optuna a trial's true state needs both. Every read goes through these three functions;
# tests/test_search_units.py::test_the_ray_optuna_adapter_reaches_the_study_and_its_trials fails if Ray renames them.
def _private(search: OptunaSearch, name: str) -> Any:
    try:
        return getattr(search, name)
    except AttributeError:
        raise RuntimeError(f"ray.tune.search.optuna.OptunaSearch (ray {ray.__version__}) has no attribute {name!r}, "
                           "which search/searcher.py's adapter reads to tell Optuna the truth about a trial; "
                           "update the adapter to this Ray version") from None


def optuna_study(search: OptunaSearch) -> Any:
    """The optuna.Study behind Ray's OptunaSearch."""
    return _private(search, "_ot_study")


def optuna_trials(search: OptunaSearch) -> dict[str, Any]:
    """Ray trial id -> the live optuna.Trial it was suggested from (removed by Ray when told complete)."""
    return _private(search, "_ot_trials")


def told_trials(search: OptunaSearch) -> set[str]:
    """Ray trial ids whose outcome was already told to Optuna."""
    return _private(search, "_completed_trials")


class FullFidelityOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch with two objectives [selected_score max, fraction min] that tells Optuna COMPLETE only for
    trials that reached `max_steps` (PRUNED for early-stopped, FAIL for failed ones) and keeps over-budget draws
    (`max_fraction`) from ever taking a trial slot (module docstring)."""

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
            ot_trial = optuna_trials(self)[trial_id]
            violation = float(config["fraction"]) - self.max_fraction
            ot_trial.set_constraint(BUDGET_KEY, violation)  # <= 0 is feasible; read by TPE and NSGA-II alike
            if violation <= 0 or draw == self.max_draws - 1:
                return config
            del optuna_trials(self)[trial_id]
            ot_trial.set_user_attr("outcome", "rejected")
            optuna_study(self).tell(ot_trial, state=TrialState.PRUNED)
            self.rejected += 1
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        state = outcome(result, self.max_steps, error)
        if state == "finished":
            return super().on_trial_complete(trial_id, result, error)
        if trial_id in told_trials(self) or trial_id not in optuna_trials(self):
            return None
        ot_trial = optuna_trials(self)[trial_id]
        ot_trial.set_user_attr("outcome", state)
        if result and "step" in result:
            ot_trial.set_user_attr("fidelity", int(result["step"]))
        optuna_study(self).tell(ot_trial, state=TrialState.FAIL if state == "failed" else TrialState.PRUNED)
        told_trials(self).add(trial_id)
        return None

    @property
    def study(self) -> Any:
        return optuna_study(self)
