"""Ray Tune orchestration: resources, concurrency, retries, storage, restore. Knows nothing of PETL."""

from __future__ import annotations

import argparse
from typing import Any

from search.scheduler import make_scheduler


def _init_ray(address: str | None, num_cpus: float | None) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        # address="local": always a private instance. Without it ray.init joins any cluster a `ray start` left on
        # this machine (someone else's work, which may die under us).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)


def fit(plan: Any, args: argparse.Namespace, searcher: Any, callback: Any, num_samples: int | None = None) -> None:
    """Run (or resume) the search; every outcome lands in MLflow through `callback`.

    `num_samples`: Ray trials in all (designs x replicate seeds, see search/replicates.py); default `--num-samples`.
    """
    from ray import tune

    from search.trial import run_trial

    _init_ray(args.address, None)
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=plan.settings),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
                                    if args.workers_per_trial <= 1 else {"cpu": 0.01})
    path = str(plan.storage / plan.name)
    if args.resume:
        # Trials that were running restart from their own resume state (trials/<id>/resume); finished ones stay.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        scheduler = make_scheduler(args.scheduler, max_t=plan.max_steps,
                                   grace_period=args.grace_period or plan.settings["train"].get("eval_every", 1),
                                   reduction_factor=args.reduction_factor, bands_per_decade=args.bands_per_decade)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=num_samples or args.num_samples,
                                        max_concurrent_trials=args.concurrency,
                                        # A fresh worker costs ~1.5 s to launch plus ~4 s of torch/transformers
                                        # imports per trial; reusing it is safe because train() writes the final
                                        # checkpoint before its last report, the call inside which Ray's ASHA
                                        # ends a trial at max_t (benchmarks/results_search.md, section 1).
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=plan.name, storage_path=str(plan.storage), callbacks=[callback],
                                      failure_config=tune.FailureConfig(max_failures=args.max_failures),
                                      verbose=0),
        )
    tuner.fit()
