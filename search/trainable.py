"""The Ray Tune trainable: a sampled config → a design point and run config → `finetune.loop.train`.

Runs on Ray workers; imports nothing from the driver. A NaN or diverging loss, and an error that will repeat (a bad
value, an impossible shape: `deterministic`), are reported as a failed result with their reason, since retrying
them would waste a slot; other crashes (a lost node, out of memory, I/O) propagate so Ray's FailureConfig retries
them from the trial's last resume point.
With `workers_per_trial > 1` the trainable is the driver of a Ray Train `TorchTrainer` whose workers run the same
loop under DeepSpeed (Ray Train V2's pattern: a Tune function that launches the trainer).

Training is seeded and its batches are step-addressed, so a config that already reached full fidelity in this search
would give the same result again: TPE suggests such duplicates often in categorical spaces (7-15 of 30 trials in
benchmarks/results_search.md). `ResultMemo` answers them from the first run's final result instead of training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.designpoint import DesignPoint
from finetune.reporter import TrialFailure
from finetune.trainconfig import TrainConfig

if TYPE_CHECKING:
    from search.plan import TrialContext

OWN_RESULT = "result.json"  # in a trial's folder, beside petl.safetensors: its final metrics


class ResultMemo:
    """Final results of this search's full-fidelity trials: one JSON file per config under <search>/results/ (shared
    with later trials of the same config) and the trial's own copy in its folder (`result.json`)."""

    def __init__(self, folder: str | Path, config: Mapping[str, Any], cfg: TrainConfig, trial_id: str,
                 workers: int = 1, share: bool = True) -> None:
        train = dataclasses.asdict(cfg)
        for key in ("out_dir", "keep_resume_state"):  # where the trial writes, not what it computes
            train.pop(key, None)
        # The global batch is batch_size x workers, so the worker count is part of what the trial computes.
        blob = json.dumps({"design": config["design"], "train": train, "workers": workers}, sort_keys=True,
                          default=str)
        self.path = Path(folder) / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.json"
        self.own_path = Path(cfg.out_dir) / OWN_RESULT if cfg.out_dir else None
        self.trial_id, self.max_steps, self.share = trial_id, cfg.max_steps, share

    def lookup(self) -> dict[str, Any] | None:
        """This trial's own final result if it already reached full fidelity (it is being run again because the
        driver was killed before it saw the end): answered as itself. Else, when shared, another trial's result of
        the same config with `reused_from` naming that trial. None when neither exists."""
        if self.own_path is not None and self.own_path.exists():
            return dict(json.loads(self.own_path.read_text())["metrics"])
        if not self.share or not self.path.exists():
            return None
        stored = json.loads(self.path.read_text())
        if stored["trial_id"] == self.trial_id:
            return dict(stored["metrics"])
        return {**stored["metrics"], "reused_from": stored["trial_id"]}

    def record(self, metrics: Mapping[str, Any]) -> None:
        if metrics.get("failed") or metrics.get("score") is None or int(metrics.get("step", 0)) < self.max_steps:
            return
        blob = json.dumps({"trial_id": self.trial_id, "metrics": dict(metrics)}, default=float)
        for path in (self.own_path, self.path if self.share else None):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(blob)
                os.replace(tmp, path)  # atomic on one filesystem: a reader never sees half a file


class TuneReporter:
    def __init__(self, memo: ResultMemo | None = None) -> None:
        self.memo = memo

    def report(self, metrics: Mapping[str, float]) -> None:
        from ray import tune  # deferred on purpose: Ray loads in the worker, not in the driver importing this module

        if self.memo:
            self.memo.record(metrics)  # before tune.report: a scheduler may end the trial inside it
        tune.report(dict(metrics))


class TrainReporter:
    """Inside Ray Train workers: every rank reports (a collective); Tune receives rank 0's metrics."""

    def __init__(self, memo: ResultMemo | None = None) -> None:
        self.memo = memo

    def report(self, metrics: Mapping[str, float]) -> None:
        import ray.train  # deferred on purpose: Ray Train loads in the worker, not in the driver importing this module

        if self.memo and ray.train.get_context().get_world_rank() == 0:
            self.memo.record(metrics)
        ray.train.report(dict(metrics))


