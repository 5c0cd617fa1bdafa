"""Replicate seeds: a seed is a replicate of a design, never a searched value.

`--seeds N` trains every design the search evaluates under N training seeds: the resolved training seed (the task
recipe's, or the one a space or `--set` fixes) and the N-1 after it. Each seed is its own Ray trial, so seeds run in
parallel, resume, fail and are recorded like any trial (MLflow: `train.seed`, and the `petl.design_key` tag their
design shares); the result memo (`search.trainable.ResultMemo`) keys on the whole training config, seed included, so a
seed is never answered from another seed's result.

With an optimizer, `ReplicateSearcher` wraps the Optuna searcher: it asks Optuna for a design once, hands its N
seeded configs to the next N trials Ray asks for, and tells Optuna once, when every seed has ended: COMPLETE with the
mean score when every seed reached full fidelity, FAIL when any seed failed, PRUNED when any was stopped early. So
Optuna models designs, not seeds, and no partial or single-seed score reaches its front. Early stopping (when on)
still judges each seed at its rungs; a design with a stopped seed counts as stopped.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from typing import Any

from ray.tune.search import Searcher

from finetune.spans import timed
from search import contract as C
from search.searcher import outcome
from search.studyplan import replicate_seeds, with_replicate

__all__ = ["ReplicateSearcher", "combine", "replicate_seeds", "with_replicate"]


def combine(results: Sequence[tuple[dict[str, Any] | None, bool]], max_steps: int) -> tuple[dict[str, Any], bool]:
    """One design's outcome from its seeds' (result, error) pairs, as the Optuna searcher reads a trial's.

    Every seed finished: the mean score (and its std); any failed: failed, with how many; any over the budget: skipped
    (the budget does not depend on the seed); otherwise stopped early, at the earliest step.
    """
    states = [outcome(r, max_steps, e) for r, e in results]
    done = [r for r in (r for r, _ in results) if r]
    fraction = next((r["fraction"] for r in done if "fraction" in r), None)
    base = {"fraction": fraction} if fraction is not None else {}
    if all(s == C.FINISHED for s in states):
        # The objective (the selected checkpoint's score) is what the optimizer is told; the last step's too.
        scores = [C.objective(r) for r, _ in results if r]
        last = [float(r[C.SCORE]) for r, _ in results if r]
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        return {**base, C.OBJECTIVE: statistics.fmean(scores), C.SCORE: statistics.fmean(last), "score_std": std,
                "step": max_steps}, False
    if C.FAILED in states:
        reasons = sorted({str((r or {}).get("failure", "the trial raised")) for (r, _), s in zip(results, states)
                          if s == C.FAILED})
        return {**base, "failed": 1, "failure": f"{states.count(C.FAILED)} of {len(states)} seeds failed: "
                f"{'; '.join(reasons)}", "step": min(int((r or {}).get("step", 0)) for r, _ in results)}, False
    if C.SKIPPED in states:
        return {**base, "over_budget": 1, "step": 0}, False
    return {**base, "step": min(int((r or {}).get("step", 0)) for r, _ in results)}, False


class ReplicateSearcher(Searcher):
    """Wraps an optimizer's searcher (`searcher`): one suggestion per design, its seeds as consecutive trials."""

    def __init__(self, searcher: Searcher, seeds: Sequence[int], max_steps: int) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.seeds, self.max_steps = searcher, list(seeds), max_steps
        self._pending: list[tuple[str, dict[str, Any]]] = []  # (design id, seeded config) not yet handed to a trial
        self._design_of: dict[str, str] = {}  # Ray trial id -> design id (the trial id the optimizer knows it by)
        self._results: dict[str, dict[str, tuple[dict[str, Any] | None, bool]]] = {}
        self._told: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    @timed("search.suggest", trial_arg=1)
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._pending:
            design_id, config = self._pending.pop(0)
        else:
            suggested = self.searcher.suggest(trial_id)
            if suggested is None or suggested == Searcher.FINISHED:
                return suggested
            design_id, n = trial_id, len(self.seeds)
            seeded = [with_replicate(suggested, seed=s, index=i, count=n) for i, s in enumerate(self.seeds)]
            self._pending += [(design_id, c) for c in seeded[1:]]
            self._results[design_id] = {}
            config = seeded[0]
        self._design_of[trial_id] = design_id
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Intermediate results stay with Ray's scheduler: the optimizer hears of a design once, when it is done."""

    @timed("search.tell", trial_arg=1)
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        design_id = self._design_of.get(trial_id)
        if design_id is None or design_id in self._told:
            return
        self._results[design_id][trial_id] = (dict(result) if result else None, error)
        if len(self._results[design_id]) == len(self.seeds):
            combined, err = combine(list(self._results[design_id].values()), self.max_steps)
            self._told.add(design_id)
            self.searcher.on_trial_complete(design_id, combined, err)

    def get_state(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["searcher"]
        return copy.deepcopy(state)

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
