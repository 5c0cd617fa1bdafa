"""Checks that run before Ray starts, each ending bad input in one line: the rule, the value received, the fix.

- `check_flags`: the numeric flags' ranges (`--max-param-fraction 0` would skip every design).
- `check_data_dir`: `--data-dir` is a folder holding the task's training and dev files.
- `check_model_fits`: the model can serve the task (a seq2seq task needs a decoder), named with where the model came
  from (`--model` or the space's `model:`).
- `check_local_resources`: a local search asks for no more CPUs or GPUs per trial than this machine has (Ray would
  otherwise wait forever for a trial that can never be placed).
- `check_available`: the weights, the tokenizer and the data can be had: a local folder, the Hugging Face cache, or
  the hub when it is reachable (`HF_HUB_OFFLINE=1` means never ask it), so an offline cluster stops in seconds
  instead of every trial failing after minutes of retries (`search/hub.py`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from finetune.sitemap import family_of
from finetune.tasks import Task, data_help
from search.names import SearchError


def check_flags(args: argparse.Namespace) -> None:
    """Each numeric flag within its range; raises SearchError naming the flag."""
    rules = [("--max-param-fraction", args.max_param_fraction, lambda v: v is None or v > 0,
              "must be > 0 (a fraction of the backbone's parameters, e.g. 0.01 for 1%)"),
             ("--num-samples", args.num_samples, lambda v: v is None or v >= 1, "must be >= 1"),
             ("--concurrency", args.concurrency, lambda v: v >= 1, "must be >= 1"),
             ("--seeds", args.seeds, lambda v: v >= 1, "must be >= 1 (replicates per design)"),
             ("--cpus-per-trial", args.cpus_per_trial, lambda v: v > 0, "must be > 0"),
             ("--gpus-per-trial", args.gpus_per_trial, lambda v: v >= 0, "must be >= 0"),
             ("--workers-per-trial", args.workers_per_trial, lambda v: v >= 1, "must be >= 1"),
             ("--max-failures", args.max_failures, lambda v: v >= 0, "must be >= 0"),
             ("--reduction-factor", args.reduction_factor, lambda v: v > 1, "must be > 1 (ASHA keeps 1/this)"),
             ("--bands-per-decade", args.bands_per_decade, lambda v: v >= 1, "must be >= 1"),
             ("--utilization", getattr(args, "utilization", 0.2), lambda v: 0 < v <= 1, "must be in (0, 1]")]
    for flag, value, ok, rule in rules:
        if not ok(value):
            raise SearchError(f"{flag} {rule}, got {value!r}")


def check_data_dir(task: Task, data_dir: str | None) -> None:
    """`--data-dir` must be a folder; what it must hold is `data_help(task)` (file names and columns)."""
    if data_dir is None:
        return
    if task.generated:
        raise SearchError(f"--data-dir is for tasks with files (en-ro, xsum, mnli, sst2), but task {task.name!r} is "
                          f"generated in memory, got --data-dir {data_dir!r}; drop --data-dir or choose --dataset")
    if not Path(data_dir).is_dir():
        raise SearchError(f"--data-dir {data_dir!r} is not a folder; it must hold {data_help(task)}")


def check_model_fits(task: Task, config: Any, model: str) -> None:
    """A model type we can place modules in, and a decoder for a sequence-to-sequence task. `model` names the model
    and where it came from (`model_phrase`)."""
    try:
        family = family_of(config)
    except ValueError as err:
        raise SearchError(f"{model}: {err}") from None
    if task.kind == "seq2seq" and family.default_task != "seq2seq":
        own = (f"a space without `model:` (task {task.name!r} then trains its tiny random BART)" if task.generated
               else f"--model {task.model} (the task's checkpoint)")
        raise SearchError(
            f"task {task.name!r} is sequence-to-sequence, but {model} is model type {config.model_type!r}, which has "
            f"no decoder; pass {own}, or --model with an encoder-decoder checkpoint (BART, mBART); the shipped "
            "spaces full and paper use each task's own checkpoint")


def model_phrase(cli_model: str | None, space_model: str | None, space_path: str, task: Task) -> str:
    """The model a search will train, and where that choice came from, for messages."""
    if cli_model:
        return f"--model {cli_model!r}"
    if space_model:
        return f"the model {space_model!r} of space {space_path}"
    return f"the task's model {task.model!r}"


def check_local_resources(args: argparse.Namespace) -> None:
    """Without --address, Ray starts on this machine: a trial needing more than it has would wait forever."""
    if args.address is not None or getattr(args, "dry_run", False):
        return
    cpus = os.cpu_count() or 1
    need_cpus = args.cpus_per_trial * args.workers_per_trial
    if need_cpus > cpus:
        raise SearchError(f"a trial needs {need_cpus:g} CPUs (--cpus-per-trial × --workers-per-trial) but this "
                          "machine "
                          f"has {cpus}, so no trial could ever start; lower --cpus-per-trial, or pass --address to "
                          "use a cluster")
    if args.gpus_per_trial > 0:
        gpus = torch.cuda.device_count()
        need = args.gpus_per_trial * args.workers_per_trial
        if need > gpus:
            raise SearchError(f"a trial needs {need:g} GPU(s) (--gpus-per-trial × --workers-per-trial) but this "
                              f"machine has {gpus}, so no trial could ever start; pass --gpus-per-trial 0 to train on "
                              "CPU, or --address to use a cluster with GPUs")


__all__ = ["check_data_dir", "check_flags", "check_local_resources", "check_model_fits", "model_phrase"]
