"""Composition functions, one axis of He et al. (ICLR 2022, Table 1 and Eq. 7): how a modification Δh joins the
hidden states h it modifies. Every site composes through this file:

    add:     h ← h + Δh               adapters, the parallel adapter, prefix tuning with its gate removed
    scaled:  h ← h + s·Δh             LoRA (s = α/r), the scaled parallel adapter; s fixed or learned (`Scale`)
    gated:   h ← (1 − λ)h + λΔh       prefix tuning

The gated form is never computed as written: it is the concatenation identity of prefix tuning. At one head, with
query q, the model's keys K and values V (h = Attn(q, K, V)) and the learned P_k, P_v (l rows each),

    softmax(q [P_k; K]ᵀ) [P_v; V] = (1 − λ(q)) softmax(q Kᵀ) V + λ(q) softmax(q P_kᵀ) P_v,
    λ(q) = Σ_i exp(q·P_k,i) / (Σ_i exp(q·P_k,i) + Σ_j exp(q·K_j)),

the scaling 1/√d_h and the attention mask inside the exponentials (He et al. Eq. 7; prefix slots are always
attendable). So one fused SDPA call over the keys and values with the prefix prepended is exactly the gated
composition of h with Δh = softmax(q P_kᵀ) P_v, λ being the attention mass on the prefix. `gated_by_concatenation`
computes it that way (as Li & Liang do); `tests/test_petl_numerics.py` pins the identity with λ computed by hand.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from finetune.petl.base import PetlModule


class Scale(PetlModule):
    """s of scaled addition: a fixed buffer (scaled PA, LoRA's α/r) or one learned scalar initialised to s."""

    def __init__(self, s: float, learn: bool) -> None:
        super().__init__()
        if learn:
            self.s = torch.nn.Parameter(torch.tensor(float(s)))
        else:
            self.register_buffer("s", torch.tensor(float(s)), persistent=False)

    def forward(self) -> Tensor:
        return self.s


def compose(h: Tensor, dh: Tensor, scale: Scale | None) -> Tensor:
    """h + Δh (add, `scale` None) or h + s·Δh (scaled). h and Δh of one shape: (B, T, d) or (B, T, H, d_h)."""
    return h + dh if scale is None else h + scale() * dh


def expand_heads(p: Tensor, batch: int, heads: int, dtype: torch.dtype) -> Tensor:
    """A prefix (kv_heads, l, d_h) as (B, heads, l, d_h): shared by the batch, repeated for grouped-query heads."""
    p = p.to(dtype).unsqueeze(0).expand(batch, -1, -1, -1)  # (B, kv_heads, l, d_h)
    return p if p.shape[1] == heads else p.repeat_interleave(heads // p.shape[1], dim=1)


def prefix_mask(mask: Tensor | None, q_len: int, k_len: int, l: int, causal: bool, like: Tensor) -> Tensor | None:
    """The attention mask with l always-attendable columns in front (prefix slots ignore padding and causality)."""
    if mask is None:
        if not causal or q_len == 1:
            return None
        # SDPA had no mask because it would have used is_causal: rebuild it, bottom-right aligned as in a KV cache.
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=like.device).tril(k_len - q_len)[None, None]
    keep = True if mask.dtype == torch.bool else 0.0
    pad = torch.full((*mask.shape[:-1], l), keep, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def gated_by_concatenation(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, pk: Tensor, pv: Tensor,
                           attention_mask: Tensor | None, dropout: float, scaling: float, causal: bool,
                           **kwargs: object) -> Tensor:
    """(1 − λ) Attn(q, K, V) + λ softmax(q P_kᵀ) P_v as one SDPA call over [P_k; K], [P_v; V] (identity above).

    query: (B, H, T, d_h); key, value: (B, kv_heads, S, d_h); pk, pv: (kv_heads, l, d_h). Returns the head outputs
    (B, T, H, d_h), as transformers' SDPA function does. The attention dropout falls on the concatenated weights,
    so h and Δh see the same draw."""
    batch, kv_heads, l = query.shape[0], key.shape[1], pk.shape[1]
    key = torch.cat([expand_heads(pk, batch, kv_heads, key.dtype), key], dim=2)
    value = torch.cat([expand_heads(pv, batch, kv_heads, value.dtype), value], dim=2)
    mask = prefix_mask(attention_mask, query.shape[2], key.shape[2] - l, l, causal, query)
    return sdpa_attention_forward(module, query, key, value, mask, dropout, scaling, False, **kwargs)[0]
