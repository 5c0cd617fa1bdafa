"""What `finetune.loop.train` reports at every evaluation, and to whom, without importing any of them.

The loop calls `Reporter.report(metrics)`. Implementations: `search.trainable.TuneReporter` and `TrainReporter`
(Ray Tune, Ray Train; the driver's MLflow callback logs what Ray receives, so MLflow never hears from the trial
directly), `ListReporter` (tests and benchmarks keep every report in memory) and `NullReporter` (the single-trial
command, which prints only the final result).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

# Every evaluation reports exactly these keys (plus the metric's named scores as `metric.<name>`), so schedulers,
# trackers and analysis can rely on them. `step` counts optimizer steps: the fidelity unit of the search. `score` is
# the task score at this step (what rungs compare); `selected_score` / `selected_step` are the checkpoint selected so
# far by the run's select_metric and mode (the trial's result at max_steps; see finetune.selection).
REPORT_KEYS = ("step", "score", "selected_score", "selected_step", "loss", "eval_loss", "tokens_per_s", "trainable",
               "stored", "fraction", "elapsed_s")


class Reporter(Protocol):
    def report(self, metrics: Mapping[str, float]) -> None: ...


class NullReporter:
    def report(self, metrics: Mapping[str, float]) -> None:
        return None


@dataclass
class ListReporter:
    """Keeps every report in memory (tests, benchmarks)."""

    reports: list[dict[str, float]] = field(default_factory=list)

    def report(self, metrics: Mapping[str, float]) -> None:
        self.reports.append(dict(metrics))


class TrialFailure(RuntimeError):
    """A trial that cannot produce a result (NaN or diverging loss): recorded as failed, never as a zero score."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"trial failed at step {step}: {reason}")
        self.reason, self.step = reason, step
