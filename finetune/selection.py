"""The checkpoint that counts for a trial: chosen over its evaluations by the recipe's selection metric and mode.

Every evaluation reports two scores, because they answer two questions:
- `score`: the task score at this step. ASHA's rungs compare it: every trial at a rung is measured the same way at
  the same step (like with like), and a trial's history up to a rung never gives it a second chance.
- `selected_score` (with `selected_step`): the task score of the best evaluation so far by `select_metric` in
  `select_mode` (en-ro: the lowest eval loss; XSum: the highest ROUGE-2; GLUE: the highest accuracy). At max_steps
  this is the trial's result, as the paper reported the selected checkpoint: the sampler (Optuna) and the Pareto
  front use it, and the trial's saved weights are that checkpoint's.
A tie keeps the earlier checkpoint (fewer steps, same quality); a non-finite value is never selected over a finite one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


def report_key(select_metric: str) -> str:
    """The report key a selection metric reads: the eval loss, or one of the metric's named scores."""
    return "eval_loss" if select_metric == "loss" else f"metric.{select_metric}"


@dataclass
class Selection:
    metric: str  # "loss" or a score name of the task's metric
    mode: str  # "max" | "min"
    step: int | None = None  # the selected evaluation's step
    value: float | None = None  # its selection metric
    score: float | None = None  # its task score

    def offer(self, report: Mapping[str, Any]) -> bool:
        """Consider one evaluation's report; True when it becomes the selected checkpoint."""
        value = float(report[report_key(self.metric)])
        if self.value is not None and math.isfinite(self.value):
            if not math.isfinite(value) or not (value > self.value if self.mode == "max" else value < self.value):
                return False
        self.step, self.value, self.score = int(report["step"]), value, float(report["score"])
        return True

    def report(self) -> dict[str, float]:
        return {"selected_score": self.score if self.score is not None else math.nan,
                "selected_step": self.step if self.step is not None else 0}

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None, metric: str, mode: str) -> Selection:
        """A selection restored from resume state; a fresh one when the state was written for another metric."""
        if state and state.get("metric") == metric and state.get("mode") == mode:
            return cls(**state)
        return cls(metric, mode)
