"""Composition functions: how Δh joins h (He et al., Table 1). Pure functions plus the scale s as a module."""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.petl.base import PetlModule


def add(h: Tensor, dh: Tensor) -> Tensor:
    return h + dh


def scaled_add(h: Tensor, dh: Tensor, s: Tensor | float) -> Tensor:
    return h + s * dh


def gated_add(h: Tensor, dh: Tensor, lam: Tensor) -> Tensor:
    """(1 − λ)h + λΔh: prefix tuning's composition (Eq. 7); λ is the attention mass on the prefix."""
    return (1 - lam) * h + lam * dh


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
