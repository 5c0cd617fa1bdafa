"""`finetune` as a library: train/eval mode, deep copies, undo, replicas, gradient checkpointing, BitFit edge cases,
unsupported classes."""

from __future__ import annotations

import copy
import importlib
import threading
import warnings
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BartForCausalLM,
    MBartForCausalLM,
)

from finetune.accounting import count_params
from finetune.checkpoint import load_trained, save_final
from finetune.designpoint import DesignPoint
from finetune.inject import inject
from finetune.petl.base import PetlModule, petl_named_parameters
from finetune.petl.insertion import attn_implementation
from finetune.presets import get_preset
from finetune.tiny import tiny_config

B, T = 2, 7
replicate_module = importlib.import_module("torch.nn.parallel.replicate")  # the module, not the function of that name
AUTO = {"bart": AutoModelForSeq2SeqLM, "mbart": AutoModelForSeq2SeqLM, "roberta": AutoModelForSequenceClassification,
        "bert": AutoModelForSequenceClassification, "gpt2": AutoModelForCausalLM, "llama": AutoModelForCausalLM}

# Every kind of site at once: per-head prefix with its MLP, parallel attention adapter, sequential FFN adapter, LoRA
# on W_q; and the other insertion of each, LoRA on fc2 and a prompt.
ALL_A = DesignPoint.from_dict({
    "head_attn": {"form": "softmax", "size": 3, "composition": "gated", "prefix_mlp": 8},
    "attn": {"form": "relu", "size": 4, "insertion": "parallel", "layernorm": "in", "dropout": 0.1},
    "ffn": {"form": "relu", "size": 4, "insertion": "sequential", "dropout": 0.1},
    "query": {"form": "identity", "size": 2, "composition": "scaled", "scale": 2.0, "init": "bert", "dropout": 0.1},
})
ALL_B = DesignPoint.from_dict({
    "attn": {"form": "relu", "size": 4, "insertion": "sequential", "dropout": 0.1},
    "ffn": {"form": "gelu", "size": 4, "insertion": "parallel", "composition": "scaled", "scale": 2.0,
            "learn_scale": True, "dropout": 0.1},
    "fc2": {"form": "identity", "size": 2, "init": "bert", "dropout": 0.1},
    "prompt": {"length": 3},
})


def tiny(model_type: str) -> torch.nn.Module:
    return AUTO[model_type].from_config(tiny_config(model_type))  # dropout 0.1: train and eval mode differ


def batch(model_type: str, labels: bool = False) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 128, (B, T))
    x = {"input_ids": ids}
    if model_type in ("bart", "mbart"):
        x["decoder_input_ids"] = torch.randint(5, 128, (B, 5))
        if labels:
            x["labels"] = x["decoder_input_ids"]
    elif labels:
        x["labels"] = torch.randint(0, 2, (B,)) if model_type in ("roberta", "bert") else ids
    return x


def design_for(model_type: str, dp: DesignPoint) -> DesignPoint:
    return DesignPoint.from_dict({**dp.to_dict(), "prompt": {"length": 0}}) if model_type in ("gpt2", "llama") else dp


# ---- item 4: the model keeps its mode -------------------------------------------------------------------------------
@pytest.mark.parametrize("dp", [ALL_A, ALL_B], ids=["A", "B"])
def test_inject_keeps_eval_mode_so_inference_is_deterministic(dp: DesignPoint) -> None:
    model = tiny("bart").eval()
    inject(model, dp)
    assert not any(m.training for m in model.modules())
    x = batch("bart")
    assert torch.equal(model(**x).logits, model(**x).logits)
    train = tiny("bart").train()
    inject(train, dp)
    assert all(m.training for m in train.modules())


def test_load_trained_keeps_eval_mode(tmp_path: Path) -> None:
    base = tiny("bart")
    model = copy.deepcopy(base)
    inject(model, ALL_A)
    save_final(tmp_path / "t", model, ALL_A, {}, keep_resume=False)
    fresh = base.eval()
    load_trained(fresh, tmp_path / "t")
    x = batch("bart")
    assert not any(m.training for m in fresh.modules())
    torch.testing.assert_close(fresh(**x).logits, fresh(**x).logits, atol=0, rtol=0)
    torch.testing.assert_close(fresh(**x).logits, model.eval()(**x).logits, atol=1e-6, rtol=1e-6)


