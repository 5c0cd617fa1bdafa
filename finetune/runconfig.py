"""The run configuration: every training setting of a search (or of one trial), resolved once, in one order.

Layers, later wins, each checked by name and type (a typo is an error, not an ignored setting):
1. `recipe`: the task's training recipe (`finetune.tasks.Recipe`, the paper's; lengths from the task);
2. `space`: the fixed values under the space's `train:` (sampled ranges stay in the space, see `sampled`);
3. `--set`: the command line (`--set lr=3e-4`; the single-trial command's `--max-steps` and `--eval-every` too).

Then the schedule is made concrete, in optimizer steps, because steps are the search's fidelity unit:
- length: `max_steps`, or `epochs` × steps per epoch; a layer that sets one of them replaces the other;
- evaluation interval: `eval_every` steps, or `eval_epochs` × steps per epoch, replacing each other likewise;
- steps per epoch = training rows // (batch_size × workers) // grad_accum, from the rows a trial will read: local
  files are read and counted (which also validates them), hub datasets use the sizes the task records with their
  source, generated tasks their generated size. Epochs need sentence batches: with `max_tokens` the number of
  batches depends on token lengths, so such a run states its length in steps.

The result is a frozen `RunConfig`: the resolved `TrainConfig` (sampled settings at their resolved value), where each
setting came from, the data it will read and how the schedule was derived. A search builds it once before Ray
starts and every trial gets `run.trial_config(sampled, out_dir)`: nothing downstream re-reads a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from finetune.tasks import Task, get_task, task_names
from finetune.trainconfig import RULES, TrainConfig, check_setting, coerce, field_kinds

RESERVED = ("task", "model", "data_dir", "out_dir")  # what a run is, not how it trains: never a layer's setting
LENGTH_KEYS, INTERVAL_KEYS = ("max_steps", "epochs"), ("eval_every", "eval_epochs")
EPOCH_KEYS = {"epochs": ("float", False), "eval_epochs": ("float", False)}
LAYERS = ("recipe", "space", "--set")


def setting_kinds() -> dict[str, tuple[str, bool]]:
    """Every setting a layer may give -> (kind, may be empty): TrainConfig's fields and the two epoch forms."""
    kinds = {k: v for k, v in field_kinds().items() if k not in RESERVED}
    return {**kinds, **EPOCH_KEYS}


@dataclass(frozen=True)
class DataPlan:
    """What a trial will read: where from, how many rows, and how the count was obtained."""

    source: str  # "generated" | "local" | "hub"
    where: str  # the training file, the hub dataset, or the generator
    train_rows: int  # rows a trial trains on (after train_limit)
    eval_rows: int  # dev rows each evaluation scores (after eval_cap)
    basis: str  # "counted", or where the recorded hub size comes from


@dataclass(frozen=True)
class RunConfig:
    train: TrainConfig  # resolved; a sampled setting holds its resolved (unsampled) value here
    origin: Mapping[str, str]  # setting -> the layer that set it ("recipe", "space", "--set"), "default" (no layer
    # sets it: TrainConfig's default) or "space (sampled)" (each trial's own value; `train` holds the resolved one)
    data: DataPlan
    length: str  # how max_steps was reached, in words
    interval: str  # how eval_every was reached
    world: int = 1  # workers per trial: a global batch is batch_size × world rows
    sampled: tuple[str, ...] = ()  # settings the space samples per trial

    @property
    def task(self) -> Task:
        return get_task(self.train.task)

    def trial_config(self, sampled: Mapping[str, Any], out_dir: str | None) -> TrainConfig:
        """The one TrainConfig of a trial: the resolved settings with the trial's sampled values and its folder."""
        # `seed` is set per trial by replicate seeds (search/replicates.py), never sampled
        unexpected = sorted(set(sampled) - set(self.sampled) - {"seed"})
        if unexpected:
            raise ValueError(f"settings {unexpected} were not declared as sampled when the run was resolved "
                             f"(sampled: {list(self.sampled)})")
        kinds = field_kinds()
        values = {k: coerce(setting_type(kinds[k]), v, k) for k, v in sampled.items()}
        return dataclasses.replace(self.train, **values, out_dir=out_dir)

    def to_dict(self) -> dict[str, Any]:
        train = dataclasses.asdict(self.train)
        train.pop("out_dir")
        return {"train": train, "origin": dict(self.origin), "sampled": list(self.sampled),
                "data": dataclasses.asdict(self.data), "length": self.length, "interval": self.interval,
                "world": self.world}


