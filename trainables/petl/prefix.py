"""The per-head forms: prefix tuning (softmax) and the multi-head parallel adapter (ReLU), He et al. §3 and Eq. 7.

For head i with query q = x W_q^(i) and learned P_k^(i), P_v^(i) ∈ R^{l × d_h}:

    softmax, gated:  head = (1 − λ) Attn(q, C W_k, C W_v) + λ softmax(q P_kᵀ) P_v      (prefix tuning)
    softmax, add:    head = Attn(q, C W_k, C W_v) + softmax(q P_kᵀ) P_v               (prefix, gating removed)
    f, add/scaled:   head = Attn(q, C W_k, C W_v) + s · f(q P_kᵀ) P_v                  (multi-head PA for f = ReLU)

The gated form is computed exactly as Li & Liang do, by prepending P_k, P_v to the keys and values inside one fused
SDPA call (the softmax over the concatenation *is* the λ gate). The function is registered in transformers'
attention-function registry, so every model family that routes attention through it gets prefixes without a
forked modeling file, and the KV cache never stores them (they are re-attached at every call).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from trainables.design import Composition, Form, SiteSpec
from trainables.petl.base import PetlModule
from trainables.petl.bottleneck import ACTIVATIONS
from trainables.petl.compose import Scale

ATTN_IMPLEMENTATION = "petl_sdpa"


class PrefixKV(PetlModule):
    """P_k, P_v for the `n` attention modules of one kind (encoder self, decoder self or cross attention).

    With `mlp > 0` they are reparametrised as in Li & Liang (the official code's `Prefix`): an embedding of the l
    positions → Linear(d, mlp) → tanh → Linear(mlp, n·2·kv_heads·d_h), shared across layers; only the stored
    vectors count after training (`fold`). Returns (n, 2, kv_heads, l, d_h).
    """

    def __init__(self, n: int, l: int, kv_heads: int, head_dim: int, d_model: int, mlp: int) -> None:
        super().__init__()
        self.shape = (n, 2, kv_heads, l, head_dim)
        if mlp > 0:
            self.embed = nn.Embedding(l, d_model)
            self.mlp = nn.Sequential(nn.Linear(d_model, mlp), nn.Tanh(), nn.Linear(mlp, n * 2 * kv_heads * head_dim))
            self.table = None
        else:
            self.table = nn.Parameter(torch.randn(self.shape) * 0.02)

    def forward(self) -> Tensor:
        if self.table is not None:
            return self.table
        n, two, kv, l, hd = self.shape
        flat = self.mlp(self.embed.weight)  # (l, n·2·kv·d_h)
        return flat.view(l, n, two, kv, hd).permute(1, 2, 3, 0, 4)

    @torch.no_grad()
    def fold(self) -> None:
        """Replace the MLP by the vectors it produces: what is stored and served after training."""
        if self.table is None:
            self.table = nn.Parameter(self.forward().detach().clone())
            del self.embed, self.mlp


class HeadSite(PetlModule):
    """Holds one attention module's P_k, P_v for the current forward and applies the head-level Δh."""

    def __init__(self, spec: SiteSpec) -> None:
        super().__init__()
        self.form = spec.form
        self.composition = spec.composition
        self.scale = Scale(spec.scale, spec.learn_scale) if spec.composition is Composition.SCALED else None
        self.act = None if spec.form is Form.SOFTMAX else ACTIVATIONS[spec.form]()
        self.drop = nn.Dropout(spec.dropout)
        self.prefix: tuple[Tensor, Tensor] | None = None  # (kv_heads, l, d_h) each; set by the stack's pre-hook

    def delta(self, q: Tensor, pk: Tensor, pv: Tensor, scaling: float, dropout: float) -> Tensor:
        """Δ per head. q: (B, H, T, d_h); pk, pv: (B, H, l, d_h) → (B, H, T, d_h)."""
        if self.act is None:  # softmax(q P_kᵀ) P_v over the prefix alone: every prefix slot is attendable
            return torch.nn.functional.scaled_dot_product_attention(q, pk, pv, dropout_p=dropout, scale=scaling)
        return self.drop(self.act(q @ pk.transpose(-1, -2) * scaling)) @ pv

    def compose(self, h: Tensor, dh: Tensor) -> Tensor:
        return h + dh if self.scale is None else h + self.scale() * dh


def _expand(p: Tensor, batch: int, heads: int, dtype: torch.dtype) -> Tensor:
    p = p.to(dtype).unsqueeze(0).expand(batch, -1, -1, -1)  # (B, kv_heads, l, d_h)
    return p if p.shape[1] == heads else p.repeat_interleave(heads // p.shape[1], dim=1)


def _prefix_mask(mask: Tensor | None, q_len: int, k_len: int, l: int, causal: bool, like: Tensor) -> Tensor | None:
    """The attention mask with l always-attendable columns in front (prefix slots ignore padding and causality)."""
    if mask is None:
        if not causal or q_len == 1:
            return None
        # SDPA had no mask because it would have used is_causal: rebuild it, bottom-right aligned as in a KV cache.
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=like.device).tril(k_len - q_len)[None, None]
    keep = True if mask.dtype == torch.bool else 0.0
    pad = torch.full((*mask.shape[:-1], l), keep, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def petl_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: object,
) -> tuple[Tensor, None]:
    """SDPA attention plus the head-level Δh of `module.petl_head` when it has a prefix for this call."""
    site: HeadSite | None = getattr(module, "petl_head", None)
    if site is None or site.prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    batch, heads, q_len, _ = query.shape
    pk, pv = site.prefix
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if site.composition is Composition.GATED:
        kv_heads = key.shape[1]
        key = torch.cat([_expand(pk, batch, kv_heads, key.dtype), key], dim=2)
        value = torch.cat([_expand(pv, batch, kv_heads, value.dtype), value], dim=2)
        mask = _prefix_mask(attention_mask, q_len, key.shape[2] - pk.shape[1], pk.shape[1], bool(causal), query)
        return sdpa_attention_forward(module, query, key, value, mask, dropout, scaling, False, **kwargs)
    h, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    dh = site.delta(query, _expand(pk, batch, heads, query.dtype), _expand(pv, batch, heads, query.dtype),
                    scaling, dropout)  # (B, H, T, d_h)
    return site.compose(h, dh.transpose(1, 2)), None  # SDPA returns (B, T, H, d_h)


AttentionInterface.register(ATTN_IMPLEMENTATION, petl_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