def _train_config(config: Mapping[str, Any], context: TrialContext, trial_id: str) -> TrainConfig:
    """The trial's one TrainConfig: the search's resolved run with this trial's sampled settings."""
    out = Path(context.trials_dir) / trial_id  # stable across restarts: a restarted trial resumes from it
    return context.run.trial_config(config["train"], str(out))


# Errors a retry would raise again: the same config, data and code give the same exception. OSError (I/O, network),
# MemoryError and RuntimeError in general (CUDA out of memory, NCCL/gloo, a worker lost) may pass, so they are retried.
DETERMINISTIC = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError, AssertionError,
                 ZeroDivisionError, ImportError, LookupError, ArithmeticError)
SHAPE_ERRORS = ("size mismatch", "shapes cannot be multiplied", "must match the size", "shape '", "shape mismatch",
                "expected input", "dimension out of range")  # torch's RuntimeErrors for an impossible shape


def deterministic(err: BaseException) -> bool:
    """True when running the trial again would raise the same error (so it is failed, not retried)."""
    if isinstance(err, TrialFailure):
        return True
    if isinstance(err, OSError | MemoryError):
        return False
    if isinstance(err, DETERMINISTIC):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and "out of memory" not in text and any(s in text for s in SHAPE_ERRORS)


def failure_reason(err: BaseException) -> str:
    """`ValueError: batch_size must be >= 1, got 0`: the exception's type and first line, as MLflow shows it."""
    if isinstance(err, TrialFailure):
        return err.reason
    first = (str(err).strip().splitlines() or [""])[0][:500]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _run(design: DesignPoint, cfg: TrainConfig, reporter: Any, fraction: float) -> dict[str, Any] | None:
    # deferred on purpose: this module is imported by the driver; torch and the training loop load in the Ray worker
    from finetune.loop import train

    try:
        train(design, cfg, reporter)
    except Exception as err:  # noqa: BLE001 - sorted into "fail now" and "let Ray retry"
        if not deterministic(err):
            raise
        return {"failed": 1, "failure": failure_reason(err), "step": getattr(err, "step", 0), "fraction": fraction}
    return None


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    # deferred on purpose: torch and Ray Train load in the Ray worker, not in the driver that imports this module
    import torch
    from ray import tune

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch.set_num_threads(max(1, int(context.cpus_per_trial)))
    fraction = float(config["fraction"])
    limit = context.max_param_fraction
    if limit is not None and fraction > limit:
        tune.report({"over_budget": 1, "step": 0, "fraction": fraction})
        return
    design = DesignPoint.from_dict(config["design"])
    trial_id = tune.get_context().get_trial_id()
    cfg = _train_config(config, context, trial_id)
    memo = ResultMemo(context.results_dir, config, cfg, trial_id, context.workers_per_trial,
                      share=not context.rerun_duplicates)
    answer = memo.lookup()
    if answer:
        tune.report(answer)
        return
    if context.workers_per_trial > 1:
        _run_distributed(design, cfg, context, fraction, memo)
        return
    failure = _run(design, cfg, TuneReporter(memo), fraction)
    if failure:
        tune.report(failure)


def train_storage(context: TrialContext) -> str:
    """Where Ray Train writes a multi-worker trial's own run folder: inside the search's folder."""
    return str(Path(context.trials_dir).parent / "ray_train")


def _run_distributed(design: DesignPoint, cfg: TrainConfig, context: TrialContext, fraction: float,
                     memo: ResultMemo | None) -> None:
    # deferred on purpose: Ray Train and its torch backend load in the trial's worker, only for multi-worker trials
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    workers, gpus = context.workers_per_trial, context.gpus_per_trial

    def worker_loop(loop_config: dict[str, Any]) -> None:
        failure = _run(DesignPoint.from_dict(loop_config["design"]), TrainConfig(**loop_config["cfg"]),
                       TrainReporter(memo), fraction)
        if failure:
            ray.train.report(failure)

    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"design": design.to_dict(), "cfg": dataclasses.asdict(cfg) | {"engine": "deepspeed"}},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker={
            "CPU": max(context.cpus_per_trial / workers, 0.01), **({"GPU": gpus} if gpus else {})}),
        # Inside the search's folder (<storage>/<name>/ray_train/<trial id>), never beside it in <storage>.
        run_config=ray.train.RunConfig(name=tune.get_context().get_trial_id(), storage_path=train_storage(context),
                                       callbacks=[TuneReportCallback()]),
    )
    trainer.fit()
