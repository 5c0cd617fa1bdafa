"""The training settings of one trial: what to train on and how, separate from the design point being trained.

A `TrainConfig` is never assembled by hand from defaults: `finetune.runconfig.resolve_run` builds it once per
search (or single trial) from the task's recipe, the space's fixed `train:` values and `--set`, in that order, and
each trial gets it with its sampled settings applied (`RunConfig.trial_config`). Fields a recipe sets have no
default here, so the recipe is their only source; the defaults below are for settings no recipe has an opinion on.
Every field is checked by the rule in `RULES`, the same check a space's sampled range passes (`check_setting`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from finetune.metrics import get_metric
from finetune.tasks import get_task

ENGINES = ("auto", "torch", "deepspeed")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("polynomial", "linear", "cosine", "constant")  # transformers.get_scheduler names; see loop.lr_schedule
SELECT_MODES = ("max", "min")
# ZeRO-3 would partition the frozen backbone too; the PETL checkpoints, prefix folding and beam-search evaluation
# here read whole parameters, so stage 3 is refused rather than crashing at the first checkpoint. Stages 0-2 shard
# only the (small) trained state, and every one of them resumes exactly (tests/test_resume.py).
ZERO_STAGES = (0, 1, 2)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    task: str
    model: str | None = None  # checkpoint path or hub name; None: the task's own (a tiny config for toy tasks)
    data_dir: str | None = None  # local files in the task's format instead of the hub
    # From the recipe (no defaults): length, evaluation and selection
    max_steps: int  # optimizer steps: the trial's fidelity unit (ASHA's time attribute)
    eval_every: int  # optimizer steps between evaluations
    eval_cap: int | None  # evaluate on the first N dev examples (the official code's 1,600)
    select_metric: str  # "loss" (eval loss) or a score of the task's metric: picks the checkpoint that counts
    select_mode: str  # "max" | "min"
    # batches: by sentences (batch_size) or by padded tokens (max_tokens, batch_size then caps the rows)
    batch_size: int | None
    max_tokens: int | None
    batch_multiple: int
    grad_accum: int
    # optimizer and schedule
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    warmup_ratio: float
    schedule: str
    lr_end: float
    label_smoothing: float
    max_grad_norm: float
    dropout: float | None  # None: the checkpoint config's value
    attention_dropout: float | None
    max_length: int  # source tokens (classification: the whole input)
    max_target_length: int | None
    seed: int
    # Settings no recipe sets
    train_limit: int | None = None  # read at most N training examples (cheap fidelities)
    group_by_length: bool = False  # batch rows of similar length together (less padding; batching.SentenceBatches)
    num_beams: int | None = None  # None: the task's; lower it for cheap evaluations
    engine: str = "auto"  # auto: DeepSpeed on GPU, plain PyTorch on CPU
    zero_stage: int = 0
    precision: str = "fp32"
    divergence_factor: float = 10.0  # fail when the smoothed loss exceeds this × its best value
    out_dir: str | None = None  # checkpoints; None: no checkpoints
    keep_resume_state: bool = False  # keep optimizer state after a finished trial (it is large with prefix MLPs)

    def __post_init__(self) -> None:
        task = get_task(self.task)
        for f in dataclasses.fields(self):
            check_setting(f.name, getattr(self, f.name))
        if self.batch_size is None and self.max_tokens is None:
            raise ValueError("batches need batch_size (sentences) or max_tokens (padded tokens), got neither; "
                             "set one, e.g. --set batch_size=32")
        scores = select_metrics(task.metric)
        if self.select_metric not in scores:
            raise ValueError(f"select_metric must be one of {list(scores)} for task {task.name!r}, got "
                             f"{self.select_metric!r}")

    @classmethod
    def for_task(cls, task_name: str, **overrides: Any) -> TrainConfig:
        """The task's recipe with `overrides` on top (`model`, `data_dir`, `out_dir` included): one resolution."""
        from finetune.runconfig import resolve_run  # deferred on purpose: breaks the runconfig -> trainconfig cycle

        run_keys = {k: overrides.pop(k) for k in ("model", "data_dir", "out_dir") if k in overrides}
        run = resolve_run(task_name, model=run_keys.get("model"), data_dir=run_keys.get("data_dir"),
                          overrides=overrides)
        return run.trial_config({}, run_keys.get("out_dir"))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; expected some of {sorted(fields)}")
        return cls(**{k: coerce(fields[k].type, v, k) for k, v in values.items()})

    def resolved_task(self) -> Any:
        return get_task(self.task)

    def to_params(self) -> dict[str, Any]:
        """Flat `train.*` keys for MLflow."""
        return {f"train.{k}": v for k, v in dataclasses.asdict(self).items()}