# ---- item 5: deep copies and undo -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["bart", "roberta", "gpt2"])
@pytest.mark.parametrize("dp", [ALL_A, ALL_B], ids=["A", "B"])
def test_a_deep_copy_equals_its_original_and_trains_its_own_modules(model_type: str, dp: DesignPoint) -> None:
    model = tiny(model_type).train()
    inject(model, design_for(model_type, dp))
    model(**batch(model_type, labels=True)).loss  # a forward leaves this call's prefix and inputs on the sites
    twin = copy.deepcopy(model).eval()
    model.eval()
    x = batch(model_type, labels=True)
    torch.testing.assert_close(twin(**x).logits, model(**x).logits, atol=0, rtol=0)
    twin(**x).loss.backward()  # before: the copy's hooks ran the original's prefix modules, and backward failed
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for _, p in petl_named_parameters(twin))
    with torch.no_grad():
        for _, p in petl_named_parameters(twin):
            p.add_(0.05)
    assert not torch.allclose(twin(**x).logits, model(**x).logits)


@pytest.mark.parametrize("model_type", ["bart", "roberta", "gpt2"])
@pytest.mark.parametrize("dp", [ALL_A, ALL_B, get_preset("bitfit").design], ids=["A", "B", "bitfit"])
def test_remove_restores_the_untouched_model_exactly(model_type: str, dp: DesignPoint) -> None:
    model = tiny(model_type).eval()
    untouched = copy.deepcopy(model)
    inj = inject(model, design_for(model_type, dp))
    model(**batch(model_type))
    inj.remove()
    assert not [m for m in model.modules() if isinstance(m, PetlModule)]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(k.startswith("_petl") for m in model.modules() for k in vars(m))
    assert attn_implementation(model.config) == attn_implementation(untouched.config)
    ours, theirs = model.state_dict(), untouched.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == \
        {n: p.requires_grad for n, p in untouched.named_parameters()}
    x = batch(model_type)
    torch.testing.assert_close(model(**x).logits, untouched(**x).logits, atol=0, rtol=0)
    inject(model, design_for(model_type, dp))  # and it takes a design again


def test_a_second_design_on_the_same_model_is_refused() -> None:
    model = tiny("bart")
    inject(model, ALL_A)
    with pytest.raises(ValueError, match=r"^this BartForConditionalGeneration already carries PETL modules \(a design "
                                         r"was injected\); call remove\(\) on its Injection first"):
        inject(model, ALL_B)


# ---- replicas (DataParallel) and gradient checkpointing -------------------------------------------------------------
def cpu_replicas(model: torch.nn.Module, n: int, monkeypatch: pytest.MonkeyPatch) -> list[torch.nn.Module]:
    """torch's own `replicate` (what nn.DataParallel runs each step), with its CUDA broadcast swapped for copies on
    the CPU; replica j's PETL parameters are shifted by 0.1·(j + 1), so a hook that runs the original's modules
    instead of the replica's gives the original's output."""
    petl = {id(p) for _, p in petl_named_parameters(model)}

    def copy_to(t: torch.Tensor, j: int) -> torch.Tensor:
        out = t.detach().clone()
        return (out + 0.1 * (j + 1) if id(t) in petl else out).requires_grad_(t.requires_grad)

    def broadcast(tensors: list, devices: list, detach: bool) -> list:
        return [[copy_to(t, j) for t in tensors] for j in range(len(devices))]

    monkeypatch.setattr(replicate_module, "_broadcast_coalesced_reshape", broadcast)
    return replicate_module.replicate(model, list(range(n)))


def shifted_copy(model: torch.nn.Module, j: int) -> torch.nn.Module:
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for _, p in petl_named_parameters(twin):
            p.add_(0.1 * (j + 1))
    return twin


