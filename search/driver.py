"""From parsed arguments to a finished search: plan (resolve and check everything), then Ray Tune + Optuna + MLflow.

Order matters: the space, the task, the run configuration, the model config (`search.plan`) and the tracking store
are all checked before Ray starts, so bad input costs seconds, not a cluster slot. `--dry-run` stops after the plan.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from search.names import check_name
from search.plan import SearchError, SearchPlan, SpaceSampler, plan
from search.space import preset_params


def make_searcher(p: SearchPlan) -> Any:
    """Ray's searcher for the plan: each design under its replicate seeds (search/replicates.py), from Optuna or from
    a study's fixed list (search/study.py)."""
    if p.study is not None:
        from search.study import ConfigListSearcher

        return ConfigListSearcher(list(p.study), list(p.seeds), p.max_steps, best_lr=p.best_lr)
    from search.replicates import ReplicateSearcher

    return ReplicateSearcher(optuna_searcher(p), list(p.seeds), p.max_steps)


def optuna_searcher(p: SearchPlan) -> Any:
    import optuna

    from search.searcher import TruthfulOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if p.sampler_kind == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=p.seed)
    else:  # multivariate + group model conditional spaces jointly; constant liar spreads concurrent suggestions
        sampler = optuna.samplers.TPESampler(seed=p.seed, multivariate=True, group=True, constant_liar=True)
    points = [preset_params(p.space, name) for name in p.space.presets]
    return TruthfulOptunaSearch(space=p.sampler, sampler=sampler, points_to_evaluate=points or None,
                                max_steps=p.max_steps, max_fraction=p.trial.max_param_fraction)


def run_search(args: argparse.Namespace) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*experimental.*")
    check_name(args)  # first: a name collision costs no planning (search/names.py)
    p = plan(args)  # resolves the study flags too (search.plan.resolve_study_flags)
    search_dir = p.storage / p.name
    if args.dry_run:
        from search.dryrun import print_plan

        print_plan(p, args)
        return 0
    from search.tracking import MlflowSearchCallback, check_tracking, parent_run

    try:
        client = check_tracking(p.tracking_uri)
    except ValueError as err:
        raise SearchError(str(err)) from None
    resolved = {"space": p.space.path, "task": p.task.name,
                **{f"run.{k}": v for k, v in vars(args).items() if k != "front"},
                **{f"resolved.{k}": v for k, v in p.run.to_dict().items()},
                "resolved.rungs": list(p.schedule.rungs), "resolved.grace_period": p.schedule.grace_period}
    parent_id = parent_run(client, p.experiment, str(search_dir), {k: json.dumps(v) if not isinstance(v, str) else v
                                                                   for k, v in resolved.items()},
                           {"space.yaml": p.space.text, "run_config.json": json.dumps(resolved, indent=2,
                                                                                       default=str)}, args.resume)
    from mlflow.entities import RunTag

    from search.contract import reference_tags

    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in reference_tags(p.reference, p.task.metric).items()])
    # The parent's plots and hypervolume history are refreshed at most every 30 s while the search runs (a refresh
    # costs ~1 s at a dozen trials, ~4 s at 1,000: per trial it dominated orchestration) and once at the end.
    outbox = search_dir / "tracking_outbox.json"  # MLflow records queued while the store is away (search/outbox.py)
    callback = MlflowSearchCallback(p.tracking_uri, parent_id, p.max_steps, str(search_dir / "report"),
                                    refresh_every_s=30.0, num_samples=p.num_samples, outbox=str(outbox))
    print(f"search {p.name!r}: {p.num_samples} trials of {p.task.name} from {p.space.path} ({args.seeds} seed"
          f"{'s' if args.seeds != 1 else ''} per design, {p.sampler_kind}) | {p.run.length}; evaluated "
          f"{p.run.interval}; rungs at {list(p.schedule.rungs) or 'none'} | MLflow run {parent_id} in "
          f"{p.tracking_uri}")
    from search.tuner import fit

    fit(p, make_searcher(p), callback, resume=args.resume)
    if outbox.exists():  # the callback said so; the records wait there for --resume
        return 1
    from search.summary import finish

    finish(client, parent_id, p.tracking_uri, str(search_dir / "report"))
    return 0


__all__ = ["SearchError", "SearchPlan", "SpaceSampler", "make_searcher", "plan", "run_search"]
