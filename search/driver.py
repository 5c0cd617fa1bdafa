"""From parsed arguments to a finished search: validate everything, then Ray Tune + Optuna + MLflow.

Order matters: the space, the task, the training settings, the model config and the tracking store are all checked
before Ray starts, so bad input costs seconds, not a cluster slot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.space import BranchWalker, SearchSpace, load_space, preset_params
from trainables.config import TrainConfig, parse_overrides
from trainables.counting import count_params
from trainables.presets import load_presets


class SearchError(ValueError):
    """Bad input to a search, reported as one line before any compute is spent."""


class SpaceSampler:
    """Optuna define-by-run: sample a design, price it exactly, return constants (picklable for --resume)."""

    def __init__(self, space: SearchSpace, config: Any, task_kind: str) -> None:
        self.space, self.config, self.task_kind = space, config, task_kind
        self.presets = {name: p.design for name, p in load_presets().items()}

    def __call__(self, trial: Any) -> dict[str, Any]:
        design, train, preset = self.space.sample(trial)
        counts = count_params(design, self.config, self.task_kind)
        if hasattr(trial, "set_user_attr"):  # an Optuna trial (not a validation walker): kept in the study
            trial.set_user_attr("fraction", counts.fraction)
        preset = preset or next((n for n, d in self.presets.items() if d == design), None)
        return {"design": design.to_dict(), "train": train, "fraction": counts.fraction, "preset": preset,
                "counts": {"trainable": counts.trainable, "stored": counts.stored, "paper": counts.paper}}


@dataclass
class Plan:
    space: SearchSpace
    task: Any
    name: str
    storage: Path
    tracking_uri: str
    experiment: str
    settings: dict[str, Any]
    max_steps: int
    sampler: SpaceSampler


def storage_folder(storage: str) -> Path:
    """A folder every node can reach (local disk for one machine, NFS or a mounted bucket for a cluster).

    Trials write their PETL checkpoints and resume state with plain file I/O next to Ray's experiment state, so
    object-store URIs are refused rather than half-supported: mount the bucket and pass the mount point.
    """
    if storage.startswith("file://"):
        storage = storage.removeprefix("file://")
    elif "://" in storage:
        raise SearchError(f"--storage must be a folder reachable by every node (e.g. an NFS mount), got the URI "
                          f"{storage!r}; mount the bucket (s3fs, gcsfuse) and pass the mount point")
    return Path(storage).expanduser().resolve()


def search_name(name: str) -> str:
    """A search is one folder directly inside --storage: a name that is a path is refused (`../x` would write beside
    the storage folder, an absolute name would replace it)."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise SearchError(f"--name must be a single folder name inside --storage (no '/', '\\', or '..'), got "
                          f"{name!r}; choose the folder with --storage and the search with --name")
    return name


def plan(args: argparse.Namespace) -> Plan:
    from trainables.models import config_for
    from trainables.tasks import get_task

    try:
        space = load_space(args.space)
        task = get_task(args.dataset or space.task or "toy-cls")
        fixed = {k: d.values[0] for k, d in space.train.items() if d.kind == "fixed"}
        fixed.update(parse_overrides(args.set))
        sampled = {k: d for k, d in space.train.items() if d.kind != "fixed" and k not in fixed}
        probe = {k: (d.low if d.kind in ("int", "float") else d.values[0]) for k, d in sampled.items()}
        cfg = TrainConfig.for_task(task.name, model=args.model or space.model, data_dir=args.data_dir,
                                   **fixed, **probe)  # validates every fixed setting and the sampled ones' types
        model_config = config_for(task, cfg.model)
        if args.num_samples < 1 or args.concurrency < 1:
            raise SearchError(f"--num-samples and --concurrency must be >= 1, got {args.num_samples}, "
                              f"{args.concurrency}")
    except ValueError as err:
        raise SearchError(str(err)) from None
    space = dataclasses.replace(space, train=sampled)  # fixed settings travel in `settings`, not the sampler
    sampler = SpaceSampler(space, model_config, task.kind)
    sampler(BranchWalker([]))  # prices one design now: builds the backbone's meta statistics before Ray starts
    name = search_name(args.name or f"{Path(args.space).stem}-{task.name}")
    storage = storage_folder(args.storage)
    settings = {"task": task.name, "model": cfg.model, "data_dir": args.data_dir, "train": fixed,
                "trials_dir": str(storage / name / "trials"), "storage": str(storage),
                "max_param_fraction": args.max_param_fraction, "cpus_per_trial": args.cpus_per_trial,
                "gpus_per_trial": args.gpus_per_trial, "workers_per_trial": args.workers_per_trial,
                "rerun_duplicates": args.rerun_duplicates}
    return Plan(space=space, task=task, name=name, storage=storage,
                tracking_uri=args.tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}",
                experiment=args.experiment or name, settings=settings, max_steps=cfg.max_steps, sampler=sampler)


