"""PETL training FLOPs counted honestly, and model FLOP utilisation (used by benchmarks/gpu_check.py).

Per step: forward = 2·rows·d_in·d_out for every nn.Linear call (frozen and trainable, LM head included, counted by
forward hooks on one real forward pass) plus the attention score and value matmuls (4·B·T_q·T_k·d per attention
module, T_k including the l prefix slots, the causal decoder self-attention counting only the unmasked half);
backward = activation gradients (2x the forward FLOPs of each matmul whose input needs a gradient) + weight
gradients (2x forward) only for trainable weights. MFU = FLOPs / step time / the GPU's peak dense bf16 FLOP/s.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Peak dense bf16 FLOP/s (no sparsity), by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_BF16 = (("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12),
             ("A100", 312e12), ("L40S", 362e12))


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_BF16:
        if key in name:
            return value
    return None


def linear_flops(model: nn.Module, batch: dict[str, torch.Tensor], call: Any) -> dict[str, float]:
    """Forward, activation-gradient and weight-gradient FLOPs of every nn.Linear call in one forward pass."""
    tally = {"fwd": 0.0, "act": 0.0, "wgrad": 0.0, "fwd_trainable": 0.0}

    def hook(mod: nn.Linear, args: tuple, _out: Any) -> None:
        x = args[0]
        f = 2.0 * (x.numel() // x.shape[-1]) * mod.in_features * mod.out_features
        tally["fwd"] += f
        if x.requires_grad:
            tally["act"] += f
        if mod.weight.requires_grad:
            tally["wgrad"] += f
            tally["fwd_trainable"] += f

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.enable_grad():
            out = call(**batch)
            del out
    finally:
        for h in handles:
            h.remove()
    return tally


def attention_flops(config: Any, batch: int, src: int, tgt: int, prefix: int) -> dict[str, float]:
    """Score (QKᵀ) and value (PV) matmuls of every attention module; backward = 2× forward where the gradient flows.

    The first encoder layer and the first decoder layer read the frozen embeddings, so their self-attention's
    queries, keys and values need no gradient: there only dP = dO·Vᵀ (one matmul over every unmasked key) and the
    prefix columns of dK and dV are computed. Everywhere else all four backward matmuls are needed (the prefix and the
    adapters put trainable parameters in every layer).
    """
    d = config.d_model
    enc, dec = config.encoder_layers, config.decoder_layers

    def mm(tq: float, keys: float) -> float:  # one (B, Tq, d) × (B, d, keys) product; keys summed over queries
        return 2.0 * batch * tq * keys * d

    enc_keys = src + prefix
    dec_keys = prefix + (tgt + 1) / 2  # causal: query i sees the l prefix slots and keys 0..i (mean (T+1)/2)
    enc_self, dec_self, cross = 2 * mm(src, enc_keys), 2 * mm(tgt, dec_keys), 2 * mm(tgt, enc_keys)
    fwd = enc * enc_self + dec * (dec_self + cross)
    enc_first = mm(src, enc_keys) + 2 * mm(src, prefix)  # dP, and dK/dV of the prefix slots
    dec_first = mm(tgt, dec_keys) + 2 * mm(tgt, prefix)
    act = (enc - 1) * 2 * enc_self + enc_first + (dec - 1) * 2 * dec_self + dec_first + dec * 2 * cross
    return {"fwd": fwd, "act": act, "wgrad": 0.0}


def step_flops(model: nn.Module, config: Any, batch: dict[str, torch.Tensor], call: Any, prefix: int) -> dict[str, Any]:
    lin = linear_flops(model, batch, call)
    b, s = batch["input_ids"].shape
    t = batch["labels"].shape[1]
    att = attention_flops(config, b, s, t, prefix)
    total = lin["fwd"] + lin["act"] + lin["wgrad"] + att["fwd"] + att["act"]
    full_ft = 3 * (lin["fwd"] + att["fwd"])  # what the same step would cost with every weight trainable
    return {"linear": lin, "attention": att, "total": total, "forward": lin["fwd"] + att["fwd"],
            "full_finetune_equivalent": full_ft}


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
