"""Ray Tune orchestration: resources, concurrency, retries, storage, restore. Knows nothing of PETL."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import ray
from ray import tune

from finetune.spans import span, timed
from search.cluster import check_placement
from search.scheduler import make_scheduler

# A multi-worker trial's own Tune process only launches Ray Train's workers (which reserve the CPUs and GPUs): it
# holds 1 byte of memory and no CPU, so N workers of 1 CPU fit on N 1-CPU nodes (with 0.01 CPU it left 0.99 on its
# node and the trial waited forever for a placement group). Tune refuses an empty request, hence the byte.
LAUNCHER_RESOURCES = {"cpu": 0, "memory": 1}


def _init_ray(address: str | None, num_cpus: float | None) -> None:
    if ray.is_initialized():
        return
    with span("search.ray_start"):
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # address="local": always a private instance. Without it ray.init joins any cluster a `ray start` left
            # on this machine (someone else's work, which may die under us).
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)


def connect(plan: Any) -> str | None:
    """Join (or start) Ray and check that one trial fits the cluster's nodes; returns the GCS address (to tell a
    lost cluster from a finished search later). Raises SearchError naming the shortfall."""
    _init_ray(plan.address, None)
    t = plan.trial
    check_placement(ray.nodes(), t.cpus_per_trial, t.gpus_per_trial, t.workers_per_trial)
    return ray.get_runtime_context().gcs_address


def spanned(run_trial: Callable[[dict, Any], None]) -> Callable[[dict, Any], None]:
    """The trainable as a span named "trial" (field: Tune's trial id) in its worker (finetune.spans). Same name
    and signature as `run_trial`, so Ray names trials and restores a search as before."""

    @functools.wraps(run_trial)
    def trial(config: dict, context: Any) -> None:
        from ray import tune

        with span("trial", trial=tune.get_context().get_trial_id()):
            return run_trial(config, context)

    return trial


@timed("search.fit")
def fit(plan: Any, searcher: Any, callback: Any, resume: bool = False) -> Any:
    """Run (or resume) the search of a `search.plan.SearchPlan`; every outcome lands in MLflow through `callback`.
    Returns Ray Tune's ResultGrid (trials in their final or, after a stop signal, unfinished states)."""
    # read at call time on purpose: benchmarks/bench_orchestration.py swaps search.trainable.run_trial for its probes
    from search.trainable import run_trial

    _init_ray(plan.address, None)
    trial = plan.trial
    trainable = tune.with_resources(tune.with_parameters(spanned(run_trial), context=trial),
                                    {"cpu": trial.cpus_per_trial, "gpu": trial.gpus_per_trial}
                                    if trial.workers_per_trial <= 1 else LAUNCHER_RESOURCES)
    path = str(plan.storage / plan.name)
    if resume:
        # Trials that were running restart from their own resume state (trials/<id>/resume); finished ones stay.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        s = plan.schedule  # grace period and rungs on the resolved evaluation steps (search.plan)
        scheduler = make_scheduler(s.kind, max_t=s.max_t, grace_period=s.grace_period,
                                   reduction_factor=s.reduction_factor, bands_per_decade=s.bands_per_decade)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.num_samples,
                                        max_concurrent_trials=plan.concurrency,
                                        # A fresh worker costs ~1.5 s to launch plus ~4 s of torch/transformers
                                        # imports per trial; reusing it is safe because train() writes the final
                                        # checkpoint before its last report, the call inside which Ray's ASHA
                                        # ends a trial at max_t (benchmarks/results_search.md, section 1).
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=plan.name, storage_path=str(plan.storage), callbacks=[callback],
                                      failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                                      verbose=0),
        )
    return tuner.fit()