def make_searcher(p: Plan, args: argparse.Namespace) -> Any:
    import optuna

    from search.searcher import TruthfulOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=args.seed)
    else:  # multivariate + group model conditional spaces jointly; constant liar spreads concurrent suggestions
        sampler = optuna.samplers.TPESampler(seed=args.seed, multivariate=True, group=True, constant_liar=True)
    points = [preset_params(p.space, name) for name in p.space.presets]
    return TruthfulOptunaSearch(space=p.sampler, sampler=sampler, points_to_evaluate=points or None,
                                max_steps=p.max_steps, max_fraction=args.max_param_fraction)


def run_search(args: argparse.Namespace) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*experimental.*")
    p = plan(args)
    from search.tracking import MlflowSearchCallback, check_tracking, parent_run

    try:
        client = check_tracking(p.tracking_uri)
    except ValueError as err:
        raise SearchError(str(err)) from None
    search_dir = p.storage / p.name
    if args.resume and not (search_dir / "tuner.pkl").exists():
        raise SearchError(f"--resume: no interrupted search named {p.name!r} under {p.storage}; check --name and "
                          "--storage, or drop --resume to start it")
    if not args.resume and search_dir.exists() and any(search_dir.iterdir()):
        raise SearchError(f"a search named {p.name!r} already exists under {p.storage}; pass --resume to continue "
                          "it or --name to start another")
    resolved = {"space": p.space.path, "task": p.task.name, **{f"run.{k}": v for k, v in vars(args).items()},
                **{f"settings.{k}": v for k, v in p.settings.items()}}
    parent_id = parent_run(client, p.experiment, str(search_dir), {k: json.dumps(v) if not isinstance(v, str) else v
                                                                   for k, v in resolved.items()},
                           {"space.yaml": p.space.text, "run_config.json": json.dumps(resolved, indent=2,
                                                                                       default=str)}, args.resume)
    # The parent's plots and hypervolume history are refreshed at most every 30 s while the search runs (a refresh
    # costs ~1 s at a dozen trials, ~4 s at 1,000: per trial it dominated orchestration) and once at the end.
    outbox = search_dir / "tracking_outbox.json"  # MLflow records queued while the store is away (search/outbox.py)
    callback = MlflowSearchCallback(p.tracking_uri, parent_id, p.max_steps, str(search_dir / "report"),
                                    refresh_every_s=30.0, num_samples=args.num_samples, outbox=str(outbox))
    print(f"search {p.name!r}: {args.num_samples} trials of {p.task.name} from {p.space.path} | MLflow run "
          f"{parent_id} in {p.tracking_uri}")
    from search.tuner import fit

    fit(p, args, make_searcher(p, args), callback)
    if outbox.exists():  # the callback said so; the records wait there for --resume
        return 1
    from search.summary import finish

    finish(client, parent_id, p.tracking_uri, str(search_dir / "report"))
    return 0


__all__ = ["Plan", "SearchError", "SpaceSampler", "plan", "run_search"]
