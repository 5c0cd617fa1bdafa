"""Model configurations by hub name, local folder or config.json; the paper's three backbones are bundled.

The bundled copies let the accounting (and its tests) price the paper's designs offline. Published configs of these
checkpoints never change, so a bundled copy is the same config the hub would return.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

BUNDLED_DIR = Path(__file__).resolve().parent / "model_configs"


def bundled_names() -> list[str]:
    return sorted(p.stem.replace("--", "/") for p in BUNDLED_DIR.glob("*.json"))


def _from_json(path: Path) -> PretrainedConfig:
    data = json.loads(path.read_text(encoding="utf-8"))
    if "model_type" not in data:
        raise ValueError(f"{path}: a config.json needs a 'model_type' key to pick the architecture, "
                         f"got keys {sorted(data)}")
    return AutoConfig.for_model(data.pop("model_type"), **data)


def load_config(model: str) -> PretrainedConfig:
    """A config from a config.json path, a model folder, a bundled paper backbone, or the hub, in that order."""
    path = Path(model)
    if path.is_file():
        return _from_json(path)
    if path.is_dir():
        return AutoConfig.from_pretrained(str(path))
    bundled = BUNDLED_DIR / f"{model.replace('/', '--')}.json"
    if bundled.is_file():
        return _from_json(bundled)
    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load a model config for {model!r}: it is not a config.json or model folder, not a bundled "
            f"backbone {bundled_names()}, and the hub did not provide it ({type(err).__name__}); pass a local folder "
            "or config.json"
        ) from None
