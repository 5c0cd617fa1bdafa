"""The one place a training engine is built: DeepSpeed (ZeRO stage, bf16/fp16 from the run config) or plain PyTorch.

Both expose the same four calls the loop uses: `engine(**batch)`, `engine.backward(loss)`, `engine.step()` (an
optimizer step only at a gradient-accumulation boundary, with clipping) and `engine.module`. What a resumed trial
needs beyond its parameters is `TorchEngine.state_dict()` or, for DeepSpeed, its own checkpoint API
(`deepspeed_save_state`: the fp32 master copy, ZeRO shards, schedule, loss scale); `finetune.checkpoint` writes
both into a trial's resume folder. Every such file is read back with `safe_load` (`weights_only=True`): resume state
lives in shared storage, and an unpickled file there would run code on every worker that resumes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finetune.trainconfig import TrainConfig


class TorchEngine:
    """Plain PyTorch with the DeepSpeed engine's call pattern (accumulation and clipping inside `step`)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig,
                 device: torch.device) -> None:
        self.module, self.optimizer, self.scheduler = model.to(device), optimizer, scheduler
        self.accum, self.max_norm, self.micro = cfg.grad_accum, cfg.max_grad_norm, 0
        self.device = device
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None

    def __call__(self, **batch: Any) -> Any:
        ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
               else contextlib.nullcontext())
        with ctx:
            return self.module(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        loss = loss / self.accum
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self) -> None:
        self.micro += 1
        if self.micro % self.accum:
            return
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.max_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


    def state_dict(self) -> dict[str, Any]:
        """What the parameters alone do not hold: optimizer moments, schedule position, loss scale, micro-step."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None, "micro": self.micro}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.micro = state["micro"]


DS_TAG = "deepspeed"


def _deepspeed_safe_globals() -> list[Any]:
    """The plain-data classes DeepSpeed's optimizer checkpoints pickle (loss scalers, the ZeRO stage enum, the
    fragment addresses of bf16/ZeRO flat buffers): allow-listed for `weights_only` loading; nothing else is."""
    # deferred on purpose: DeepSpeed loads only for DeepSpeed checkpoints
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str | Path, map_location: Any = None) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain containers only, so a planted pickle cannot run code.

    Raises ValueError naming the file when it holds anything else.
    """
    allowed = _deepspeed_safe_globals() if "deepspeed" in sys.modules else []
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        why = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "not a tensor file")
        raise ValueError(f"{path}: resume state holds more than tensors and plain data ({why[:160]}); refusing to "
                         "unpickle it. Delete the trial's resume/ folder to restart the trial from step 0") from None


def _use_safe_loading(engine: Any) -> None:
    """Adapter: DeepSpeed's TorchCheckpointEngine loads with `weights_only=False`; swap in one that does not.

    `checkpoint_engine` is the attribute every non-MoE `load_checkpoint` path reads files through;
    tests/test_resume.py plants a pickle in a DeepSpeed checkpoint and fails if DeepSpeed stops reading through it.
    """
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine  # deferred on purpose: DeepSpeed runs only

    class SafeCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location: Any = None) -> Any:
            return safe_load(path, map_location)

    if type(engine.checkpoint_engine) is not TorchCheckpointEngine:
        raise RuntimeError(f"DeepSpeed checkpoint engine {type(engine.checkpoint_engine).__name__} is not "
                           "TorchCheckpointEngine; its loads would not be weights_only")
    engine.checkpoint_engine = SafeCheckpointEngine()


def deepspeed_save_state(engine: Any, folder: Path, client_state: dict[str, Any]) -> None:
    """DeepSpeed's own checkpoint API: the module without its frozen backbone, the ZeRO/bf16 optimizer with its
    fp32 master partitions, the LR schedule, the loss scale. Every rank calls it (ZeRO writes one shard per rank).

    Restoring only the module and the wrapped torch optimizer leaves the master copy at the initial weights, and
    the next step overwrites the restored ones: resumed trials silently restarted (issue 12).
    """
    engine.save_checkpoint(str(folder), tag=DS_TAG, client_state={"petl": client_state},
                           exclude_frozen_parameters=True)


def deepspeed_load_state(engine: Any, folder: Path) -> dict[str, Any]:
    """Restore what `deepspeed_save_state` wrote, reading every file with `weights_only=True`; returns client_state."""
    _use_safe_loading(engine)
    path, client = engine.load_checkpoint(str(folder), tag=DS_TAG, load_module_strict=False)
    if path is None:
        raise ValueError(f"{folder}: no DeepSpeed checkpoint tagged {DS_TAG!r}; delete the trial's resume/ folder "
                         "to restart the trial from step 0")
    return client["petl"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_single_process_dist() -> None:
    """DeepSpeed needs a process group; one local rank, on a free port so concurrent trials never clash."""
    import deepspeed  # deferred on purpose: DeepSpeed runs only

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, verbose=False)


def deepspeed_config(cfg: TrainConfig, micro_batch: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": {"stage": cfg.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.precision == "bf16":
        config["bf16"] = {"enabled": True}
        if cfg.zero_stage <= 1:
            # At stage 0 DeepSpeed wraps a bf16 model in FP16_UnfusedOptimizer, which accumulates micro-batch
            # gradients in bf16 (8 mantissa bits). Stage 1 with fp32 accumulation selects its BF16_Optimizer:
            # fp32 gradients and master weights. On one GPU stage 1 partitions nothing, so this costs no memory.
            config["zero_optimization"]["stage"] = 1
            config["data_types"] = {"grad_accum_dtype": "fp32"}
    elif cfg.precision == "fp16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return config


def make_engine(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig) -> Any:
    use_ds = cfg.engine == "deepspeed" or (cfg.engine == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not use_ds:
        return TorchEngine(model, optimizer, scheduler, cfg, device)
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed  # deferred on purpose: after DS_ACCELERATOR is set, and only for DeepSpeed runs

    # The shared-memory allreduce op only helps multi-rank CPU runs; skipping its JIT build saves ~50 s per machine.
    comm = sys.modules.get("deepspeed.comm.torch")
    if comm is not None and not torch.cuda.is_available():
        comm.build_shm_op = lambda: None
    _init_single_process_dist()
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        # Under token batching (batch_size empty) the micro-batch varies; DeepSpeed's figure only sizes its own data
        # loader, which the loop does not use, so any fixed value is consistent.
        config=deepspeed_config(cfg, cfg.batch_size or 1),
    )
    return engine
