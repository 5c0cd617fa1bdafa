"""Functional forms, one axis of He et al. (ICLR 2022, Table 1): Δh as a function of what a site reads.

    bottleneck:  Δh = f(x W_down) W_up            adapters, parallel adapters, LoRA (f = identity)   `Bottleneck`
    per head:    Δh = f(q P_kᵀ) P_v                prefix tuning (f = softmax), multi-head PA (f = ReLU)  `head_form`
                                                  with P_k, P_v from `PrefixKV`

Where a form reads and adds is `insertion.py`; how its Δh joins h is `composition.py`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from finetune.petl.base import PetlModule
from finetune.vocabulary import Form, Init, LayerNormPos

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


def head_form(q: Tensor, pk: Tensor, pv: Tensor, act: nn.Module | None, scaling: float, dropout: float) -> Tensor:
    """Δh = f(q P_kᵀ) P_v per head; `act` None is the softmax. q: (B, H, T, d_h); pk, pv: (B, H, l, d_h) →
    (B, H, T, d_h). The weights f(q P_kᵀ) get the attention's own dropout (0 in eval), as in the official code."""
    if act is None:  # softmax(q P_kᵀ) P_v over the prefix alone: every prefix slot is attendable
        return F.scaled_dot_product_attention(q, pk, pv, dropout_p=dropout, scale=scaling)
    w = act(q @ pk.transpose(-1, -2) * scaling)  # f(q P_kᵀ): (B, H, T, l)
    if dropout > 0:  # the model passes 0 in eval
        w = F.dropout(w, dropout)
    return w @ pv
