"""Study mode: a fixed list of trial configs instead of an optimizer.

`--sampler grid` trains every combination of a space's listed values (sites, options, training settings; a space's
presets are among them), each under its replicate seeds, with early stopping off: a study compares designs, so
every one must reach full fidelity. With `--seeds-at-best-lr` the listed learning rates are a selection, not a
factor: every combination is trained once (first seed), then each design's other seeds only at its best lr (highest
full-fidelity score; ties go to the lr listed first). `python -m search.reevaluate` uses the same searcher for a
finished search's Pareto front. A study resumes like any search (`--resume`): this searcher's queue is saved with
Ray's state, and configs already trained to full fidelity are answered by the result memo.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from finetune.spans import timed
from search import contract as C
from search.searcher import outcome
from search.studyplan import GRID_LIMIT, grid_configs, lr_free_key, planned_trials, with_replicate

__all__ = ["GRID_LIMIT", "ConfigListSearcher", "grid_configs", "lr_free_key", "planned_trials"]

class ConfigListSearcher(Searcher):
    """Hands out a fixed list of configs in order, each under its replicate seeds; FINISHED when all are out."""

    def __init__(self, configs: Sequence[dict[str, Any]], seeds: Sequence[int], max_steps: int,
                 best_lr: bool = False) -> None:
        super().__init__(metric=C.OBJECTIVE, mode="max")
        self.seeds, self.max_steps, self.best_lr = list(seeds), max_steps, best_lr
        n = len(self.seeds)
        firsts = range(1) if best_lr else range(n)
        self._queue = [with_replicate(c, seed=self.seeds[i], index=i, count=n) for c in configs for i in firsts]
        self._order = {C.design_key(C.config_params(c)): i for i, c in enumerate(configs)}
        self._open: dict[str, int] = {}  # lr-free design key -> its first-seed trials not yet ended
        self._done: dict[str, list[tuple[float, int, dict[str, Any]]]] = {}  # -> (score, list position, config)
        if best_lr:
            for c in configs:
                self._open[lr_free_key(c)] = self._open.get(lr_free_key(c), 0) + 1
        self._first: dict[str, dict[str, Any]] = {}  # Ray trial id -> first-seed config (best lr only)

    @timed("search.suggest", trial_arg=1)
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._queue:
            config = self._queue.pop(0)
            if self.best_lr and config["replicate"]["index"] == 0:
                self._first[trial_id] = config
            return config
        if any(self._open.values()):
            return None  # waiting for a design's learning rates to finish before its other seeds
        return Searcher.FINISHED

    @timed("search.tell", trial_arg=1)
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        config = self._first.pop(trial_id, None)
        if config is None:
            return
        key = lr_free_key(config)
        self._open[key] -= 1
        if outcome(result, self.max_steps, error) == C.FINISHED:
            position = self._order.get(config["replicate"]["key"], 0)
            self._done.setdefault(key, []).append((C.objective(result), -position, config))  # type: ignore[index]
        if self._open[key] == 0 and self._done.get(key):
            best = max(self._done[key], key=lambda t: (t[0], t[1]))[2]
            n = len(self.seeds)
            self._queue += [with_replicate(best, seed=s, index=i, count=n) for i, s in enumerate(self.seeds) if i]

    def save(self, checkpoint_path: str) -> None:
        """The queue and what has ended, as JSON: the search folder may be shared, so restoring runs no code."""
        Path(checkpoint_path).write_text(json.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(json.loads(Path(checkpoint_path).read_text()))  # `_done`'s tuples come back as lists
