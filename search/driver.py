"""From parsed arguments to a finished search: plan (resolve and check everything), then Ray Tune + Optuna + MLflow.

Order matters: the space, the task, the run configuration, the model config (`search.plan`) and the tracking store
are all checked before Ray starts, so bad input costs seconds, not a cluster slot. `--dry-run` stops after the plan.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from typing import Any

from finetune.spans import span
from search.branches import preset_params
from search.cluster import check_address, gcs_alive, watch_cluster
from search.contract import SEARCH_STATE_TAG, reference_tags, score_name
from search.dryrun import print_plan
from search.names import check_name, save_args
from search.outcome import STATES, Outcome, StopSignals, describe, outcome_fields, tally, write_status
from search.plan import DefineByRunSpace, SearchError, SearchPlan, plan


def make_searcher(p: SearchPlan) -> Any:
    """Ray's searcher for the plan: each design under its replicate seeds (search/replicates.py), from Optuna or from
    a study's fixed list (search/study.py)."""
    if p.study is not None:
        # deferred on purpose: Ray and Optuna load only when a search runs (not for --dry-run or a refused flag)
        from search.study import ConfigListSearcher

        return ConfigListSearcher(list(p.study), list(p.seeds), p.max_steps, best_lr=p.best_lr)
    from search.replicates import ReplicateSearcher

    return ReplicateSearcher(optuna_searcher(p), list(p.seeds), p.max_steps)


def optuna_searcher(p: SearchPlan) -> Any:
    # deferred on purpose: Ray and Optuna load only when a search runs (not for --dry-run or a refused flag)
    import optuna

    from search.searcher import FullFidelityOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if p.sampler_kind == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=p.seed)
    else:  # multivariate + group model conditional spaces jointly; constant liar spreads concurrent suggestions
        sampler = optuna.samplers.TPESampler(seed=p.seed, multivariate=True, group=True, constant_liar=True)
    points = [preset_params(p.space, name) for name in p.space.presets]
    return FullFidelityOptunaSearch(space=p.define_by_run, sampler=sampler, points_to_evaluate=points or None,
                                max_steps=p.max_steps, max_fraction=p.trial.max_param_fraction)