def resolve_run(task_name: str, *, model: str | None = None, data_dir: str | None = None,
                space: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
                sampled: Mapping[str, Sequence[Any]] | None = None, world: int = 1) -> RunConfig:
    """Resolve recipe → space → --set for `task_name`; `sampled` maps each setting the space samples to the values
    it can take (a range's ends, a choice's options), which are checked here. Raises ValueError (one line)."""
    task = get_task(task_name)
    values, origin = merge_layers([("recipe", recipe_settings(task)), ("space", space or {}),
                                   ("--set", overrides or {})])
    sampled = dict(sampled or {})
    _check_sampled(sampled, values)
    data = plan_data(task, data_dir, values.get("train_limit"), values.get("eval_cap"), values["seed"])
    max_steps, length = _length(values, origin, data.train_rows, world)
    eval_every, interval = _interval(values, origin, data.train_rows, world)
    origin["max_steps"] = origin.get("max_steps") or origin["epochs"]
    origin["eval_every"] = origin.get("eval_every") or origin["eval_epochs"]
    settings = {k: v for k, v in values.items() if k not in EPOCH_KEYS}
    train = TrainConfig.from_mapping({**settings, "task": task.name, "model": model, "data_dir": data_dir,
                                      "max_steps": max_steps, "eval_every": eval_every})
    origin = {f.name: "space (sampled)" if f.name in sampled else origin.get(f.name, "default")
              for f in dataclasses.fields(TrainConfig) if f.name not in RESERVED}
    return RunConfig(train=train, origin=origin, data=data, length=length, interval=interval, world=world,
                     sampled=tuple(sampled))


def settings_help() -> list[str]:
    """One line per setting `--set` (or a space's `train:`) accepts: its type, its default and its rule. The default
    is the task's recipe (`recipe_settings`; one value when every task agrees, else per task, `-` where a recipe
    leaves it to its other form, e.g. epochs vs max_steps) or, for settings no recipe sets, TrainConfig's own."""
    recipes = {name: recipe_settings(get_task(name)) for name in task_names()}
    own = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    lines = []
    for key, (kind, empty) in setting_kinds().items():
        if key in own:
            default = _shown(own[key])
        else:
            values = {t: _shown(r[key]) if key in r else "-" for t, r in recipes.items()}
            default = (next(iter(values.values())) if len(set(values.values())) == 1
                       else "by task: " + ", ".join(f"{t} {v}" for t, v in values.items()))
        rule = RULES.get(key, (None, ""))[1]
        lines.append(f"{key} ({kind}{', may be null' if empty else ''}): {default}" + (f"; {rule}" if rule else ""))
    return lines


def _shown(value: Any) -> str:
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def recipe_settings(task: Task) -> dict[str, Any]:
    """Layer 1: the recipe's settings plus the task's own sequence lengths (the paper's maximum lengths)."""
    return {**task.train.settings(), "max_length": min(task.max_source_length, 512),
            "max_target_length": task.max_target_length}


