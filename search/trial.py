"""The Ray Tune trainable: a sampled config → a design point and run config → `trainables.loop.train`.

Runs on Ray workers; imports nothing from the driver. A NaN or diverging loss is reported as a failed result (it is
deterministic, so retrying it would waste a slot); crashes propagate so Ray's FailureConfig can retry them.
With `workers_per_trial > 1` the trainable is the driver of a Ray Train `TorchTrainer` whose workers run the same
loop under DeepSpeed (Ray Train V2's pattern: a Tune function that launches the trainer).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables.config import TrainConfig
from trainables.design import DesignPoint
from trainables.report import TrialFailure


class TuneReporter:
    def report(self, metrics: Mapping[str, float]) -> None:
        from ray import tune

        tune.report(dict(metrics))


class TrainReporter:
    """Inside Ray Train workers: every rank reports (a collective); Tune receives rank 0's metrics."""

    def report(self, metrics: Mapping[str, float]) -> None:
        import ray.train

        ray.train.report(dict(metrics))


def _train_config(config: Mapping[str, Any], settings: Mapping[str, Any], trial_id: str) -> TrainConfig:
    out = Path(settings["trials_dir"]) / trial_id  # stable across restarts: a restarted trial resumes from it
    return TrainConfig.for_task(settings["task"], model=settings.get("model"), data_dir=settings.get("data_dir"),
                                out_dir=str(out), **{**settings.get("train", {}), **config["train"]})


def _run(design: DesignPoint, cfg: TrainConfig, reporter: Any, fraction: float) -> dict[str, Any] | None:
    from trainables.loop import train

    try:
        train(design, cfg, reporter)
    except TrialFailure as err:
        return {"failed": 1, "failure": err.reason, "step": err.step, "fraction": fraction}
    return None


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    import torch
    from ray import tune

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch.set_num_threads(max(1, int(settings.get("cpus_per_trial", 1))))
    fraction = float(config["fraction"])
    limit = settings.get("max_param_fraction")
    if limit is not None and fraction > limit:
        tune.report({"over_budget": 1, "step": 0, "fraction": fraction})
        return
    design = DesignPoint.from_dict(config["design"])
    cfg = _train_config(config, settings, tune.get_context().get_trial_id())
    if int(settings.get("workers_per_trial", 1)) > 1:
        _run_distributed(design, cfg, settings, fraction)
        return
    failure = _run(design, cfg, TuneReporter(), fraction)
    if failure:
        tune.report(failure)


def _run_distributed(design: DesignPoint, cfg: TrainConfig, settings: Mapping[str, Any], fraction: float) -> None:
    import dataclasses

    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    workers, gpus = int(settings["workers_per_trial"]), float(settings.get("gpus_per_trial", 0))

    def worker_loop(loop_config: dict[str, Any]) -> None:
        failure = _run(DesignPoint.from_dict(loop_config["design"]), TrainConfig(**loop_config["cfg"]),
                       TrainReporter(), fraction)
        if failure:
            ray.train.report(failure)

    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"design": design.to_dict(), "cfg": dataclasses.asdict(cfg) | {"engine": "deepspeed"}},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker={
            "CPU": max(float(settings.get("cpus_per_trial", 1)) / workers, 0.01), **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(name=tune.get_context().get_trial_id(), storage_path=settings["storage"],
                                       callbacks=[TuneReportCallback()]),
    )
    trainer.fit()
