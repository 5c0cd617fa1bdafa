"""Exact parameter accounting from (design point, model config) alone, before any model is built.

Three counts, because they answer three questions:
- trainable: what the optimiser updates (prefix MLP, adapter biases and LayerNorms, learned scales included). This
  must equal `sum(p.numel() for p in model.parameters() if p.requires_grad)` after `inject`.
- stored: what a trained design keeps (the prefix MLP folded into its vectors). `fraction` = stored / backbone is
  the honest search objective.
- paper: He et al.'s convention, weight matrices only (2·l·d per attention module for prefixes, 2·r·d per adapter,
  r·(d_in + d_out) per LoRA matrix, l·d for prompts), as a percentage of 409.6M for BART/mBART as the paper did.

The PETL counts are closed-form from the config's dimensions; only backbone-intrinsic numbers (its size, its bias
count for BitFit, the task head) come from instantiating the architecture on the meta device, which allocates nothing.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
)

from finetune.designpoint import DesignPoint, SiteSpec
from finetune.inject import task_head_modules
from finetune.sitemap import Dims, Proj, dims, family_of, prompt_map, width
from finetune.vocabulary import TASK_KINDS, Backbone, Insertion, LayerNormPos, Representation

# He et al. anchor every percentage on "prefix l=200 = 3.6%", i.e. N / 409.6M, for BART *and* mBART (seed spec §3.2).
PAPER_DENOMINATOR = {"bart": 409_600_000, "mbart": 409_600_000}


@dataclass(frozen=True)
class ParamCounts:
    trainable: int  # everything the optimiser updates: petl_trainable + backbone_trainable + task_head
    stored: int  # kept after training, task head excluded (it is the same for every design of a task)
    paper: int
    backbone: int  # the pretrained model, task head excluded, tied weights once
    fraction: float  # stored / backbone: the search objective
    paper_percent: float
    petl_trainable: int
    backbone_trainable: int  # BitFit's biases, or everything for full fine-tuning
    task_head: int  # trained classification head, counted apart from the PETL parameters

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


@dataclass
class _Tally:
    trainable: int = 0
    stored: int = 0
    paper: int = 0

    def add(self, trainable: int, stored: int | None = None, paper: int = 0) -> None:
        self.trainable += trainable
        self.stored += trainable if stored is None else stored
        self.paper += paper


def _scale(spec: SiteSpec) -> int:
    return 1 if spec.learn_scale else 0


def _adapter(t: _Tally, spec: SiteSpec, d_in: int, d_out: int, n: int) -> None:
    r = spec.size
    ln = {LayerNormPos.NONE: 0, LayerNormPos.IN: 2 * d_in, LayerNormPos.OUT: 2 * d_out}[spec.layernorm]
    mats = r * (d_in + d_out)  # W_down: d_in × r, W_up: r × d_out (2·r·d when both widths are d)
    t.add(n * (mats + r + d_out + ln + _scale(spec)), paper=n * mats)  # + biases, LayerNorm γ/β, learned s


def _weights(t: _Tally, spec: SiteSpec, projs: tuple[Proj, ...], dm: Dims, n: int) -> None:
    for proj in projs:
        mat = spec.size * (width(dm, proj.d_in) + width(dm, proj.d_out))  # A: r × d_in, B: d_out × r
        t.add(n * (mat + _scale(spec)), paper=n * mat)


def _prefix(t: _Tally, spec: SiteSpec, dm: Dims, n: int) -> None:
    vectors = n * 2 * spec.size * dm.kv_dim  # P_k, P_v: l × d per attention module
    mlp = spec.prefix_mlp
    if mlp:  # embedding (l × d) → Linear(d, mlp) → tanh → Linear(mlp, n·2·kv_dim), biases included
        trainable = spec.size * dm.d + dm.d * mlp + mlp + mlp * n * 2 * dm.kv_dim + n * 2 * dm.kv_dim
    else:
        trainable = vectors
    t.add(trainable + n * _scale(spec), stored=vectors + n * _scale(spec), paper=vectors)


def petl_counts(dp: DesignPoint, config: PretrainedConfig) -> _Tally:
    """The parameters the design adds, in closed form from the site map and the config's dimensions."""
    fam = family_of(config)
    t = _Tally()
    for sm in fam.stacks:
        dm, n = dims(config, sm), int(sm.n_layers(config))
        for slot in sm.attn:
            if dp.head_attn is not None:
                _prefix(t, dp.head_attn, dm, n)
            if dp.attn is not None:  # the parallel one writes the head outputs (q_dim wide), before W_o
                _adapter(t, dp.attn, dm.d, dm.q_dim if dp.attn.insertion is Insertion.PARALLEL else dm.d, n)
            for rep, proj in ((Representation.QUERY, slot.query), (Representation.VALUE, slot.value)):
                if (spec := getattr(dp, rep.value)) is not None:
                    _weights(t, spec, (proj,), dm, n)
        if dp.ffn is not None:
            _adapter(t, dp.ffn, dm.d, dm.d, n)
        for rep, projs in ((Representation.FC1, sm.ffn.fc1), (Representation.FC2, sm.ffn.fc2)):
            if (spec := getattr(dp, rep.value)) is not None:
                _weights(t, spec, projs, dm, n)
    if dp.prompt_length:
        prompt_map(fam, config.model_type, dp.prompt_length)
        t.add(dp.prompt_length * int(config.hidden_size), paper=dp.prompt_length * int(config.hidden_size))
    return t


