"""The training engines benchmarks/gpu_check.py times: finetune.engine's DeepSpeed (as shipped, or the
bf16-accumulating stage-0 config of before, `0b`) and plain PyTorch, each over one AdamW with the product's optimizer
groups (`finetune.loop.optimizer_groups`: decay on matrices only)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


def make_optimizer(model: nn.Module, lr: float) -> tuple[torch.optim.Optimizer, Any]:
    from finetune.loop import optimizer_groups

    opt = torch.optim.AdamW(optimizer_groups(model, 0.01), lr=lr)  # the product's groups: decay on matrices only
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def make_cfg(engine: str, precision: str, batch: int, zero_stage: int) -> Any:
    from finetune.trainconfig import TrainConfig

    # en-ro's recipe, with sentence batches of `batch` rows (the engine sizes DeepSpeed's micro-batch from it).
    return TrainConfig.for_task("en-ro", engine=engine, precision=precision, batch_size=batch, max_tokens=None,
                                zero_stage=zero_stage, lr=1e-4, max_grad_norm=1.0, grad_accum=1)


@contextlib.contextmanager
def legacy_bf16_accum() -> Any:
    """The DeepSpeed config shipped before: bf16 at ZeRO stage 0 with DeepSpeed's default bf16 gradient accumulation
    (FP16_UnfusedOptimizer), kept here to time it against the fp32-accumulating config `deepspeed_config` builds."""
    import finetune.engine as E

    original = E.deepspeed_config

    def patched(cfg: Any, micro_batch: int) -> dict[str, Any]:
        config = original(cfg, micro_batch)
        config.pop("data_types", None)
        config["zero_optimization"]["stage"] = 0
        return config

    E.deepspeed_config = patched
    try:
        yield
    finally:
        E.deepspeed_config = original


def parse_stage(token: str) -> tuple[int, bool]:
    """'1', '2' → (stage, False): the shipped config; '0b' → (0, True): the bf16-accumulating config of before."""
    token = token.strip().lower()
    return int(token.rstrip("b")), token.endswith("b")


def build_engine(mode: str, model: nn.Module, device: torch.device, batch: int, zero_stage: int, precision: str,
                 legacy: bool = False) -> Any:
    from finetune.engine import TorchEngine, make_engine

    opt, sched = make_optimizer(model, 1e-4)
    if mode == "deepspeed":
        with legacy_bf16_accum() if legacy else contextlib.nullcontext():
            return make_engine(model, opt, sched, make_cfg("deepspeed", precision, batch, zero_stage))
    return TorchEngine(model, opt, sched, make_cfg("torch", precision, batch, zero_stage), device)
