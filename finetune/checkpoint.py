"""Checkpoints of what a design trains, never the frozen backbone: small enough to keep for every trial.

A trial folder holds
    design.json           the design point (nested form) and the task/model it was trained for
    petl.safetensors      the trained parameters by name (prefix MLPs folded away: what inference needs), of the
                          checkpoint selected by the run's select_metric / select_mode (`finetune.selection`)
    selected.safetensors  while training: the selected checkpoint so far, unfolded
    resume/               while training: what resuming needs (see `save_resume`); read back `weights_only`
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from finetune.designpoint import DesignPoint
from finetune.engine import TorchEngine, deepspeed_load_state, deepspeed_save_state, safe_load
from finetune.inject import Injection, fold_prefixes, inject

DESIGN_FILE, WEIGHTS_FILE, RESUME_DIR, STATE_FILE = "design.json", "petl.safetensors", "resume", "state.pt"
SELECTED_FILE = "selected.safetensors"


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that trains (PETL modules, task head, BitFit biases), detached, contiguous, on CPU."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], origin: Path) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise ValueError(f"{origin}: {len(missing)} saved tensor(s) have no place in this model, e.g. {missing[:3]}; "
                         "was it saved for another design or model?")
    with torch.no_grad():
        for name, tensor in state.items():
            if params[name].shape != tensor.shape:
                raise ValueError(f"{origin}: {name} has shape {tuple(tensor.shape)} in the file but "
                                 f"{tuple(params[name].shape)} in the model; the model config differs")
            params[name].copy_(tensor.to(params[name].dtype))


def _rank() -> int:
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_rank() if dist else 0


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def rng_state() -> dict[str, Any]:
    """Every generator a training step draws from (dropout), as tensors and plain data (`weights_only`-loadable)."""
    np_state = np.random.get_state(legacy=False)
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {**np_state, "state": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                                            "pos": int(np_state["state"]["pos"])}},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state({**np_state, "state": {"key": np_state["state"]["key"].numpy().astype(np.uint32),
                                               "pos": np_state["state"]["pos"]}})
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume(folder: Path, engine: Any, step: int, extra: dict[str, Any]) -> None:
    """Write the resume point of `step`; every rank calls it. A crash at any moment leaves a complete point.

    The new point is filled in `resume.tmp/`, then swapped in by two renames (`resume/` → `resume.old/`,
    `resume.tmp/` → `resume/`); `load_resume` falls back to `resume.old/` if a crash fell between them.
    """
    tmp, final, old = (folder / f"{RESUME_DIR}{suffix}" for suffix in (".tmp", "", ".old"))
    lead = _rank() == 0
    if lead:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    client = {"step": step, "rng": rng_state(), **extra}
    if isinstance(engine, TorchEngine):
        if lead:
            save_file(trained_state(engine.module), str(tmp / WEIGHTS_FILE))
            torch.save({**engine.state_dict(), "client": client}, tmp / STATE_FILE)
    else:
        deepspeed_save_state(engine, tmp, client)
    _barrier()
    if lead:
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()


def load_resume(folder: Path, engine: Any) -> dict[str, Any] | None:
    """Restore the last resume point into `engine` (parameters, optimizer, schedule, RNG); returns its client
    state (`step`, ...) or None when there is none. Files are read `weights_only`: see `finetune.engine.safe_load`.
    """
    src = next((d for d in (folder / RESUME_DIR, folder / f"{RESUME_DIR}.old") if d.is_dir()), None)
    if src is None:
        return None
    if isinstance(engine, TorchEngine):
        _load_into(engine.module, load_file(str(src / WEIGHTS_FILE)), src)
        state = safe_load(src / STATE_FILE)
        engine.load_state_dict(state)
        client = state["client"]
    else:
        client = deepspeed_load_state(engine, src)
    set_rng_state(client["rng"])
    return client


def save_selected(folder: Path, model: nn.Module) -> None:
    """Keep the trained tensors of the checkpoint selected so far (unfolded: training goes on from them)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (SELECTED_FILE + ".tmp")
    save_file(trained_state(model), str(tmp))
    os.replace(tmp, folder / SELECTED_FILE)  # atomic: a crash mid-save keeps the previous selection


def restore_selected(folder: Path, model: nn.Module) -> None:
    """Put the selected checkpoint's tensors back into `model` (before `save_final`)."""
    _load_into(model, load_file(str(folder / SELECTED_FILE)), folder / SELECTED_FILE)


def save_final(folder: Path, model: nn.Module, design: DesignPoint, meta: dict[str, Any], keep_resume: bool) -> Path:
    """Fold the prefix MLPs and write the design beside the trained tensors; the selection file is then redundant."""
    folder.mkdir(parents=True, exist_ok=True)
    fold_prefixes(model)
    save_file(trained_state(model), str(folder / WEIGHTS_FILE))
    (folder / DESIGN_FILE).write_text(json.dumps({"design": design.to_dict(), **meta}, indent=2, default=str))
    (folder / SELECTED_FILE).unlink(missing_ok=True)
    if not keep_resume and (folder / RESUME_DIR).exists():
        shutil.rmtree(folder / RESUME_DIR)
    return folder


def read_design(folder: str | Path) -> tuple[DesignPoint, dict[str, Any]]:
    data = json.loads((Path(folder) / DESIGN_FILE).read_text())
    return DesignPoint.from_dict(data.pop("design")), data


def load_trained(model: nn.Module, folder: str | Path) -> Injection:
    """Put a saved design onto a fresh base model (same architecture) for inference."""
    folder = Path(folder)
    design, _ = read_design(folder)
    inj = inject(model, design)
    fold_prefixes(model)
    _load_into(model, load_file(str(folder / WEIGHTS_FILE)), folder)
    return inj
