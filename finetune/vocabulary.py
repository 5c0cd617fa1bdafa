"""The paper's vocabulary (He et al., ICLR 2022, arXiv 2110.04366, Table 1): the choices of each axis of the
unified view, as enums whose values are what spaces, presets, Optuna and MLflow spell. What a combination of them
means, and which combinations are allowed, is `finetune/designpoint.py`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal, get_args


class _Choice(str, Enum):
    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: Any, key: str) -> _Choice:
        try:
            return cls(str(value).lower() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError(
                f"{key} must be one of {[c.value for c in cls]}, got {value!r}"
            ) from None


class Representation(_Choice):
    """Where Δh is applied. The first three are hidden states, the last four weight matrices (LoRA's sites)."""

    HEAD_ATTN = "head_attn"  # per-head attention outputs (prefix tuning, multi-head PA)
    ATTN = "attn"  # attention sub-layer output
    FFN = "ffn"  # feed-forward sub-layer output
    QUERY = "query"  # W_q of every attention module
    VALUE = "value"  # W_v of every attention module
    FC1 = "fc1"  # first FFN matrix (gate+up for gated FFNs)
    FC2 = "fc2"  # second FFN matrix


class Form(_Choice):
    """The functional form f in Δh = f(x W_down) W_up (softmax: prefix tuning's attention over l prefix vectors)."""

    SOFTMAX = "softmax"
    RELU = "relu"
    GELU = "gelu"
    TANH = "tanh"
    SILU = "silu"
    SIGMOID = "sigmoid"
    IDENTITY = "identity"


class Insertion(_Choice):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


class Composition(_Choice):
    ADD = "add"  # h + Δh
    SCALED = "scaled"  # h + s·Δh, s fixed or learned
    GATED = "gated"  # (1 − λ)h + λΔh, λ from the prefix attention mass (prefix tuning, Eq. 7)


class Init(_Choice):
    BERT = "bert"  # all weights N(0, 0.02), biases 0
    LORA = "lora"  # W_down Kaiming-uniform, W_up = 0: Δh = 0 at step 0


class LayerNormPos(_Choice):
    IN = "in"
    OUT = "out"
    NONE = "none"


class Backbone(_Choice):
    """Which pretrained weights train: none (PETL), the biases only (BitFit), or all (full fine-tuning)."""

    FROZEN = "frozen"
    BIAS = "bias"
    FULL = "full"


SUBLAYER_SITES = (Representation.ATTN, Representation.FFN)
WEIGHT_SITES = (Representation.QUERY, Representation.VALUE, Representation.FC1, Representation.FC2)
SITES = tuple(Representation)
NONE = "none"  # the value of `<site>.form` when a site is left unmodified


# What a model's head computes, which fixes the Auto class a model is built with: the task kinds (a task is
# classification or seq2seq) and the decoder-only LM (`causal`), the default head of decoder-only families.
TaskKind = Literal["classification", "seq2seq", "causal"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)


__all__ = ["Backbone", "Composition", "Form", "Init", "Insertion", "LayerNormPos", "NONE", "Representation", "SITES",
           "SUBLAYER_SITES", "TASK_KINDS", "TaskKind", "WEIGHT_SITES"]
