"""Sites: where a Δh module reads (insertion) and how its output joins h (composition), attached to a frozen model
by forward hooks, so the pretrained modules and their parameter names stay untouched.

    sequential: h ← h ⊕ Δ(h)   Δ reads the sub-layer's output
    parallel:   h ← h ⊕ Δ(x)   Δ reads the sub-layer's input x (weight sites: the projection's input)

with ⊕ plain (h + Δ) or scaled (h + s·Δ) addition.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trainables.design import Composition, Init, Insertion, SiteSpec
from trainables.petl.base import PetlModule
from trainables.petl.bottleneck import Bottleneck
from trainables.petl.compose import Scale


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
    """An adapter at the attention or FFN sub-layer output (Houlsby/Pfeiffer: sequential; He et al.: parallel)."""

    def __init__(self, spec: SiteSpec, d: int) -> None:
        super().__init__()
        self.delta = Bottleneck(
            d, d, spec.size, spec.form, bias=True, init=spec.init or Init.BERT, layernorm=spec.layernorm,
            dropout=spec.dropout, dropout_on_input=False,
        )
        self.scale = Scale(spec.scale, spec.learn_scale) if spec.composition is Composition.SCALED else None
        self.parallel = spec.insertion is Insertion.PARALLEL
        self._x: Tensor | None = None

    def input_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._x = first_tensor(args, kwargs)

    def compose(self, h: Tensor, dh: Tensor) -> Tensor:
        return h + dh if self.scale is None else h + self.scale() * dh

    def output_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        h = output[0] if isinstance(output, tuple) else output
        if self.parallel:
            x, self._x = self._x, None
            if x is None:
                raise RuntimeError("parallel site: the sub-layer input was not captured before its output")
        else:
            x = h
        return _replace_output(output, self.compose(h, self.delta(x)))

    def attach(self, input_module: nn.Module, output_module: nn.Module) -> list[Any]:
        handles = [output_module.register_forward_hook(self.output_hook)]
        if self.parallel:
            handles.append(input_module.register_forward_pre_hook(self.input_hook, with_kwargs=True))
        return handles


class WeightSite(PetlModule):
    """Δ on a projection W: y = x W + s · Δ(x), LoRA for the identity form (Hu et al.; He et al. Table 1).

    `out_slice` selects the output columns of a fused projection (GPT-2's c_attn holds W_q, W_k, W_v side by side).
    """

    def __init__(self, spec: SiteSpec, d_in: int, d_out: int, out_slice: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.delta = Bottleneck(
            d_in, d_out, spec.size, spec.form, bias=False, init=spec.init or Init.LORA, dropout=spec.dropout,
            dropout_on_input=True,
        )
        self.scale = Scale(spec.scale, spec.learn_scale) if spec.composition is Composition.SCALED else None
        self.out_slice = out_slice

    def output_hook(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        dh = self.delta(args[0])
        if self.scale is not None:
            dh = self.scale() * dh
        if self.out_slice is not None:
            start, total = self.out_slice[0], output.shape[-1]
            dh = nn.functional.pad(dh, (start, total - start - dh.shape[-1]))
        return output + dh

    @torch.no_grad()
    def merged_weight(self, weight: Tensor) -> Tensor:
        """W + s·B·A for a linear form (nn.Linear layout, d_out × d_in): LoRA's merge for serving."""
        s = 1.0 if self.scale is None else self.scale()
        return weight + s * (self.delta.up.weight @ self.delta.down.weight)

    def attach(self, module: nn.Module) -> list[Any]:
        return [module.register_forward_hook(self.output_hook)]

