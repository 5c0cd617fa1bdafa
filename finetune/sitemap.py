"""Declarative site maps: where each modified representation lives in each supported architecture.

Paths are relative to a layer of a stack; stack paths are relative to the model's `base_model` (so the same map serves
`BartForConditionalGeneration` and `BartForSequenceClassification`). Dimensions come from the config alone, which is
what lets `finetune.accounting` price a design before any model exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

from finetune.vocabulary import TaskKind


@dataclass(frozen=True)
class Proj:
    """A projection matrix: module path (from the layer), its in/out widths, and its columns in a fused matrix."""

    path: str
    d_in: str  # a key of `Dims`
    d_out: str
    out_slice: tuple[int, int] | None = None  # (index, parts): GPT-2's c_attn is [W_q | W_k | W_v]


@dataclass(frozen=True)
class AttnSlot:
    """One attention module per layer. `kind` groups prefix sets: encoder self, decoder self, cross attention."""

    kind: str
    module: str  # the module whose forward calls the attention function; its input is the sub-layer input x
    out: str  # the output projection W_o; its output is the attention sub-layer output h
    query: Proj
    value: Proj
    d_kv: str = "d"  # width of the keys' source (cross attention reads the encoder stream)


@dataclass(frozen=True)
class FfnSlot:
    """Where the FFN sub-layer's adapter reads and joins, as in the official code (He et al.'s BART/mBART/RoBERTa).

    `residual`: the module whose input is x, the residual the layer's skip connection adds back (a parallel adapter
    reads it: the FFN input in post-LN layers, the un-normalised residual stream in pre-LN ones). `output`: the module
    whose output is the FFN output after its dropout, where Δh joins; when the layer drops that output with a
    functional `F.dropout(h, p=layer.<dropout>)` instead of a module, `dropout` names the rate's attribute and Δh
    joins right after that call.
    """

    residual: str
    output: str
    fc1: tuple[Proj, ...]
    fc2: tuple[Proj, ...]
    dropout: str | None = None


@dataclass(frozen=True)
class StackMap:
    path: str  # from base_model ("" = the base model itself)
    layers: str  # the ModuleList of layers, from the stack
    n_layers: Callable[[PretrainedConfig], int]
    ffn_dim: Callable[[PretrainedConfig], int]
    attn: tuple[AttnSlot, ...]
    ffn: FfnSlot


@dataclass(frozen=True)
class PromptMap:
    """Where prompt tuning's vectors enter (paths from `base_model`): before `norm`, the embedding LayerNorm whose
    input is token + position embeddings; `mask_host` widens the padding mask (`mask_4d`: it builds its attention mask
    from the T-long input, so it receives a finished (T + l)-long one); `decoder` widens its cross-attention mask."""

    norm: str
    mask_host: str
    at: int  # 0: in front (official, encoder-decoder); 1: after [CLS]/<s>, which the classification head reads
    mask_4d: bool = False
    decoder: str | None = None


@dataclass(frozen=True)
class FamilyMap:
    model_types: tuple[str, ...]
    stacks: tuple[StackMap, ...]
    default_task: TaskKind  # the Auto class the accounting builds on meta
    task_heads: tuple[str, ...]  # task-model modules trained with train_task_head (none for LM heads: tied)
    prompt: PromptMap | None  # None: decoder-only, no encoder input to extend
    positions: Callable[[PretrainedConfig], int | None]  # input positions the model can embed (None: no table)


@dataclass(frozen=True)
class Dims:
    d: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def dims(config: PretrainedConfig, stack: StackMap) -> Dims:
    d = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or d // heads)
    return Dims(d=d, heads=heads, kv_heads=kv, head_dim=head_dim, ffn=int(stack.ffn_dim(config)))


def width(dm: Dims, key: str) -> int:
    return {"d": dm.d, "q": dm.q_dim, "kv": dm.kv_dim, "ffn": dm.ffn}[key]


def _bart_attn(kind: str, module: str) -> AttnSlot:
    return AttnSlot(kind, module, f"{module}.out_proj", Proj(f"{module}.q_proj", "d", "q"),
                    Proj(f"{module}.v_proj", "d", "kv"))


def _bart_like(model_type: str, residual: str) -> FamilyMap:
    ffn = FfnSlot(residual, "fc2", (Proj("fc1", "d", "ffn"),), (Proj("fc2", "ffn", "d"),), dropout="dropout")
    return FamilyMap(
        model_types=(model_type,),
        stacks=(
            StackMap("encoder", "layers", lambda c: c.encoder_layers, lambda c: c.encoder_ffn_dim,
                     (_bart_attn("encoder", "self_attn"),), ffn),
            StackMap("decoder", "layers", lambda c: c.decoder_layers, lambda c: c.decoder_ffn_dim,
                     (_bart_attn("decoder", "self_attn"), _bart_attn("cross", "encoder_attn")), ffn),
        ),
        default_task="seq2seq",
        task_heads=("classification_head",),
        prompt=PromptMap("encoder.layernorm_embedding", "encoder", at=0, mask_4d=True, decoder="decoder"),
        positions=lambda c: c.max_position_embeddings,  # the table has 2 more rows, an offset the model adds itself
    )


# BART is post-LN: the FFN input (fc1's input) is the residual. mBART is pre-LN: the official parallel adapter reads
# the residual stream before final_layer_norm, un-normalised (seed spec §1.5).
_BART = _bart_like("bart", residual="fc1")
_MBART = _bart_like("mbart", residual="final_layer_norm")


def _bert_positions(config: PretrainedConfig) -> int | None:
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    # RoBERTa numbers positions from padding_idx + 1 (rows 0..pad_id unused by real tokens)
    offset = config.pad_token_id + 1 if config.model_type == "roberta" else 0
    return config.max_position_embeddings - offset


_BERT_LIKE = FamilyMap(
    model_types=("bert", "roberta"),
    stacks=(
        StackMap("encoder", "layer", lambda c: c.num_hidden_layers, lambda c: c.intermediate_size,
                 (AttnSlot("encoder", "attention.self", "attention.output.dense",
                           Proj("attention.self.query", "d", "q"), Proj("attention.self.value", "d", "kv")),),
                 # post-LN like BART: x = the attention output, the input of `intermediate`; the FFN's dropout is
                 # the module output.dropout, before the residual add and LayerNorm (official RoBERTa code)
                 FfnSlot("intermediate", "output.dropout", (Proj("intermediate.dense", "d", "ffn"),),
                         (Proj("output.dense", "ffn", "d"),))),
    ),
    default_task="classification",
    # BERT's pooler feeds its classifier; it was trained for next-sentence prediction, not this task, so it trains too.
    task_heads=("classifier", "pooler"),
    prompt=PromptMap("embeddings.LayerNorm", "", at=1),
    positions=_bert_positions,
)

# The pre-LN decoder-only families follow mBART, the paper's pre-LN model: a parallel FFN adapter reads the residual
# stream (the input of the FFN's LayerNorm) and joins after the FFN's dropout (GPT-2's mlp ends in it; Llama has none).
_GPT2 = FamilyMap(
    model_types=("gpt2",),
    stacks=(
        StackMap("", "h", lambda c: c.n_layer, lambda c: c.n_inner or 4 * c.n_embd,
                 (AttnSlot("decoder", "attn", "attn.c_proj", Proj("attn.c_attn", "d", "q", (0, 3)),
                           Proj("attn.c_attn", "d", "kv", (2, 3))),),
                 FfnSlot("ln_2", "mlp", (Proj("mlp.c_fc", "d", "ffn"),), (Proj("mlp.c_proj", "ffn", "d"),))),
    ),
    default_task="causal",
    task_heads=("score",),
    prompt=None,
    positions=lambda c: c.n_positions,
)

_LLAMA = FamilyMap(
    model_types=("llama", "mistral", "qwen2"),
    stacks=(
        StackMap("", "layers", lambda c: c.num_hidden_layers, lambda c: c.intermediate_size,
                 (AttnSlot("decoder", "self_attn", "self_attn.o_proj", Proj("self_attn.q_proj", "d", "q"),
                           Proj("self_attn.v_proj", "d", "kv")),),
                 FfnSlot("post_attention_layernorm", "mlp",
                         (Proj("mlp.gate_proj", "d", "ffn"), Proj("mlp.up_proj", "d", "ffn")),
                         (Proj("mlp.down_proj", "ffn", "d"),))),
    ),
    default_task="causal",
    task_heads=("score",),
    prompt=None,
    positions=lambda c: None,  # rotary positions: no table to overflow
)

FAMILIES: tuple[FamilyMap, ...] = (_BART, _MBART, _BERT_LIKE, _GPT2, _LLAMA)
SUPPORTED = tuple(sorted(t for f in FAMILIES for t in f.model_types))


def family_of(config: PretrainedConfig | Any) -> FamilyMap:
    model_type = getattr(config, "model_type", None)
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    raise ValueError(
        f"model type {model_type!r} has no site map, so PETL modules cannot be placed in it; supported model types: "
        f"{list(SUPPORTED)}. Add a FamilyMap to finetune/sitemap.py to support it"
    )


def prompt_map(family: FamilyMap, model_type: str, length: int) -> PromptMap:
    """Where prompt tuning's `length` vectors go in `family`. Raises ValueError for a decoder-only family, which has
    no encoder input to extend (the one home of this rule: accounting, model checks and injection all ask here)."""
    if family.prompt is None:
        raise ValueError(
            f"prompt tuning needs an encoder input to extend; model type {model_type!r} is decoder-only, "
            f"got prompt.length={length}; use head_attn with form softmax (prefix tuning) instead"
        )
    return family.prompt


def get_path(root: Any, path: str) -> Any:
    obj = root
    for part in filter(None, path.split(".")):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj
