"""The unified view's modules, one file per axis of He et al. (ICLR 2022): functional forms (`forms.py`), insertion
(`insertion.py`: where each site reads and adds), composition (`composition.py`); the modified representations are
placed per architecture by `finetune/sitemap.py`. Prompt tuning, the paper's baseline outside the view, is
`prompt.py`."""

from __future__ import annotations

from finetune.petl.base import PetlModule
from finetune.petl.composition import Scale, compose
from finetune.petl.forms import Bottleneck, PrefixKV

__all__ = ["Bottleneck", "PetlModule", "PrefixKV", "Scale", "compose"]
