"""The unified view of parameter-efficient transfer learning as code: design points, modules, injection, counting,
and one trial's training loop. Heavy submodules load on first use, so `import trainables` stays cheap."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Backbone": "trainables.design",
    "Composition": "trainables.design",
    "DesignPoint": "trainables.design",
    "Form": "trainables.design",
    "Init": "trainables.design",
    "Insertion": "trainables.design",
    "LayerNormPos": "trainables.design",
    "ParamCounts": "trainables.counting",
    "Representation": "trainables.design",
    "RunConfig": "trainables.runconfig",
    "SiteSpec": "trainables.design",
    "TrainConfig": "trainables.config",
    "TrialFailure": "trainables.report",
    "count_params": "trainables.counting",
    "fold_prefixes": "trainables.inject",
    "get_preset": "trainables.presets",
    "inject": "trainables.inject",
    "load_presets": "trainables.presets",
    "load_trained": "trainables.checkpoint",
    "resolve_run": "trainables.runconfig",
    "train": "trainables.loop",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
