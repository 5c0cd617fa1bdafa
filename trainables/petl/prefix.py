"""The per-head forms: prefix tuning (softmax) and the multi-head parallel adapter (ReLU), He et al. §3 and Eq. 7.

For head i with query q = x W_q^(i) and learned P_k^(i), P_v^(i) ∈ R^{l × d_h}:

    softmax, gated:  head = (1 − λ) Attn(q, C W_k, C W_v) + λ softmax(q P_kᵀ) P_v      (prefix tuning)
    softmax, add:    head = Attn(q, C W_k, C W_v) + softmax(q P_kᵀ) P_v               (prefix, gating removed)
    f, add/scaled:   head = Attn(q, C W_k, C W_v) + s · f(q P_kᵀ) P_v                  (multi-head PA for f = ReLU)

The gated form is computed exactly as Li & Liang do, by prepending P_k, P_v to the keys and values inside one fused
SDPA call (the softmax over the concatenation *is* the λ gate). The function is registered in transformers'
attention-function registry, so every model family that routes attention through it gets prefixes without a
forked modeling file, and the KV cache never stores them (they are re-attached at every call). The parallel
attention adapter joins the head outputs in the same function, before W_o, as in the official code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from trainables.design import Composition, Form, SiteSpec
from trainables.petl.base import PetlModule
from trainables.petl.bottleneck import ACTIVATIONS
from trainables.petl.compose import Scale
from trainables.petl.site import CallState, capture_input_hook
from trainables.sitemap import get_path

ATTN_IMPLEMENTATION = "petl_sdpa"


class PrefixKV(PetlModule):
    """P_k, P_v for the `n` attention modules of one kind (encoder self, decoder self or cross attention).

    With `mlp > 0` they are reparametrised as in Li & Liang (the official code's `Prefix`): an embedding of the l
    positions → Linear(d, mlp) → tanh → Linear(mlp, n·2·kv_heads·d_h), the last Linear the only layer-specific part;
    only the stored vectors count after training (`fold`). forward(i) returns module i's (2, kv_heads, l, d_h).

    The last Linear is kept as n row blocks Linear(mlp, 2·kv_heads·d_h) (the same parameters and values), and
    each module's prefix is computed on its own: its autograd graph is then its own (re-entrant gradient
    checkpointing backpropagates layer by layer), and every weight is read through its module's call, where
    per-module parameter hooks (DeepSpeed ZeRO-3's gathering) expect it.
    """

    def __init__(self, n: int, l: int, kv_heads: int, head_dim: int, d_model: int, mlp: int) -> None:
        super().__init__()
        self.shape = (n, 2, kv_heads, l, head_dim)
        if mlp > 0:
            self.register_buffer("index", torch.arange(l), persistent=False)
            self.embed = nn.Embedding(l, d_model)
            self.hidden = nn.Sequential(nn.Linear(d_model, mlp), nn.Tanh())
            self.out = _blocks(nn.Linear(mlp, n * 2 * kv_heads * head_dim), n)
            self.table = None
        else:
            self.table = nn.Parameter(torch.randn(self.shape) * 0.02)

    def forward(self, i: int) -> Tensor:
        if self.table is not None:
            return self.table[i]
        _, two, kv, l, hd = self.shape
        flat = self.out[i](self.hidden(self.embed(self.index)))  # (l, 2·kv·d_h)
        return flat.view(l, two, kv, hd).permute(1, 2, 0, 3)

    @torch.no_grad()
    def fold(self) -> None:
        """Replace the MLP by the vectors it produces: what is stored and served after training."""
        if self.table is None:
            self.table = nn.Parameter(torch.stack([self(i) for i in range(self.shape[0])]).clone())
            del self.embed, self.hidden, self.out, self.index


def _blocks(linear: nn.Linear, n: int) -> nn.ModuleList:
    """`linear` split by output rows into n Linear blocks with its values (its init draws, as in the official code)."""
    width = linear.out_features // n
    blocks = nn.ModuleList()
    for i in range(n):
        block = torch.nn.utils.skip_init(nn.Linear, linear.in_features, width)
        with torch.no_grad():
            block.weight.copy_(linear.weight[i * width:(i + 1) * width])
            block.bias.copy_(linear.bias[i * width:(i + 1) * width])
        blocks.append(block)
    return blocks


class HeadSite(PetlModule):
    """Holds one attention module's P_k, P_v for the current forward and applies the head-level Δh.

    The branch's attention weights get the attention's own dropout (the rate the model passes to its attention
    function: its attention dropout in training, 0 in eval), for every form, as the official code does.
    """

    def __init__(self, spec: SiteSpec) -> None:
        super().__init__()
        self.form = spec.form
        self.composition = spec.composition
        self.scale = Scale(spec.scale, spec.learn_scale) if spec.composition is Composition.SCALED else None
        self.act = None if spec.form is Form.SOFTMAX else ACTIVATIONS[spec.form]()
        self._prefix = CallState()  # (P_k, P_v), each (kv_heads, l, d_h); set by the stack's pre-hook per forward

    @property
    def prefix(self) -> tuple[Tensor, Tensor] | None:
        return self._prefix.value

    @prefix.setter
    def prefix(self, value: tuple[Tensor, Tensor] | None) -> None:
        self._prefix = CallState(value)

    def delta(self, q: Tensor, pk: Tensor, pv: Tensor, scaling: float, dropout: float) -> Tensor:
        """Δ per head. q: (B, H, T, d_h); pk, pv: (B, H, l, d_h) → (B, H, T, d_h)."""
        if self.act is None:  # softmax(q P_kᵀ) P_v over the prefix alone: every prefix slot is attendable
            return torch.nn.functional.scaled_dot_product_attention(q, pk, pv, dropout_p=dropout, scale=scaling)
        w = self.act(q @ pk.transpose(-1, -2) * scaling)  # f(q P_kᵀ): (B, H, T, l)
        if dropout > 0:  # the model passes 0 in eval
            w = torch.nn.functional.dropout(w, dropout)
        return w @ pv

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
    """SDPA attention plus the head-level Δh of `module.petl_head` (when it has a prefix for this call) and the
    parallel attention adapter `module.petl_attn`, both added to the head outputs before W_o.

    Returns (B, T, H, d_h), as transformers' SDPA function does."""
    site: HeadSite | None = getattr(module, "petl_head", None)
    if site is None or site.prefix is None:
        h, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    else:
        h = _head_site(site, module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    adapter = getattr(module, "petl_attn", None)
    if adapter is not None:  # PA at attention: Δ(x) on the concatenated head outputs, before W_o (official code)
        h = adapter(h.flatten(-2), adapter.take_input()).view(h.shape)
    return h, None


def _head_site(site: HeadSite, module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
               attention_mask: Tensor | None, dropout: float, scaling: float | None, is_causal: bool | None,
               **kwargs: object) -> Tensor:
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    batch, heads, q_len, _ = query.shape
    pk, pv = site.prefix
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if site.composition is Composition.GATED:
        kv_heads = key.shape[1]
        key = torch.cat([_expand(pk, batch, kv_heads, key.dtype), key], dim=2)
        value = torch.cat([_expand(pv, batch, kv_heads, value.dtype), value], dim=2)
        mask = _prefix_mask(attention_mask, q_len, key.shape[2] - pk.shape[1], pk.shape[1], bool(causal), query)
        return sdpa_attention_forward(module, query, key, value, mask, dropout, scaling, False, **kwargs)[0]
    h, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    dh = site.delta(query, _expand(pk, batch, heads, query.dtype), _expand(pv, batch, heads, query.dtype),
                    scaling, dropout)  # (B, H, T, d_h)
    return site.compose(h, dh.transpose(1, 2))  # SDPA returns (B, T, H, d_h)


def attn_implementation(config: object) -> str | None:
    """The attention implementation a model runs (transformers keeps it in the config's `_attn_implementation`)."""
    return getattr(config, "_attn_implementation", None)


def check_attn_implementation(config: object) -> None:
    """The per-head sites and the parallel attention adapter run inside `petl_sdpa`; fail if it was switched off."""
    current = attn_implementation(config)
    if current != ATTN_IMPLEMENTATION:
        raise RuntimeError(
            f"this model's PETL attention sites run in the attention implementation {ATTN_IMPLEMENTATION!r}, but the "
            f"model now runs {current!r} (set after injection); call model.set_attn_implementation("
            f"{ATTN_IMPLEMENTATION!r}) again"
        )


def attn_input_hook(name: str, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Pre-hook on an attention module with a parallel adapter: keep its input x for `petl_attention`."""
    check_attn_implementation(module.config)
    capture_input_hook(name, module, args, kwargs)


def prefix_hook(kind: str, layers: str, attn: str, module: nn.Module, args: Any) -> None:
    """Pre-hook on a stack: hand each layer's HeadSite its `kind` prefix for this forward (the stack's own modules,
    so a copy or a replica uses its own prefix)."""
    store = getattr(module, "petl_prefix", None)
    if store is None or kind not in store:
        return
    check_attn_implementation(module.config)
    for i, layer in enumerate(get_path(module, layers)):
        head = getattr(get_path(layer, attn), "petl_head", None)
        if head is not None:
            p = store[kind](i)  # (2, kv, l, d_h)
            head.prefix = (p[0], p[1])


AttentionInterface.register(ATTN_IMPLEMENTATION, petl_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