@pytest.mark.parametrize("model_type", ["bart", "roberta", "gpt2"])
@pytest.mark.parametrize("dp", [ALL_A, ALL_B], ids=["A", "B"])
def test_data_parallel_replicas_run_their_own_modules_concurrently(model_type: str, dp: DesignPoint,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(model_type).eval()
    inject(model, design_for(model_type, dp))
    replicas = cpu_replicas(model, 2, monkeypatch)
    xs = [batch(model_type) for _ in replicas]
    got: dict[int, torch.Tensor] = {}

    def run(j: int) -> None:
        with torch.no_grad():
            for _ in range(3):  # repeated, so the two threads' calls interleave
                got[j] = replicas[j](**xs[j]).logits

    threads = [threading.Thread(target=run, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for j in range(2):
        with torch.no_grad():
            torch.testing.assert_close(got[j], shifted_copy(model, j)(**xs[j]).logits, atol=1e-5, rtol=1e-5)


def enable_checkpointing(model: torch.nn.Module, **kwargs: object) -> None:
    with warnings.catch_warnings():  # transformers 5.24 renamed it activation_checkpointing_enable (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable(**kwargs)


def loss_and_grads(model: torch.nn.Module, x: dict, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)  # the same dropout masks in both runs
    loss = model(**x).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize(("model_type", "dp"), [("bart", ALL_A), ("bart", ALL_B), ("roberta", ALL_B),
                                                ("gpt2", ALL_A), ("llama", ALL_B)])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(model_type: str, dp: DesignPoint,
                                                                  reentrant: bool) -> None:
    # The recompute in backward re-runs the hooks inside each layer: the same dropout masks (checkpoint replays the
    # RNG), the same captured inputs and prefixes, so loss and every gradient match the run without it. Re-entrant
    # checkpointing backpropagates through each layer separately: each layer's prefix has its own graph for that.
    model = tiny(model_type).train()
    inject(model, design_for(model_type, dp))
    plain = copy.deepcopy(model)
    enable_checkpointing(model, gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    x = batch(model_type, labels=True)
    loss, grads = loss_and_grads(model, x, seed=1)
    ref_loss, ref_grads = loss_and_grads(plain, x, seed=1)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    assert set(grads) == set(ref_grads) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


# ---- item 6: BitFit and unsupported classes -------------------------------------------------------------------------
def test_bitfit_with_a_frozen_task_head_trains_and_counts_only_backbone_biases() -> None:
    d, f, layers = 32, 64, 2  # tiny RoBERTa
    # per layer: q, k, v, W_o (4d), attention LayerNorm (d), FFN in (f) and out (d), output LayerNorm (d);
    # plus the embedding LayerNorm (d). The classification head (dense d×d + d, out_proj d×2 + 2) stays frozen.
    backbone_biases = layers * (4 * d + d + f + d + d) + d
    for head, head_params in ((False, 0), (True, d * d + d + 2 * d + 2)):
        dp = DesignPoint.from_dict({"backbone": "bias", "train_task_head": head})
        model = tiny("roberta")
        inject(model, dp)
        counts = count_params(dp, model.config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == counts.trainable == backbone_biases + head_params
        assert counts.task_head == head_params


@pytest.mark.parametrize("model_type", ["llama", "mistral"])
def test_bitfit_on_a_backbone_without_biases_is_refused_before_anything_changes(model_type: str) -> None:
    model = AutoModelForCausalLM.from_config(tiny_config(model_type))
    with pytest.raises(ValueError, match=(
            rf"^backbone=bias \(BitFit\) trains the backbone's bias vectors, but model type '{model_type}' has none "
            r"\(0 bias parameters outside the task head\), so nothing would train; choose PETL sites \(e\.g\. preset "
            r"lora_attn\) or backbone: full$")):
        inject(model, get_preset("bitfit").design)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("cls", [BartForCausalLM, MBartForCausalLM])
def test_unsupported_model_classes_are_named_not_attribute_errors(cls: type) -> None:
    model = cls(tiny_config("bart" if cls is BartForCausalLM else "mbart"))
    with pytest.raises(ValueError, match=(
            rf"^{cls.__name__} is not supported: PETL sites of model type '{model.config.model_type}' are placed "
            r"through its 'encoder' stack \(encoder\.layers\), which \w+ does not have; use the family's "
            r"encoder-decoder model, its LM or its sequence-classification class$")):
        inject(model, get_preset("mam").design)
    assert not [m for m in model.modules() if isinstance(m, PetlModule)]


# ---- on GPUs (skipped without CUDA) ---------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dp", [ALL_A, ALL_B], ids=["A", "B"])
def test_cuda_bf16_autocast_matches_cpu_fp32_and_trains_every_site(dp: DesignPoint) -> None:
    model = tiny("bart").eval()
    inject(model, dp)
    x = batch("bart", labels=True)
    ref = model(**x).logits
    gpu = copy.deepcopy(model).cuda()
    xg = {k: v.cuda() for k, v in x.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        torch.testing.assert_close(gpu(**xg).logits.float().cpu(), ref, atol=5e-2, rtol=5e-2)
        gpu.train()
        gpu(**xg).loss.backward()  # the FFN site's own dropout and its mark on CUDA tensors
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters() if p.requires_grad)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DataParallel needs two GPUs")
@pytest.mark.parametrize("dp", [ALL_A, ALL_B], ids=["A", "B"])
def test_data_parallel_on_two_gpus_matches_one(dp: DesignPoint) -> None:
    model = tiny("bart").eval().cuda()
    inject(model, dp)
    x = {k: v.repeat(2, 1).cuda() for k, v in batch("bart", labels=True).items()}  # one half per GPU
    ref = model(**x).logits
    torch.testing.assert_close(torch.nn.DataParallel(model)(**x).logits, ref, atol=1e-4, rtol=1e-4)
