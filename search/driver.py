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
        return self.price(design, train, preset, trial)

    def price(self, design: Any, train: dict[str, Any], preset: str | None = None, trial: Any = None
              ) -> dict[str, Any]:
        """The trial config of `design` with `train` overrides, priced exactly on this search's model."""
        counts = count_params(design, self.config, self.task_kind)
        if hasattr(trial, "set_user_attr"):  # an Optuna trial (not a validation walker): read by BudgetConstraint
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
    seed: int = 0  # the resolved training seed: the first replicate's
    reference: Any = None  # search.contract.Reference: the hypervolume reference score of the task


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
        if (args.num_samples is not None and args.num_samples < 1) or args.concurrency < 1:
            raise SearchError(f"--num-samples and --concurrency must be >= 1, got {args.num_samples}, "
                              f"{args.concurrency}")
    except ValueError as err:
        raise SearchError(str(err)) from None
    space = dataclasses.replace(space, train=sampled)  # fixed settings travel in `settings`, not the sampler
    sampler = SpaceSampler(space, model_config, task.kind)
    sampler(BranchWalker([]))  # prices one design now: builds the backbone's meta statistics before Ray starts
    name = args.name or f"{Path(args.space).stem}-{task.name}"
    storage = storage_folder(args.storage)
    settings = {"task": task.name, "model": cfg.model, "data_dir": args.data_dir, "train": fixed,
                "trials_dir": str(storage / name / "trials"), "storage": str(storage),
                "max_param_fraction": args.max_param_fraction, "cpus_per_trial": args.cpus_per_trial,
                "gpus_per_trial": args.gpus_per_trial, "workers_per_trial": args.workers_per_trial,
                "rerun_duplicates": args.rerun_duplicates}
    return Plan(space=space, task=task, name=name, storage=storage,
                tracking_uri=args.tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}",
                experiment=args.experiment or name, settings=settings, max_steps=cfg.max_steps, sampler=sampler,
                seed=cfg.seed, reference=task_reference(task, cfg))


def task_reference(task: Any, cfg: TrainConfig) -> Any:
    """The hypervolume reference score: majority class of the evaluation examples when they are local or generated
    (read once, cheaply), else chance; 0 for BLEU/ROUGE."""
    from search.contract import task_reference as reference

    labels = None
    if task.kind == "classification" and (task.generated or cfg.data_dir):
        from trainables.data import load_examples

        try:
            labels = [int(e["label"]) for e in load_examples(task, "validation", cfg.data_dir, limit=cfg.eval_cap,
                                                             seed=cfg.seed)]
        except (OSError, ValueError):  # unreadable data fails the trials with its own message; chance will do here
            labels = None
    return reference(task.name, labels)


def make_searcher(p: Plan, args: argparse.Namespace) -> tuple[Any, int]:
    """(searcher, trials to run): each evaluated design under `--seeds` replicate seeds (search/replicates.py)."""
    from search.replicates import ReplicateSearcher, replicate_seeds

    try:
        seeds = replicate_seeds(args.seeds, p.seed)
        configs = study_configs(p, args)
    except ValueError as err:
        raise SearchError(str(err)) from None
    if configs is not None:
        from search.study import ConfigListSearcher, planned_trials

        best_lr = bool(getattr(args, "seeds_at_best_lr", False))
        return (ConfigListSearcher(configs, seeds, p.max_steps, best_lr=best_lr),
                planned_trials(configs, len(seeds), best_lr))
    return ReplicateSearcher(optuna_searcher(p, args), seeds, p.max_steps), (args.num_samples or 8) * len(seeds)


def study_configs(p: Plan, args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The fixed configs of a study (a grid, or a front handed over by search.reevaluate); None for an optimizer."""
    front = getattr(args, "front", None)
    if front is not None:
        from trainables.design import DesignPoint

        return [p.sampler.price(DesignPoint.from_dict(c["design"]), c["train"], c.get("preset")) for c in front]
    if args.sampler != "grid":
        return None
    from search.study import grid_configs

    return grid_configs(p.space, p.sampler)


def optuna_searcher(p: Plan, args: argparse.Namespace) -> Any:
    import optuna

    from search.searcher import BudgetConstraint, TruthfulOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    limit = args.max_param_fraction
    constraints = {"constraints_func": BudgetConstraint(limit)} if limit is not None else {}
    if args.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=args.seed, **constraints)
    else:  # multivariate + group model conditional spaces jointly; constant liar spreads concurrent suggestions
        sampler = optuna.samplers.TPESampler(seed=args.seed, multivariate=True, group=True, constant_liar=True,
                                             **constraints)
    points = [preset_params(p.space, name) for name in p.space.presets]
    return TruthfulOptunaSearch(space=p.sampler, sampler=sampler, points_to_evaluate=points or None,
                                max_steps=p.max_steps)


def resolve_study_flags(args: argparse.Namespace) -> None:
    """A study (a grid or a given front) trains every config to full fidelity: no early stopping, no sample count."""
    study = args.sampler == "grid" or getattr(args, "front", None) is not None
    if study and args.scheduler not in (None, "none"):
        raise SearchError(f"a study (--sampler grid, or a re-evaluated front) trains every design to full fidelity, "
                          f"so it cannot use early stopping; got --scheduler {args.scheduler}: drop it")
    if study and args.num_samples is not None:
        raise SearchError(f"a study trains every configuration it lists (x --seeds); got --num-samples "
                          f"{args.num_samples}: drop it, or list fewer values in the space")
    if getattr(args, "seeds_at_best_lr", False) and not study:
        raise SearchError("--seeds-at-best-lr chooses each design's lr among a grid's listed values; it needs "
                          "--sampler grid")
    args.scheduler = args.scheduler or ("none" if study else "pareto")


def run_search(args: argparse.Namespace) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*experimental.*")
    resolve_study_flags(args)
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
    searcher, trials = make_searcher(p, args)  # a grid's bad ranges fail here, before anything is created
    resolved = {"space": p.space.path, "task": p.task.name,
                **{f"run.{k}": v for k, v in vars(args).items() if k != "front"},
                **{f"settings.{k}": v for k, v in p.settings.items()}}
    parent_id = parent_run(client, p.experiment, str(search_dir), {k: json.dumps(v) if not isinstance(v, str) else v
                                                                   for k, v in resolved.items()},
                           {"space.yaml": p.space.text, "run_config.json": json.dumps(resolved, indent=2,
                                                                                       default=str)}, args.resume)
    from mlflow.entities import RunTag

    from search.contract import reference_tags

    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in reference_tags(p.reference, p.task.metric).items()])
    # The parent's plots and hypervolume history are refreshed at most every 30 s while the search runs (a refresh
    # costs ~1 s at a dozen trials, ~4 s at 1,000: per trial it dominated orchestration) and once at the end.
    callback = MlflowSearchCallback(p.tracking_uri, parent_id, p.max_steps, str(search_dir / "report"),
                                    refresh_every_s=30.0, num_samples=trials)
    print(f"search {p.name!r}: {trials} trials of {p.task.name} from {p.space.path} ({args.seeds} seed"
          f"{'s' if args.seeds != 1 else ''} per design, {args.sampler}) | MLflow run {parent_id} in {p.tracking_uri}")
    from search.tuner import fit

    fit(p, args, searcher, callback, num_samples=trials)
    from search.summary import finish

    finish(client, parent_id, p.tracking_uri, str(search_dir / "report"))
    return 0


__all__ = ["Plan", "SearchError", "SpaceSampler", "plan", "run_search"]