def merge_layers(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply layers in order; returns (settings, setting -> layer name). Length and interval forms replace each
    other."""
    kinds = setting_kinds()
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, layer in layers:
        unknown = sorted(set(layer) - set(kinds))
        if unknown:
            reserved = [k for k in unknown if k in RESERVED]
            hint = f" ({reserved} are given by their own flags: --model, --data-dir, --out)" if reserved else ""
            raise ValueError(f"{name}: unknown training setting(s) {unknown}{hint}; expected some of "
                             f"{sorted(kinds)}")
        for group in (LENGTH_KEYS, INTERVAL_KEYS):
            given = [k for k in group if k in layer]
            if len(given) > 1:
                raise ValueError(f"{name}: set {group[0]} or {group[1]}, not both, got {given}")
            for k in group if given else ():
                values.pop(k, None), origin.pop(k, None)
        for key, value in layer.items():
            values[key] = coerce(setting_type(kinds[key]), value, key)
            check_setting(key, values[key])
            origin[key] = name
    for key in EPOCH_KEYS:
        if key in values and not values[key] > 0:
            raise ValueError(f"{key} must be > 0, got {values[key]!r}")
    return values, origin


def setting_type(kind: tuple[str, bool]) -> str:
    base = {"pair": "tuple[float, float]"}.get(kind[0], kind[0])
    return f"{base} | None" if kind[1] else base


def _check_sampled(sampled: Mapping[str, Sequence[Any]], values: Mapping[str, Any]) -> None:
    """A sampled setting must be valid at every value it can take, and must not move the schedule between trials."""
    kinds = setting_kinds()
    by_epoch = "epochs" in values or "eval_epochs" in values
    for key, candidates in sampled.items():
        if key not in kinds or key in EPOCH_KEYS:
            raise ValueError(f"train.{key}: unknown or reserved setting; expected some of "
                             f"{sorted(set(kinds) - set(EPOCH_KEYS))}")
        if key in LENGTH_KEYS + INTERVAL_KEYS:
            raise ValueError(f"train.{key} cannot be sampled: every trial of a search must share its length and "
                             "evaluation steps (the scheduler's rungs); give one value")
        if by_epoch and key in ("batch_size", "grad_accum", "train_limit"):
            raise ValueError(f"train.{key} cannot be sampled while the length or evaluation interval is in epochs: "
                             "each trial would have a different number of steps; fix it, or set max_steps and "
                             "eval_every")
        for value in candidates:
            check_setting(key, coerce(setting_type(kinds[key]), value, f"train.{key}"))


def plan_data(task: Task, data_dir: str | None, train_limit: int | None, eval_cap: int | None,
              seed: int) -> DataPlan:
    """Rows a trial will read. Local files are read in full (validating every row before any compute)."""
    from finetune import data as D  # deferred on purpose: data loads torch and tokenizers; resolving a run stays light

    def capped(n: int, cap: int | None) -> int:
        return min(n, cap) if cap else n

    if task.generated:
        return DataPlan("generated", f"generated in memory ({task.name})", capped(task.size("train"), train_limit),
                        capped(task.size("validation"), eval_cap), "generated size")
    if data_dir is not None:
        train = D.load_examples(task, "train", data_dir, limit=train_limit, seed=seed)
        dev = D.load_examples(task, "validation", data_dir, limit=eval_cap, seed=seed)
        return DataPlan("local", str(D.local_file(task, "train", data_dir)), len(train), len(dev),
                        "counted in the local files")
    return DataPlan("hub", "/".join(task.hub_dataset), capped(task.size("train"), train_limit),
                    capped(task.size("validation"), eval_cap), f"recorded size: {task.sizes_source}")


def steps_per_epoch(values: Mapping[str, Any], rows: int, world: int) -> int:
    """Optimizer steps in one pass over `rows` training rows with sentence batches (the sampler drops the tail)."""
    if values.get("max_tokens") is not None:
        raise ValueError(f"epochs need sentence batches, but max_tokens={values['max_tokens']} batches by tokens, "
                         "where the batches per epoch depend on token lengths; give max_steps and eval_every "
                         "instead (or --set max_tokens=null with a batch_size)")
    per_step = values["batch_size"] * world * values["grad_accum"]
    if rows < per_step:
        raise ValueError(f"an epoch must hold at least one optimizer step, but the training set has {rows:,} rows "
                         f"and a step reads {per_step:,} (batch_size {values['batch_size']} × {world} worker(s) × "
                         f"grad_accum {values['grad_accum']}); lower batch_size or give max_steps")
    return rows // (values["batch_size"] * world) // values["grad_accum"]


def _length(values: Mapping[str, Any], origin: Mapping[str, str], rows: int, world: int) -> tuple[int, str]:
    if "max_steps" in values:
        return values["max_steps"], f"max_steps {values['max_steps']:,} ({origin['max_steps']})"
    per = steps_per_epoch(values, rows, world)
    steps = max(1, round(values["epochs"] * per))
    return steps, (f"{values['epochs']:g} epochs ({origin['epochs']}) × {per:,} steps/epoch = {steps:,} steps "
                   f"({_per_epoch_words(values, rows, world)})")


def _interval(values: Mapping[str, Any], origin: Mapping[str, str], rows: int, world: int) -> tuple[int, str]:
    if "eval_every" in values:
        return values["eval_every"], f"every {values['eval_every']:,} steps ({origin['eval_every']})"
    per = steps_per_epoch(values, rows, world)
    steps = max(1, round(values["eval_epochs"] * per))
    return steps, f"every {values['eval_epochs']:g} epoch(s) ({origin['eval_epochs']}) = every {steps:,} steps"


def _per_epoch_words(values: Mapping[str, Any], rows: int, world: int) -> str:
    return (f"{rows:,} rows // (batch_size {values['batch_size']} × {world} worker(s)) // grad_accum "
            f"{values['grad_accum']}")


__all__ = ["DataPlan", "RunConfig", "merge_layers", "plan_data", "recipe_settings", "resolve_run", "setting_kinds",
           "setting_type", "settings_help", "steps_per_epoch"]
