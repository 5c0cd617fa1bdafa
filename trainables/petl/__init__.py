"""The unified view's modules: each computes Δh; where it reads and how it composes live in `site.py`."""

from __future__ import annotations

from trainables.petl.base import PetlModule
from trainables.petl.bottleneck import Bottleneck
from trainables.petl.compose import Scale, add, gated_add, scaled_add
from trainables.petl.prefix import PrefixKV

__all__ = ["Bottleneck", "PetlModule", "PrefixKV", "Scale", "add", "gated_add", "scaled_add"]
