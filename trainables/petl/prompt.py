"""Prompt tuning (Lester et al.; He et al. Table 6 baseline): l trainable vectors in front of the encoder input.

Encoder-decoder models get the prompt at the start of the encoder input (as the official code does) and the decoder's
cross-attention mask is widened to match, in the decoder's own pre-hook, so `generate()` (which calls the encoder and
decoder separately) stays correct. Encoder-only models get it right after the first token, so the [CLS]/<s> position
that the classification head reads stays first.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from trainables.petl.base import PetlModule


def _bind(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
    out = dict(bound.arguments)
    out.update(out.pop("kwargs", {}) or {})
    return out


def _widen(mask: Tensor | None, n: int, at: int, fill: int = 1) -> Tensor | None:
    """Insert n columns of `fill` at position `at` of the last dimension."""
    if mask is None:
        return None
    new = torch.full((*mask.shape[:-1], n), fill, dtype=mask.dtype, device=mask.device)
    return torch.cat([mask[..., :at], new, mask[..., at:]], dim=-1)


class Prompt(PetlModule):
    """P ∈ R^{l × d}, N(0, 0.02) as in the official code; inserted into the input embeddings at position `at`."""

    def __init__(self, l: int, d: int, embed: nn.Module, at: int) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(l, d) * 0.02)
        self.embed = [embed]  # a list keeps the frozen embedding out of this module's parameters
        self.at = at

    def encoder_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        call = _bind(module, args, kwargs)
        ids = call.pop("input_ids", None)
        embeds = call.get("inputs_embeds")
        if embeds is None:
            if ids is None:
                raise RuntimeError("prompt tuning needs input_ids or inputs_embeds")
            embeds = self.embed[0](ids)
        p = self.vectors.to(embeds.dtype).unsqueeze(0).expand(embeds.shape[0], -1, -1)
        call["inputs_embeds"] = torch.cat([embeds[:, : self.at], p, embeds[:, self.at :]], dim=1)
        n = self.vectors.shape[0]
        call["attention_mask"] = _widen(call.get("attention_mask"), n, self.at)
        if isinstance(call.get("token_type_ids"), Tensor):
            call["token_type_ids"] = _widen(call["token_type_ids"], n, self.at, fill=0)
        if call.get("position_ids") is not None:
            raise RuntimeError("prompt tuning cannot honour explicit position_ids; let the model number positions")
        return (), call

    def decoder_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        call = _bind(module, args, kwargs)
        enc, mask = call.get("encoder_hidden_states"), call.get("encoder_attention_mask")
        if enc is not None and mask is not None and mask.shape[-1] == enc.shape[1] - self.vectors.shape[0]:
            call["encoder_attention_mask"] = _widen(mask, self.vectors.shape[0], self.at)
        return (), call
