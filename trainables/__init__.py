"""The unified view of parameter-efficient transfer learning as code: design points, modules, injection, counting,
and one trial's training loop. Heavy submodules load on first use, so `import trainables` stays cheap."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Backbone": "trainables.vocabulary",
    "Composition": "trainables.vocabulary",
    "DesignPoint": "trainables.designpoint",
    "Form": "trainables.vocabulary",
    "Init": "trainables.vocabulary",
    "Insertion": "trainables.vocabulary",
    "LayerNormPos": "trainables.vocabulary",
    "ParamCounts": "trainables.accounting",
    "Representation": "trainables.vocabulary",
    "RunConfig": "trainables.runconfig",
    "SiteSpec": "trainables.designpoint",
    "TrainConfig": "trainables.trainconfig",
    "TrialFailure": "trainables.reporter",
    "count_params": "trainables.accounting",
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
