"""A search's plan: everything resolved and checked from the arguments before anything starts (no Ray, no weights).

`plan(args)` loads the space, resolves the run configuration once (`finetune.runconfig.resolve_run`: task recipe →
the space's fixed `train:` values → `--set`), prices a design against the model config, places the scheduler's
rungs on the resolved evaluation steps, and returns a frozen `SearchPlan`. The driver runs it; `--dry-run` prints it;
every trial receives its `TrialContext` and builds its one `TrainConfig` from `run` with its sampled settings.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.accounting import count_params
from finetune.data import load_examples
from finetune.designpoint import DesignPoint
from finetune.models import check_lengths, config_for, resolve_model_path
from finetune.presets import load_presets
from finetune.runconfig import RunConfig, resolve_run
from finetune.tasks import Task, get_task
from finetune.trainconfig import parse_overrides
from search import contract as C
from search.branches import BranchWalker
from search.hub import check_available
from search.names import SearchError, default_name, search_name, storage_folder
from search.preflight import check_data_dir, check_flags, check_local_resources, check_model_fits, model_phrase
from search.rungs import rung_steps
from search.space import SearchSpace
from search.spacefile import load_space
from search.studyplan import grid_configs, planned_trials, replicate_seeds


class DefineByRunSpace:
    """The space as Optuna's define-by-run function: sample a design in an Optuna trial, price it exactly, return
    the trial config (constants, picklable for --resume). Not an Optuna sampler: the sampler (TPE, NSGA-II) chooses
    the values this function asks the trial for."""

    def __init__(self, space: SearchSpace, config: Any, task_kind: str) -> None:
        self.space, self.config, self.task_kind = space, config, task_kind
        self.presets = {name: p.design for name, p in load_presets().items()}

    def __call__(self, trial: Any) -> dict[str, Any]:
        design, train, preset = self.space.sample(trial)
        return self.price(design, train, preset, trial)

    def price(self, design: Any, train: dict[str, Any], preset: str | None = None, trial: Any = None
              ) -> dict[str, Any]:
        """The trial config of `design` with `train` settings, priced exactly on this search's model."""
        counts = count_params(design, self.config, self.task_kind)
        if hasattr(trial, "set_user_attr"):  # an Optuna trial (not a validation walker): kept in the study
            trial.set_user_attr("fraction", counts.fraction)
        preset = preset or next((n for n, d in self.presets.items() if d == design), None)
        return {"design": design.to_dict(), "train": train, "fraction": counts.fraction, "preset": preset,
                "counts": {"trainable": counts.trainable, "stored": counts.stored, "paper": counts.paper}}


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a search reads: the resolved run and where and how it runs (one object, frozen)."""

    run: RunConfig
    trials_dir: str  # <storage>/<name>/trials: a trial's checkpoints and resume state under its id
    results_dir: str  # <storage>/<name>/results: full-fidelity results by config hash (ResultMemo)
    storage: str
    max_param_fraction: float | None
    rerun_duplicates: bool
    cpus_per_trial: float
    gpus_per_trial: float
    workers_per_trial: int


@dataclass(frozen=True)
class Schedule:
    """Early stopping in optimizer steps; `rungs` are the evaluation steps at which rungs decide."""

    kind: str  # pareto | banded | asha | none
    max_t: int
    grace_period: int
    reduction_factor: float
    bands_per_decade: int
    rungs: tuple[int, ...]


@dataclass(frozen=True)
class SearchPlan:
    space: SearchSpace
    run: RunConfig
    define_by_run: DefineByRunSpace  # the space as Optuna's define-by-run function (`space=` of OptunaSearch)
    schedule: Schedule
    trial: TrialContext
    name: str
    storage: Path
    tracking_uri: str
    experiment: str
    num_samples: int
    concurrency: int
    max_failures: int
    address: str | None
    sampler_kind: str  # tpe | nsga2 | grid
    seed: int  # the sampler's (--seed); the training seed is run.train.seed, the first replicate's
    reference: Any = None  # search.contract.Reference: the hypervolume reference score of the task
    seeds: tuple[int, ...] = (0,)  # each design's replicate training seeds (search.studyplan.replicate_seeds)
    study: tuple[dict[str, Any], ...] | None = None  # a study's fixed configs (a grid, a given front); None: optimize
    best_lr: bool = False  # --seeds-at-best-lr
    unavailable: str | None = None  # --dry-run only: why a run would stop here (weights or data not on this machine)

    @property
    def task(self) -> Task:
        return self.run.task

    @property
    def max_steps(self) -> int:
        return self.run.train.max_steps


def plan(args: argparse.Namespace) -> SearchPlan:
    """Resolve and check everything; raises SearchError (one line) on bad input."""
    resolve_study_flags(args)
    check_flags(args)
    try:
        space = load_space(args.space)
        task = get_task(args.dataset or space.task or "toy-cls")
        check_data_dir(task, args.data_dir)
        overrides = parse_overrides(args.set)
        fixed = {k: d.values[0] for k, d in space.train.items() if d.kind == "fixed"}
        # --set wins over the space: a setting it fixes is no longer sampled
        sampled = {k: d for k, d in space.train.items() if d.kind != "fixed" and k not in overrides}
        run = resolve_run(task.name, model=args.model or space.model, data_dir=args.data_dir, space=fixed,
                          overrides=overrides, sampled={k: _candidates(d) for k, d in sampled.items()},
                          world=args.workers_per_trial)
        model_config = config_for(run.task, run.train.model)
        check_model_fits(run.task, model_config, model_phrase(args.model, space.model, space.path, run.task))
        unavailable = _availability(run, args)
        _check_lengths(run, model_config, sampled)  # before Ray starts
        schedule = _schedule(args, run)
        space = dataclasses.replace(space, train=sampled)  # fixed settings live in `run`; the sampler samples the rest
        define_by_run = DefineByRunSpace(space, model_config, run.task.kind)
        # prices one design now: the model family must fit, and the meta statistics build
        define_by_run(BranchWalker([]))
        seeds = replicate_seeds(args.seeds, run.train.seed)
        study = study_configs(args, space, define_by_run)
    except (ValueError, OSError) as err:  # OSError: a data file that is missing or unreadable
        raise SearchError(str(err)) from None
    check_local_resources(args)
    best_lr = bool(getattr(args, "seeds_at_best_lr", False))
    # Ray trials in all: designs x replicate seeds (a study: what it lists)
    trials = planned_trials(study, len(seeds), best_lr) if study is not None else (args.num_samples or 8) * len(seeds)
    name = search_name(args.name or default_name(args.space, run.task.name))
    storage = storage_folder(args.storage)
    trial = TrialContext(run=run, trials_dir=str(storage / name / "trials"),
                         results_dir=str(storage / name / "results"),
                         storage=str(storage), max_param_fraction=args.max_param_fraction,
                         rerun_duplicates=args.rerun_duplicates, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, workers_per_trial=args.workers_per_trial)
    return SearchPlan(space=space, run=run, define_by_run=define_by_run, schedule=schedule, trial=trial, name=name,
                      storage=storage, tracking_uri=args.tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}",
                      experiment=args.experiment or name, num_samples=trials, concurrency=args.concurrency,
                      max_failures=args.max_failures, address=args.address, sampler_kind=args.sampler, seed=args.seed,
                      reference=task_reference(run.task, run.train), seeds=tuple(seeds),
                      study=tuple(study) if study is not None else None, best_lr=best_lr, unavailable=unavailable)


def _check_lengths(run: RunConfig, config: Any, sampled: dict[str, Any]) -> None:
    """The resolved lengths, and the longest a sampled max_length / max_target_length can draw, fit the model."""
    longest = {k: max(_candidates(sampled[k])) if k in sampled else getattr(run.train, k)
               for k in ("max_length", "max_target_length")}
    check_lengths(run.task, config, longest["max_length"], longest["max_target_length"])


def _candidates(dim: Any) -> tuple[Any, ...]:
    """The values a sampled dimension can take that bound its validity: a range's ends, or every choice."""
    return (dim.low, dim.high) if dim.kind in ("int", "float") else tuple(dim.values)


