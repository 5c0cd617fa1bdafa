"""The unified view of parameter-efficient transfer learning as code: design points, modules, injection, counting,
and one trial's training loop. Heavy submodules load on first use, so `import finetune` stays cheap."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Backbone": "finetune.vocabulary",
    "Composition": "finetune.vocabulary",
    "DesignPoint": "finetune.designpoint",
    "Form": "finetune.vocabulary",
    "Init": "finetune.vocabulary",
    "Insertion": "finetune.vocabulary",
    "LayerNormPos": "finetune.vocabulary",
    "ParamCounts": "finetune.accounting",
    "Representation": "finetune.vocabulary",
    "RunConfig": "finetune.runconfig",
    "SiteSpec": "finetune.designpoint",
    "TrainConfig": "finetune.trainconfig",
    "TrialFailure": "finetune.reporter",
    "count_params": "finetune.accounting",
    "fold_prefixes": "finetune.inject",
    "get_preset": "finetune.presets",
    "inject": "finetune.inject",
    "load_presets": "finetune.presets",
    "load_trained": "finetune.checkpoint",
    "resolve_run": "finetune.runconfig",
    "train": "finetune.loop",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'finetune' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