def run_search(args: argparse.Namespace) -> int:
    """Plan, check, run; returns the exit code of `search.outcome.STATES` (0: every trial ended, one finished)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*experimental.*")
    check_name(args)  # first: a name collision costs no planning (search/names.py)
    with span("search.plan"):
        p = plan(args)  # resolves the study flags too (search.plan.resolve_study_flags)
    search_dir = p.storage / p.name
    if args.dry_run:
        print_plan(p, args)
        return 0
    # deferred on purpose: MLflow and Ray load only once the plan is checked (bad input ends before them)
    from search.store import check_tracking

    check_address(p.address)  # seconds, before anything is created (no MLflow run, no search folder)
    try:
        with span("search.check_tracking"):
            client = check_tracking(p.tracking_uri)
    except ValueError as err:
        raise SearchError(str(err)) from None
    from search.tuner import connect

    gcs = connect(p)  # Ray is up (or joined) and one trial fits its nodes: only now is anything created
    with span("search.open"):
        parent_id, callback = open_search(p, args, client, search_dir)
    return run_and_judge(p, args, client, parent_id, callback, gcs)


def open_search(p: SearchPlan, args: argparse.Namespace, client: Any, search_dir: Any) -> tuple[str, Any]:
    """The parent run (created, or found again on --resume) and the callback that writes the children."""
    # deferred on purpose: MLflow and Ray load only once the plan is checked (bad input ends before them)
    from mlflow.entities import RunTag

    from search.store import parent_run
    from search.tracking import MlflowSearchCallback

    resolved = {"space": p.space.path, "task": p.task.name,
                **{f"run.{k}": v for k, v in vars(args).items() if k not in ("front", "given_flags")},
                **{f"resolved.{k}": v for k, v in p.run.to_dict().items()},
                "resolved.rungs": list(p.schedule.rungs), "resolved.grace_period": p.schedule.grace_period}
    parent_id = parent_run(client, p.experiment, str(search_dir), {k: json.dumps(v) if not isinstance(v, str) else v
                                                                   for k, v in resolved.items()},
                           {"space.yaml": p.space.text, "run_config.json": json.dumps(resolved, indent=2,
                                                                                       default=str)}, args.resume,
                           description=p.space.description)
    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in reference_tags(p.reference, p.task.metric).items()])
    if not args.resume:
        search_dir.mkdir(parents=True, exist_ok=True)
        save_args(search_dir, args)  # what a later bare `--resume` continues
    # The parent's plots and hypervolume history are refreshed at most every 30 s while the search runs (a refresh
    # costs ~1 s at a dozen trials, ~4 s at 1,000: per trial it dominated orchestration) and once at the end.
    outbox = search_dir / "tracking_outbox.json"  # MLflow records queued while the store is away (search/outbox.py)
    callback = MlflowSearchCallback(p.tracking_uri, parent_id, p.max_steps, str(search_dir / "report"),
                                    refresh_every_s=30.0, num_samples=p.num_samples, outbox=str(outbox),
                                    metric=p.task.metric)

    print(f"search {p.name!r}: {p.num_samples} trials of {p.task.name}, scored by "
          f"{score_name(p.task.metric).title}, from {p.space.path} ({args.seeds} seed"
          f"{'s' if args.seeds != 1 else ''} per design, {p.sampler_kind}) | {p.run.length}; evaluated "
          f"{p.run.interval}; rungs at {list(p.schedule.rungs) or 'none'} | MLflow run {parent_id} in "
          f"{p.tracking_uri}")
    return parent_id, callback


def run_and_judge(p: SearchPlan, args: argparse.Namespace, client: Any, parent_id: str, callback: Any,
                  gcs: str | None) -> int:
    """Run the search under clean stop signals, then tell how it ended: exit code, parent status, status.json."""
    # deferred on purpose: Ray loads only once the plan is checked (bad input ends before it)
    from search.tuner import fit

    search_dir = p.storage / p.name
    where = {"name": p.name, "search_dir": str(search_dir), "parent_run_id": parent_id,
             "tracking_uri": p.tracking_uri, "address": p.address or "local", "requested": p.num_samples}
    write_status(search_dir, "running", **where)
    signals, result = StopSignals(), None
    watch = watch_cluster(gcs, lambda: cluster_lost(p, client, parent_id, where))
    with signals:
        try:
            result = fit(p, make_searcher(p), callback, resume=args.resume)
        except KeyboardInterrupt:  # a second signal: stop at once, Ray's last saved state is what --resume reads
            signals.received = signals.received or "SIGINT"
        except Exception:
            if gcs_alive(gcs):
                raise  # a defect, not the cluster: the traceback says where (exit 1)
    watch.set()
    lost = not gcs_alive(gcs)
    o = (tally(result, p.num_samples, p.max_steps) if result is not None
         else Outcome(p.num_samples, not_started=p.num_samples))
    queued = (search_dir / "tracking_outbox.json").exists()  # the callback said so; --resume sends them
    state = o.state(interrupted=signals.received is not None, cluster_lost=lost, queued=queued)
    hint = {"interrupted": f"{signals.received}; rerun the same command with --resume",
            "cluster_lost": f"the Ray cluster at {p.address or 'local'} stopped answering; restart it and rerun "
                            "with --resume", "incomplete": "rerun with --resume",
            "tracking_queued": f"records in {search_dir / 'tracking_outbox.json'}; rerun with --resume once the "
                               "store is back"}.get(state)
    if not queued:
        # read at call time on purpose: benchmarks/bench_orchestration.py times search.finish.finish by wrapping it
        from search.finish import finish

        finish(client, parent_id, p.tracking_uri, str(search_dir / "report"), status=STATES[state][1], state=state)
    extra = {**where, **outcome_fields(o), "signal": signals.received, "hint": hint}
    write_status(search_dir, state, **extra)
    print(describe(o, state, extra), flush=True)
    return STATES[state][0]


def cluster_lost(p: SearchPlan, client: Any, parent_id: str, where: dict[str, Any]) -> None:
    """The head stopped answering while the search ran: record it (children still running closed as interrupted,
    parent FAILED, status.json) and end the process with its code, before Ray's core worker ends it with 0."""
    # deferred on purpose: MLflow and Ray load only once the plan is checked (bad input ends before them)
    from search.store import close_interrupted

    code, status, meaning = STATES["cluster_lost"]
    hint = f"the Ray cluster at {p.address or 'local'} stopped answering; restart it and rerun with --resume"
    try:
        if not (p.storage / p.name / "tracking_outbox.json").exists():
            close_interrupted(client, parent_id)
            client.set_tag(parent_id, SEARCH_STATE_TAG, "cluster_lost")
            client.set_terminated(parent_id, status)
    finally:
        write_status(p.storage / p.name, "cluster_lost", **where, hint=hint)
        print(f"search cluster_lost (exit {code}): {meaning} ({hint})", flush=True)
        os._exit(code)  # Ray's threads may hang on the lost GCS: end now, with the code a scheduler reads


__all__ = ["SearchError", "SearchPlan", "DefineByRunSpace", "make_searcher", "plan", "run_search"]