def _positive(v: Any) -> bool:
    return v >= 1


def _fraction(v: Any) -> bool:
    return 0 <= v < 1


# setting -> (holds for a valid value, the rule in words). None passes wherever the field allows None.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_steps": (_positive, "must be >= 1"),
    "eval_every": (_positive, "must be >= 1"),
    "eval_cap": (_positive, "must be >= 1 (or empty for the whole dev set)"),
    "train_limit": (_positive, "must be >= 1 (or empty for the whole training set)"),
    "batch_size": (_positive, "must be >= 1"),
    "max_tokens": (_positive, "must be >= 1"),
    "batch_multiple": (_positive, "must be >= 1"),
    "grad_accum": (_positive, "must be >= 1"),
    "max_length": (_positive, "must be >= 1"),
    "max_target_length": (_positive, "must be >= 1"),
    "num_beams": (_positive, "must be >= 1"),
    "lr": (lambda v: v > 0, "must be > 0"),
    "lr_end": (lambda v: v >= 0, "must be >= 0"),
    "eps": (lambda v: v > 0, "must be > 0"),
    "weight_decay": (lambda v: v >= 0, "must be >= 0"),
    "max_grad_norm": (lambda v: v >= 0, "must be >= 0 (0: no clipping)"),
    "divergence_factor": (lambda v: v > 1, "must be > 1"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "must be two numbers in [0, 1)"),
    "warmup_ratio": (_fraction, "must be in [0, 1)"),
    "label_smoothing": (_fraction, "must be in [0, 1)"),
    "dropout": (_fraction, "must be in [0, 1)"),
    "attention_dropout": (_fraction, "must be in [0, 1)"),
    "schedule": (lambda v: v in SCHEDULES, f"must be one of {list(SCHEDULES)}"),
    "select_mode": (lambda v: v in SELECT_MODES, f"must be one of {list(SELECT_MODES)}"),
    "engine": (lambda v: v in ENGINES, f"must be one of {list(ENGINES)}"),
    "precision": (lambda v: v in PRECISIONS, f"must be one of {list(PRECISIONS)}"),
    "zero_stage": (lambda v: v in ZERO_STAGES, "must be 0, 1 or 2 (ZeRO-3 would partition the frozen backbone, which "
                   "PETL checkpoints and evaluation read whole; use 2 to shard the trained state)"),
}


def check_setting(name: str, value: Any) -> None:
    """Raise ValueError("<name> <rule>, got <value>") when `value` breaks the setting's rule."""
    rule = RULES.get(name)
    if rule is not None and value is not None and not rule[0](value):
        raise ValueError(f"{name} {rule[1]}, got {value!r}")


def select_metrics(metric_name: str) -> tuple[str, ...]:
    """What a checkpoint can be selected on: the eval loss, or one of the scores the task's metric returns."""
    return ("loss", *get_metric(metric_name).scores)


def field_kinds() -> dict[str, tuple[str, bool]]:
    """TrainConfig field -> (int | float | bool | str | pair, whether it may be empty): for spaces and `--set`."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        t = str(f.type)
        kind = ("pair" if t.startswith("tuple") else "int" if t.startswith("int") else "float"
                if t.startswith("float") else "bool" if t == "bool" else "str")
        out[f.name] = (kind, "None" in t)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings from the command line (`--set lr=3e-4`) with YAML-typed values; `train.` prefix optional."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip().removeprefix("train.")] = yaml.safe_load(value)
    return out


def coerce(type_name: Any, value: Any, key: str) -> Any:
    kind = str(type_name)
    if value is None:
        if "None" not in kind:
            raise ValueError(f"{key} cannot be empty")
        return None
    try:
        if kind == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind.startswith("tuple"):
            return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be of type {kind}, got {value!r}") from None
    return value
