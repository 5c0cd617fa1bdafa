"""The bottleneck form shared by adapters, parallel adapters and LoRA: Δh = f(x W_down) W_up."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from trainables.design import Form, Init, LayerNormPos
from trainables.petl.base import PetlModule

ACTIVATIONS: dict[Form, type[nn.Module]] = {
    Form.RELU: nn.ReLU,
    Form.GELU: nn.GELU,
    Form.TANH: nn.Tanh,
    Form.SILU: nn.SiLU,
    Form.SIGMOID: nn.Sigmoid,
    Form.IDENTITY: nn.Identity,
}


class Bottleneck(PetlModule):
    """Δh = LN_out( f( LN_in(x) W_down + b_down ) W_up + b_up ).

    x: (B, T, d_in) → Δh: (B, T, d_out); W_down: d_in × r, W_up: r × d_out. With f = identity, no biases and
    dropout on the input this is LoRA's B·A·x. `init=lora` zeroes W_up, so Δh = 0 at step 0.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        r: int,
        form: Form,
        *,
        bias: bool,
        init: Init,
        layernorm: LayerNormPos = LayerNormPos.NONE,
        dropout: float = 0.0,
        dropout_on_input: bool = False,
    ) -> None:
        super().__init__()
        self.ln_in = nn.LayerNorm(d_in) if layernorm is LayerNormPos.IN else None
        self.down = nn.Linear(d_in, r, bias=bias)
        self.act = ACTIVATIONS[form]()
        self.up = nn.Linear(r, d_out, bias=bias)
        self.ln_out = nn.LayerNorm(d_out) if layernorm is LayerNormPos.OUT else None
        self.drop = nn.Dropout(dropout)
        self.dropout_on_input = dropout_on_input
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: Init) -> None:
        if init is Init.LORA:
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.up.weight)
        else:
            nn.init.normal_(self.down.weight, std=0.02)
            nn.init.normal_(self.up.weight, std=0.02)
        for lin in (self.down, self.up):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.ln_in is not None:
            x = self.ln_in(x)
        if self.dropout_on_input:
            x = self.drop(x)
        z = self.act(self.down(x))  # (B, T, r)
        if not self.dropout_on_input:
            z = self.drop(z)
        dh = self.up(z)  # (B, T, d_out)
        return self.ln_out(dh) if self.ln_out is not None else dh
