"""The unified view of parameter-efficient transfer learning as code: design points, modules, injection, counting,
and one trial's training loop. Heavy submodules load on first use, so `import finetune` stays cheap."""

from __future__ import annotations

from finetune.lazy import lazy_exports

__getattr__, __all__ = lazy_exports("finetune", {
    "finetune.accounting": ("ParamCounts", "count_params"),
    "finetune.checkpoint": ("load_trained",),
    "finetune.designpoint": ("DesignPoint", "SiteSpec"),
    "finetune.inject": ("fold_prefixes", "inject"),
    "finetune.loop": ("train",),
    "finetune.presets": ("get_preset", "load_presets"),
    "finetune.reporter": ("TrialFailure",),
    "finetune.runconfig": ("RunConfig", "resolve_run"),
    "finetune.trainconfig": ("TrainConfig",),
    "finetune.vocabulary": ("Backbone", "Composition", "Form", "Init", "Insertion", "LayerNormPos", "Representation"),
})