@dataclass(frozen=True)
class BackboneStats:
    total: int  # task head excluded
    biases: int
    task_head: int


def default_task(config: PretrainedConfig) -> str:
    return family_of(config).default_task


@functools.lru_cache(maxsize=32)
def _backbone_stats(config_json: str, model_type: str, task: str) -> BackboneStats:
    config = AutoConfig.for_model(model_type, **_config_dict(config_json))
    auto = {"seq2seq": AutoModelForSeq2SeqLM, "classification": AutoModelForSequenceClassification,
            "causal": AutoModelForCausalLM}[task]
    with torch.device("meta"):
        model = auto.from_config(config)
    head_params = {id(p) for m in task_head_modules(model, family_of(config)).values() for p in m.parameters()}
    total = biases = head = 0
    for name, p in model.named_parameters():
        if id(p) in head_params:
            head += p.numel()
            continue
        total += p.numel()
        if name.rsplit(".", 1)[-1] == "bias":
            biases += p.numel()
    return BackboneStats(total=total, biases=biases, task_head=head)


def _config_dict(config_json: str) -> dict:
    data = json.loads(config_json)
    data.pop("model_type", None)
    return data


def backbone_stats(config: PretrainedConfig, task: str | None = None) -> BackboneStats:
    task = task or default_task(config)
    if task not in TASK_KINDS:
        raise ValueError(f"task kind must be one of {list(TASK_KINDS)}, got {task!r}")
    return _backbone_stats(config.to_json_string(use_diff=False), config.model_type, task)


def check_bitfit(dp: DesignPoint, config: PretrainedConfig, biases: int) -> None:
    """BitFit trains the backbone's bias vectors; refuse it on a backbone that has none (Llama, Mistral)."""
    if dp.backbone is Backbone.BIAS and biases == 0:
        raise ValueError(
            f"backbone=bias (BitFit) trains the backbone's bias vectors, but model type {config.model_type!r} has "
            "none (0 bias parameters outside the task head), so nothing would train; choose PETL sites (e.g. "
            "preset lora_attn) or backbone: full"
        )


def count_params(dp: DesignPoint, config: PretrainedConfig, task: str | None = None) -> ParamCounts:
    """Exact counts of `dp` on the model `config` describes (meta device, nothing allocated).

    Raises ValueError for an unsupported model type, prompt tuning on a decoder-only model and BitFit without biases.
    """
    stats = backbone_stats(config, task)
    check_bitfit(dp, config, stats.biases)
    t = petl_counts(dp, config)
    backbone_trainable = {Backbone.FROZEN: 0, Backbone.BIAS: stats.biases, Backbone.FULL: stats.total}[dp.backbone]
    head = stats.task_head if (dp.train_task_head or dp.backbone is Backbone.FULL) else 0
    stored = t.stored + backbone_trainable
    paper = t.paper + backbone_trainable
    denominator = PAPER_DENOMINATOR.get(config.model_type, stats.total)
    return ParamCounts(
        trainable=t.trainable + backbone_trainable + head,
        stored=stored,
        paper=paper,
        backbone=stats.total,
        fraction=stored / stats.total,
        paper_percent=100.0 * paper / denominator,
        petl_trainable=t.trainable,
        backbone_trainable=backbone_trainable,
        task_head=head,
    )
