"""The marker every PETL module carries, so the trainable set is chosen by type, never by name substrings."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn


class PetlModule(nn.Module):
    """Base of every module this project adds to a pretrained model."""


def petl_named_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Parameters owned by PETL modules, their plain sub-modules (nn.Linear, ...) included, each once."""
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        if not isinstance(module, PetlModule):
            continue
        for p_name, p in module.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{mod_name}.{p_name}" if mod_name else p_name), p
