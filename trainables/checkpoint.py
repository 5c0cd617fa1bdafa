"""Checkpoints of what a design trains, never the frozen backbone: small enough to keep for every trial.

A trial folder holds
    design.json           the design point (nested form) and the task/model it was trained for
    petl.safetensors      the trained parameters by name (prefix MLPs folded away: what inference needs), of the
                          checkpoint selected by the run's select_metric / select_mode (`trainables.selection`)
    selected.safetensors  while training: the selected checkpoint so far, unfolded
    resume/               while training: unfolded parameters, optimizer, scheduler and RNG state, step
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

from trainables.design import DesignPoint
from trainables.inject import Injection, fold_prefixes, inject

DESIGN_FILE, WEIGHTS_FILE, RESUME_DIR, SELECTED_FILE = "design.json", "petl.safetensors", "resume", \
    "selected.safetensors"


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


def save_resume(folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, step: int, extra: dict) -> None:
    tmp = folder / (RESUME_DIR + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(trained_state(model), str(tmp / WEIGHTS_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
                **extra}, tmp / "state.pt")
    final = folder / RESUME_DIR
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)  # a crash mid-save leaves the previous resume state intact


def load_resume(folder: Path, model: nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any] | None:
    """Restore the last resume point; returns its state dict (with `step`) or None when there is none."""
    src = folder / RESUME_DIR
    if not (src / "state.pt").is_file():
        return None
    _load_into(model, load_file(str(src / WEIGHTS_FILE)), src)
    state = torch.load(src / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    return state


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
