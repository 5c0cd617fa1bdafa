"""The paper's named methods, loaded from `finetune/presets.yaml` (presets are data, not code branches; package
data)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from finetune.designpoint import DesignPoint

PRESETS_FILE = Path(__file__).resolve().parent / "presets.yaml"


@dataclass(frozen=True)
class Preset:
    name: str
    method: str  # the paper's name for it, with its budget
    source: str  # where in the paper / official code it comes from
    design: DesignPoint


def parse_presets(data: object, origin: str) -> dict[str, Preset]:
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{origin}: presets must be a non-empty mapping of name → preset, got {type(data).__name__}")
    out = {}
    for name, entry in data.items():
        keys = set(entry) if isinstance(entry, dict) else set()
        if keys != {"method", "source", "design"}:
            raise ValueError(
                f"{origin}: preset {name!r} must have exactly the keys ['design', 'method', 'source'], "
                f"got {sorted(keys)}"
            )
        try:
            design = DesignPoint.from_dict(entry["design"])
        except ValueError as err:
            raise ValueError(f"{origin}: preset {name!r}: {err}") from None
        out[str(name)] = Preset(str(name), str(entry["method"]), str(entry["source"]), design)
    return out


@functools.lru_cache(maxsize=4)
def load_presets(path: Path = PRESETS_FILE) -> dict[str, Preset]:
    with open(path, encoding="utf-8") as f:
        return parse_presets(yaml.safe_load(f), str(path))


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(presets)} (see petl-count --list-presets)")
    return presets[name]
