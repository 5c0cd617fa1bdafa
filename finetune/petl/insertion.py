"""Insertion, one axis of He et al. (ICLR 2022, Table 1): where each site reads its input and where its Δh joins the
frozen model, attached by forward hooks so the pretrained modules and their parameter names stay untouched.

    sequential: h ← h ⊕ Δ(h)   Δ reads the sub-layer's output
    parallel:   h ← h ⊕ Δ(x)   Δ reads the sub-layer's input x (weight sites: the projection's input)
    per head:   head ← head ⊕ Δ(q)   Δ reads the head's query, inside the attention function (`petl_attention`)

The forms Δ are `forms.py`; ⊕ is `composition.py` (every site calls `compose`; the gated per-head form is
`gated_by_concatenation`). Which module of each architecture is each representation is `finetune/sitemap.py`.

Hooks are module-level functions bound (functools.partial) to names only; each finds its PETL module through the
module it is called on. A deep copy or a DataParallel replica therefore runs its own modules, never the original's,
and values that live for one forward (a captured sub-layer input, this call's prefix) sit in `CallState`, which
copies leave empty.

The per-head sites run in an attention function registered in transformers' attention-function registry
(`petl_sdpa`), so every model family that routes attention through it gets prefixes without a forked modeling file,
fused SDPA is kept, and the KV cache never stores prefixes (they are re-attached at every call). The parallel
attention adapter joins the head outputs in the same function, before W_o, as in the official code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.pytorch_utils import Conv1D

from finetune.designpoint import SiteSpec
from finetune.petl.base import PetlModule
from finetune.petl.composition import Scale, compose, expand_heads, gated_by_concatenation
from finetune.petl.forms import ACTIVATIONS, Bottleneck, head_form
from finetune.sitemap import get_path
from finetune.vocabulary import Composition, Form, Init, Insertion

ATTN_IMPLEMENTATION = "petl_sdpa"

LINK = "_petl_link_"  # prefix of the (unregistered) attribute through which a hooked descendant finds its site


class CallState:
    """A value held for one forward (a captured input, this call's prefix): a copy or a pickle gets an empty one.

    Sites assign a fresh CallState per call instead of mutating one, so DataParallel replicas, whose attributes are
    shallow copies of the original's, never share it.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict) -> CallState:
        return CallState()

    def __reduce__(self) -> tuple:
        return (CallState, ())


def link(module: nn.Module, name: str, site: nn.Module) -> None:
    """Let `module` (a descendant of the site's host) find `site` without registering it twice."""
    object.__setattr__(module, LINK + name, site)


def linked(module: nn.Module, name: str) -> Any:
    site = module.__dict__.get(LINK + name)
    if site is None:
        raise RuntimeError(f"{type(module).__name__} has a PETL hook for {name!r} but no link to its site; "
                           "was the module moved out of the layer it was injected into?")
    return site


def first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    """The hidden states a module was called with, positionally or by the usual keyword."""
    if args and isinstance(args[0], Tensor):
        return args[0]
    for key in ("hidden_states", "x", "input"):
        if isinstance(kwargs.get(key), Tensor):
            return kwargs[key]
    raise RuntimeError(f"cannot find the hidden states among the call's arguments (kwargs {sorted(kwargs)})")


def _replace_output(output: Any, new: Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


class SublayerSite(PetlModule):
    """An adapter at the attention or FFN sub-layer (Houlsby/Pfeiffer: sequential; He et al.: parallel).

    forward(h, x) = h + Δ(x), or h + s·Δ(x) for scaled composition; x: (B, T, d_in), h: (B, T, d_out).
    A layernorm `out` is part of Δ, so scaled composition gives h + s·LN(Δ) (see docs/deviations.md).
    """

    def __init__(self, spec: SiteSpec, d_in: int, d_out: int) -> None:
        super().__init__()
        self.delta = Bottleneck(
            d_in, d_out, spec.size, spec.form, bias=True, init=spec.init or Init.BERT, layernorm=spec.layernorm,
            dropout=spec.dropout, dropout_on_input=False,
        )
        self.scale = Scale(spec.scale, spec.learn_scale) if spec.composition is Composition.SCALED else None
        self.parallel = spec.insertion is Insertion.PARALLEL
        self._x = CallState()  # the sub-layer input x of the current call (parallel insertion)
        self._dropout = (0.0, False)  # (rate, training) of the layer's functional output dropout (BART-style FFNs)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return compose(h, self.delta(x), self.scale)  # h ⊕ Δ(x)

    def take_input(self) -> Tensor:
        x, self._x = self._x.value, CallState()
        if x is None:
            raise RuntimeError("parallel site: the sub-layer input was not captured before its output")
        return x


class DroppedOut(Tensor):
    """Marks a sub-layer output that already went through the layer's functional output dropout, with Δh added after
    it (`ffn_output_hook`): the layer's own `F.dropout` call on it is then the identity. Other ops keep the mark,
    so hooks that wrap module outputs (e.g. DeepSpeed ZeRO-3's) pass it through to that dropout call."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is F.dropout:
            return args[0].as_subclass(Tensor)
        return super().__torch_function__(func, types, args, kwargs or {})


# ---- hooks: partial(hook, name, ...) registered on modules of the frozen model -------------------------------------
def sequential_output_hook(name: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """On W_o (attention, sequential): h ← h ⊕ Δ(h) on the projection's output, before the layer's dropout."""
    site = getattr(module, name)
    h = output[0] if isinstance(output, tuple) else output
    return _replace_output(output, site(h, h))


def capture_input_hook(name: str, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Pre-hook on the module whose input is x: keep x for the site's parallel Δ(x) later in the same call."""
    site = getattr(module, name, None)
    if site is None:  # an FFN site lives on the layer; its residual module reaches it through a link
        site = linked(module, name)
    site._x = CallState(first_tensor(args, kwargs))


def link_hook(name: str, paths: tuple[str, ...], dropout_attr: str | None, module: nn.Module, args: Any) -> None:
    """Pre-hook on the layer hosting an FFN site: link the site into the descendants its hooks run on (a replica's
    own site for a replica's own descendants) and read the layer's functional dropout rate for this call."""
    site = getattr(module, name)
    for path in paths:
        child = get_path(module, path)
        if child.__dict__.get(LINK + name) is not site:
            link(child, name, site)
    if dropout_attr is not None:
        site._dropout = (float(getattr(module, dropout_attr)), module.training)


def ffn_output_hook(name: str, functional_dropout: bool, module: nn.Module, args: tuple[Any, ...], out: Tensor) -> Any:
    """On the module whose output is the FFN output: compose Δh after the layer's output dropout (official code).

    Families whose FFN ends in a dropout module are hooked after it. BART-style layers drop fc2's output with
    `F.dropout(h, p=layer.dropout)`: that dropout is applied here, Δh is added, and the result is marked so the
    layer's own call is the identity (`DroppedOut`); the random draw is the same one, so seeds and gradient
    checkpointing's recompute see the same mask.
    """
    site = linked(module, name)
    h = F.dropout(out, *site._dropout) if functional_dropout else out
    y = site(h, site.take_input() if site.parallel else h)
    return y.as_subclass(DroppedOut) if functional_dropout else y


class WeightSite(PetlModule):
    """Δ on a projection W: y = x W + s · Δ(x), LoRA for the identity form (Hu et al.; He et al. Table 1).

    `out_start` places Δ in the output columns of a fused projection (GPT-2's c_attn holds W_q, W_k, W_v side by side).
    """

    def __init__(self, spec: SiteSpec, d_in: int, d_out: int, out_start: int | None = None) -> None:
        super().__init__()
        self.form = spec.form
        self.delta = Bottleneck(
            d_in, d_out, spec.size, spec.form, bias=False, init=spec.init or Init.LORA, dropout=spec.dropout,
            dropout_on_input=True,
        )
        self.scale = Scale(spec.scale, spec.learn_scale) if spec.composition is Composition.SCALED else None
        self.out_start = out_start  # first output column of this site in a fused projection, else None

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """y = x W (the projection's output, (B, T, d_host)) ⊕ Δ(x), into this site's columns of a fused y."""
        dh = self.delta(x)  # (B, T, d_out)
        if self.out_start is not None:  # zero outside the site's columns: s·0 adds nothing there
            dh = F.pad(dh, (self.out_start, y.shape[-1] - self.out_start - dh.shape[-1]))
        return compose(y, dh, self.scale)

    @torch.no_grad()
    def merged_weight(self, host: nn.Module) -> Tensor:
        """The host's weight with s·B·A folded in, in the host's own layout, for serving without the hook.

        nn.Linear stores W as (d_out, d_in) and computes x Wᵀ; GPT-2's Conv1D stores (d_in, d_out) and computes x W.
        A fused host (c_attn) gets the update in its columns for this site only. Only the identity form merges.
        """
        if self.form is not Form.IDENTITY:
            raise ValueError(
                f"merged_weight folds a linear Δ(x) = s·x AᵀBᵀ into W, but this site has form={self.form.value}, so "
                "Δ is not linear in x; only form=identity (LoRA) merges; serve the other forms with the hook"
            )
        s = 1.0 if self.scale is None else self.scale()
        delta = s * (self.delta.up.weight @ self.delta.down.weight)  # (d_out, d_in)
        conv = isinstance(host, Conv1D)
        weight = host.weight.detach().clone()
        full = weight.shape[1] if conv else weight.shape[0]
        start = self.out_start or 0
        if start + delta.shape[0] > full:
            raise ValueError(f"site output columns {start}..{start + delta.shape[0]} exceed the host's {full}")
        if conv:
            weight[:, start:start + delta.shape[0]] += delta.T.to(weight.dtype)
        else:
            weight[start:start + delta.shape[0]] += delta.to(weight.dtype)
        return weight


def weight_output_hook(name: str, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
    """On the projection: y ← y ⊕ Δ(x), into the site's columns when the projection is fused."""
    return getattr(module, name)(output, args[0])


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

    def forward(self, h: Tensor, q: Tensor, pk: Tensor, pv: Tensor, scaling: float, dropout: float) -> Tensor:
        """head ⊕ f(q P_kᵀ) P_v for add/scaled composition (gated: `gated_by_concatenation`).

        h: (B, T, H, d_h) head outputs; q: (B, H, T, d_h); pk, pv: (B, H, l, d_h)."""
        dh = head_form(q, pk, pv, self.act, scaling, dropout)  # (B, H, T, d_h)
        return compose(h, dh.transpose(1, 2), self.scale)


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
    batch, heads = query.shape[:2]
    pk, pv = site.prefix
    if site.composition is Composition.GATED:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
        return gated_by_concatenation(module, query, key, value, pk, pv, attention_mask, dropout, scaling,
                                      bool(causal), **kwargs)
    h, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    return site(h, query, expand_heads(pk, batch, heads, query.dtype), expand_heads(pv, batch, heads, query.dtype),
                scaling, dropout)  # SDPA returns h as (B, T, H, d_h)


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
