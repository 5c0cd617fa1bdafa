"""PETL training FLOPs and model FLOP utilisation for benchmarks/gpu_check.py.

The count is the product's (`finetune.flops.micro_batch_flops`: closed form from the config, input gradients only
where the input depends on a trainable parameter, weight gradients only for trainable matrices; checked exactly
against torch's FlopCounterMode in tests/test_flops.py). MFU = FLOPs / step time / the GPU's peak dense bf16 FLOP/s
(`finetune.flops.PEAK_BF16`).
"""

from __future__ import annotations

from typing import Any

import torch

from finetune.designpoint import DesignPoint
from finetune.flops import Shape, micro_batch_flops, peak_flops
from finetune.vocabulary import Backbone

__all__ = ["add_mfu", "executed_flops", "peak_flops", "step_flops"]


def step_flops(design: DesignPoint, config: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One micro-batch of `batch`'s shape, seq2seq: forward, input and weight gradients, and full fine-tuning's."""
    rows, src = batch["input_ids"].shape
    shape = Shape(float(rows), float(src), float(batch["labels"].shape[1]))
    f = micro_batch_flops(design, config, "seq2seq", shape)
    full = micro_batch_flops(DesignPoint(backbone=Backbone.FULL), config, "seq2seq", shape)
    return {"forward": f.forward, "input_grad": f.activation_grad, "weight_grad": f.weight_grad, "total": f.total,
            "full_finetune_equivalent": full.total}


def executed_flops(engine: Any, batch: dict[str, torch.Tensor]) -> float | None:
    """torch's FlopCounterMode over one executed forward + backward (a cross-check of the analytic count)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            out = engine(**batch)
            out.loss.backward()
        engine.module.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())
    except Exception as err:  # noqa: BLE001 - a cross-check must not sink the run
        print(f"  FlopCounterMode failed: {type(err).__name__}: {err}", flush=True)
        return None


def add_mfu(r: dict[str, Any], peak: float | None) -> None:
    fl = r.get("flops")
    if not fl:
        return
    r["model_flops_per_s"] = fl["total"] / r["s_per_step"]
    r["mfu"] = r["model_flops_per_s"] / peak if peak else None
