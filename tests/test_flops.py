"""Training FLOPs in closed form (finetune.flops) against a hand derivation and against what autograd executes."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from finetune.cost import GpuModel
from finetune.designpoint import DesignPoint
from finetune.flops import Shape, micro_batch_flops
from finetune.inject import inject
from finetune.tiny import tiny_config

FFN_PA = {"ffn": {"form": "relu", "size": 8}}
LORA = {"form": "identity", "size": 4, "composition": "scaled", "scale": 2.0, "init": "lora"}
DESIGNS = {
    "ffn adapter": FFN_PA,
    "lora q/v": {"query": LORA, "value": LORA},
    "lora fc1/fc2": {"fc1": LORA, "fc2": LORA},
    "sequential adapters": {"attn": {"form": "relu", "size": 8, "insertion": "sequential"},
                            "ffn": {"form": "relu", "size": 8, "insertion": "sequential"}},
    "prefix (gated, mlp)": {"head_attn": {"form": "softmax", "size": 5, "composition": "gated", "prefix_mlp": 16}},
    "multi-head PA": {"head_attn": {"form": "relu", "size": 6, "composition": "add"}},
    "prompt": {"prompt": {"length": 4}},
    "bitfit": {"backbone": "bias"},
    "full": {"backbone": "full"},
}


def executed(kind: str, model_type: str, design: DesignPoint, shape: Shape) -> tuple[float, float]:
    """(forward, backward) FLOPs torch counts on one real step of a tiny model with `design` injected."""
    cfg = tiny_config(model_type, vocab_size=100, d=32, layers=2, heads=4, ffn=64)
    cfg._attn_implementation = "eager"  # the prefix function still calls SDPA: forced to its math (matmul) kernel
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForSequenceClassification
    model = auto.from_config(cfg)
    inject(model, design)
    model.train()
    rows, src, tgt = int(shape.rows), int(shape.src), int(shape.tgt)
    ids = torch.randint(5, 90, (rows, src))
    labels = torch.randint(5, 90, (rows, tgt)) if kind == "seq2seq" else torch.randint(0, 2, (rows,))
    fwd, bwd = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with fwd, sdpa_kernel(SDPBackend.MATH):
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    with bwd, sdpa_kernel(SDPBackend.MATH):
        out.loss.backward()
    return fwd.get_total_flops(), bwd.get_total_flops()


def test_a_parallel_ffn_adapter_on_roberta_by_hand() -> None:
    """d=32, FFN 64, 2 layers, 3 rows of 10 tokens, r=8; per row, in FLOPs (2 per multiply-add):
    forward: layer linear 2·(4·32·32 + 2·32·64)·10 = 163,840, attention 2·2·10·10·32 = 12,800, adapter
    2·2·32·8·10 = 10,240, ×2 layers; head 2·(32·32 + 32·2) = 2,176 -> 375,936 per row.
    backward: layer 0 has nothing trainable below it but its adapter: the adapter's weight gradients (2 × 5,120) and
    its up-projection's input gradient (5,120) = 15,360. Layer 1: input gradients of every projection (81,920 + 81,920),
    of the four attention products (4 × 6,400) and the adapter (10,240 + 10,240 weight) = 209,920. Head: input and
    weight gradients 2 × 2,176 = 4,352. Total 229,632 per row."""
    flops = micro_batch_flops(DesignPoint.from_dict(FFN_PA), tiny_config("roberta", vocab_size=100, d=32, layers=2,
                                                                         heads=4, ffn=64), "classification",
                              Shape(3, 10))
    assert flops.forward == 3 * 375_936
    assert flops.activation_grad + flops.weight_grad == 3 * 229_632
    assert flops.weight_grad == 3 * (2 * 5_120 + 2 * 5_120 + 2_176)  # adapters in both layers and the head


@pytest.mark.parametrize("name", sorted(DESIGNS))
@pytest.mark.parametrize(("kind", "model_type", "shape"), [("seq2seq", "bart", Shape(3, 10, 7)),
                                                           ("classification", "roberta", Shape(3, 10))])
def test_the_closed_form_equals_what_autograd_executes(name: str, kind: str, model_type: str, shape: Shape) -> None:
    design = DesignPoint.from_dict(DESIGNS[name])
    forward, backward = executed(kind, model_type, design, shape)
    flops = micro_batch_flops(design, tiny_config(model_type, vocab_size=100, d=32, layers=2, heads=4, ffn=64),
                              kind, shape)
    assert (flops.forward, flops.activation_grad + flops.weight_grad) == (forward, backward)


def test_a_frozen_backbone_costs_far_less_backward_than_full_fine_tuning() -> None:
    config = tiny_config("bart", vocab_size=1000, d=64, layers=6, heads=4, ffn=256)
    shape = Shape(8, 64, 32)
    frozen = micro_batch_flops(DesignPoint.from_dict(FFN_PA), config, "seq2seq", shape)
    full = micro_batch_flops(DesignPoint.from_dict({"backbone": "full"}), config, "seq2seq", shape)
    assert full.forward < frozen.forward  # only the adapters' own products
    assert full.total == pytest.approx(3 * full.forward, rel=0.02)  # the 6N rule: forward, dX and dW
    assert frozen.weight_grad < 0.02 * full.weight_grad


def test_gpu_hours_are_flops_over_peak_times_utilisation() -> None:
    gpu = GpuModel.named("NVIDIA H100 80GB HBM3", 0.5)
    assert (gpu.peak, gpu.hours(989e12 * 0.5 * 3600)) == (989e12, pytest.approx(1.0))
    assert GpuModel.named("A100").peak == 312e12
    with pytest.raises(ValueError, match=r"no peak FLOP/s known for GPU 'TPU'"):
        GpuModel.named("TPU")
    with pytest.raises(ValueError, match=r"utilisation must be in \(0, 1\], got 1.5"):
        GpuModel.named("A100", 1.5)
