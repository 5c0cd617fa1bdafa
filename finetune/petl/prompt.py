"""Prompt tuning (Lester et al.; He et al. Table 6 baseline): l trainable vectors in the encoder input.

As in the official code, the vectors join the embedding output after token and position embeddings were summed and
before the embedding LayerNorm: they get no position embedding and the real tokens keep their positions, so l never
counts against the position table. Encoder-decoder models get the prompt in front (position 0, the official code);
encoder-only models right after the first token, so the [CLS]/<s> vector the classification head reads stays first.

Hooks: the embedding LayerNorm's pre-hook inserts the vectors; the encoder's (or base model's) pre-hook widens the
padding mask to T + l; for encoder-decoder models the decoder's pre-hook widens the cross-attention mask, so
`generate()` (which calls the encoder and the decoder separately) stays correct.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from finetune.petl.base import PetlModule


class Prompt(PetlModule):
    """P ∈ R^{l × d}, N(0, 0.02) as in the official code. forward(e): (B, T, d) → (B, T + l, d), P inserted at `at`."""

    def __init__(self, l: int, d: int, at: int) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(l, d) * 0.02)
        self.at = at

    def forward(self, e: Tensor) -> Tensor:
        p = self.vectors.to(e.dtype).unsqueeze(0).expand(e.shape[0], -1, -1)
        return torch.cat([e[:, : self.at], p, e[:, self.at :]], dim=1)


def prompt_hook(name: str, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Pre-hook on the embedding LayerNorm: its input is token + position (+ token type) embeddings."""
    return (getattr(module, name)(args[0]), *args[1:])


def _bind(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
    out = dict(bound.arguments)
    out.update(out.pop("kwargs", {}) or {})
    return out


def _widen(mask: Tensor, n: int, at: int) -> Tensor:
    """Insert n attendable columns at position `at` of a 2-D padding mask (B, T) → (B, T + n)."""
    if mask.dim() != 2:
        raise ValueError(f"prompt tuning widens the 2-D padding mask (batch, tokens), got a {mask.dim()}-D mask of "
                         f"shape {tuple(mask.shape)}; pass the padding mask and let the model build the rest")
    new = torch.ones((mask.shape[0], n), dtype=mask.dtype, device=mask.device)
    return torch.cat([mask[:, :at], new, mask[:, at:]], dim=-1)


def encoder_mask_hook(l: int, at: int, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Pre-hook on an encoder that builds its mask from the T-long input embeddings (BART/mBART): hand it the
    (T + l)-long mask already in the form its attention implementation wants (transformers passes 4-D masks on)."""
    # deferred on purpose: transformers loads on use; this is where BART's own encoder builds its mask
    from transformers.masking_utils import create_bidirectional_mask

    call = _bind(module, args, kwargs)
    mask = call.get("attention_mask")
    if mask is not None:
        wide = _widen(mask, l, at)
        like = torch.empty((wide.shape[0], wide.shape[1], 0), dtype=module.dtype, device=wide.device)
        call["attention_mask"] = create_bidirectional_mask(config=module.config, inputs_embeds=like,
                                                           attention_mask=wide)
    return (), call


def base_mask_hook(l: int, at: int, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Pre-hook on a BERT-like model, which builds its mask from the embedding output (T + l long)."""
    call = _bind(module, args, kwargs)
    if call.get("attention_mask") is not None:
        call["attention_mask"] = _widen(call["attention_mask"], l, at)
    return (), call


def cross_mask_hook(l: int, at: int, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Pre-hook on a decoder: the encoder output is T + l long, its padding mask still T long."""
    call = _bind(module, args, kwargs)
    enc, mask = call.get("encoder_hidden_states"), call.get("encoder_attention_mask")
    if enc is not None and mask is not None and mask.dim() == 2 and mask.shape[-1] == enc.shape[1] - l:
        call["encoder_attention_mask"] = _widen(mask, l, at)
    return (), call