def study_configs(args: argparse.Namespace, space: SearchSpace, define_by_run: DefineByRunSpace
                  ) -> list[dict[str, Any]] | None:
    """The fixed configs of a study (a grid, or a front handed over by search.reevaluate); None for an optimizer."""
    front = getattr(args, "front", None)
    if front is not None:
        return [define_by_run.price(DesignPoint.from_dict(c["design"]), c["train"], c.get("preset")) for c in front]
    if args.sampler != "grid":
        return None
    return grid_configs(space, define_by_run)


def resolve_study_flags(args: argparse.Namespace) -> None:
    """A study (a grid or a given front) trains every config to full fidelity: no early stopping, no sample count.
    Sets `args.scheduler` to its default ('none' for a study, else 'pareto')."""
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


def _availability(run: RunConfig, args: argparse.Namespace) -> str | None:
    """A search stops here when its weights or data cannot be had (search.hub). A --dry-run plan may be read on any
    machine, so it only reports what a run would stop on, judged without asking the hub."""
    dry = bool(getattr(args, "dry_run", False))
    try:
        check_available(run.task, resolve_model_path(run.task, run.train.model), args.data_dir, ask_hub=not dry)
    except SearchError as err:
        if not dry:
            raise
        return str(err)
    return None


def task_reference(task: Task, train: Any) -> Any:
    """The hypervolume reference score: majority class of the evaluation examples when they are local or generated
    (read once, cheaply), else chance; 0 for BLEU/ROUGE."""
    labels = None
    if task.kind == "classification" and (task.generated or train.data_dir):
        try:
            labels = [int(e["label"]) for e in load_examples(task, "validation", train.data_dir,
                                                             limit=train.eval_cap, seed=train.seed)]
        except (OSError, ValueError):  # unreadable data fails the trials with its own message; chance will do here
            labels = None
    return C.task_reference(task.name, labels)


def _schedule(args: argparse.Namespace, run: RunConfig) -> Schedule:
    """ASHA's grace period defaults to the resolved evaluation interval: a trial can only be judged where it
    reports."""
    every, max_t = run.train.eval_every, run.train.max_steps
    grace = args.grace_period if args.grace_period is not None else every
    if args.scheduler != "none" and (grace < 1 or grace % every):
        raise SearchError(f"--grace-period must be a positive multiple of the evaluation interval ({every:,} steps: "
                          f"{run.interval}), because trials report only when they evaluate; got {grace}")
    rungs = () if args.scheduler == "none" else tuple(rung_steps(max_t, grace, args.reduction_factor, every))
    return Schedule(kind=args.scheduler, max_t=max_t, grace_period=grace, reduction_factor=args.reduction_factor,
                    bands_per_decade=args.bands_per_decade, rungs=rungs)


__all__ = ["Schedule", "SearchError", "SearchPlan", "DefineByRunSpace", "TrialContext", "plan", "storage_folder"]
