"""The run configuration of one trial: what to train on and how, separate from the design point being trained.

Defaults come from the task's recipe (the paper's, `trainables.tasks`); a search or the command line overrides any
field by name, checked against this dataclass so a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables.tasks import Task, get_task

ENGINES = ("auto", "torch", "deepspeed")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    task: str
    model: str | None = None  # checkpoint path or hub name; None: the task's own (a tiny config for toy tasks)
    data_dir: str | None = None  # local files in the task's format instead of the hub
    max_steps: int = 1000  # optimizer steps: the trial's fidelity unit (ASHA's time attribute)
    eval_every: int = 200  # optimizer steps between evaluations
    eval_cap: int | None = 1600  # evaluate on the first N dev examples (the official code's 1,600)
    train_limit: int | None = None  # read at most N training examples (cheap fidelities)
    batch_size: int = 32
    group_by_length: bool = False  # batch rows of similar length together (less padding; loop.BatchOrder)
    grad_accum: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_end: float = 1e-7
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 128  # source tokens (classification: the whole input)
    max_target_length: int = 128
    num_beams: int | None = None  # None: the task's; lower it for cheap evaluations
    seed: int = 42
    engine: str = "auto"  # auto: DeepSpeed on GPU, plain PyTorch on CPU
    zero_stage: int = 0
    precision: str = "fp32"
    divergence_factor: float = 10.0  # fail when the smoothed loss exceeds this × its best value
    out_dir: str | None = None  # checkpoints; None: no checkpoints
    keep_resume_state: bool = False  # keep optimizer state after a finished trial (it is large with prefix MLPs)

    def __post_init__(self) -> None:
        get_task(self.task)
        checks = [
            (self.max_steps >= 1, "max_steps must be >= 1", self.max_steps),
            (self.eval_every >= 1, "eval_every must be >= 1", self.eval_every),
            (self.batch_size >= 1, "batch_size must be >= 1", self.batch_size),
            (self.grad_accum >= 1, "grad_accum must be >= 1", self.grad_accum),
            (self.lr > 0, "lr must be > 0", self.lr),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)", self.warmup_ratio),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)", self.label_smoothing),
            (self.engine in ENGINES, f"engine must be one of {list(ENGINES)}", self.engine),
            (self.precision in PRECISIONS, f"precision must be one of {list(PRECISIONS)}", self.precision),
            (self.zero_stage in (0, 1, 2, 3), "zero_stage must be 0, 1, 2 or 3", self.zero_stage),
        ]
        for ok, rule, value in checks:
            if not ok:
                raise ValueError(f"{rule}, got {value!r}")

    @classmethod
    def for_task(cls, task_name: str, **overrides: Any) -> TrainConfig:
        """The task's recipe (optimizer, smoothing, clipping, lengths) with `overrides` on top."""
        task = get_task(task_name)
        t = task.train
        base: dict[str, Any] = dict(
            task=task.name, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay,
            warmup_ratio=t.warmup_ratio, lr_end=t.lr_end, label_smoothing=t.label_smoothing,
            max_grad_norm=t.max_grad_norm, grad_accum=t.grad_accum, batch_size=t.batch_size or 32,
            eval_cap=t.eval_cap, seed=t.seed, max_length=min(task.max_source_length, 512),
            max_target_length=task.max_target_length or 128,
        )
        if t.max_steps:
            base["max_steps"] = t.max_steps
        if t.eval_unit == "step":
            base["eval_every"] = t.eval_every
        return cls.from_mapping({**base, **overrides})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; expected some of {sorted(fields)}")
        return cls(**{k: _coerce(fields[k].type, v, k) for k, v in values.items()})

    def resolved_task(self) -> Task:
        return get_task(self.task)

    def to_params(self) -> dict[str, Any]:
        """Flat `train.*` keys for MLflow."""
        return {f"train.{k}": v for k, v in dataclasses.asdict(self).items()}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings from the command line (`--set lr=3e-4`) with YAML-typed values; `train.` prefix optional."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip().removeprefix("train.")] = yaml.safe_load(value)
    return out


def _coerce(type_name: Any, value: Any, key: str) -> Any:
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
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("tuple"):
            return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be of type {kind}, got {value!r}") from None
    return value
