"""Analysis of a PETL design-space search recorded in MLflow: load, Pareto front, effects, plots, report.

Submodules load on first use, so `from analysis.pareto import hypervolume` (the search's scheduler does it) does not
pull in MLflow, Optuna, matplotlib or plotly.
"""

from __future__ import annotations

from finetune.lazy import lazy_exports

# Lazy: importing analysis.report here would also make `python -m analysis.report` warn that the module was
# already imported before running as __main__.
__getattr__, __all__ = lazy_exports("analysis", {
    "analysis.design": ("completion_order", "describe_design", "design_columns", "reference_of"),
    "analysis.effects": ("like_for_like",),
    "analysis.groups": ("design_groups", "pareto_flags"),
    "analysis.importance": ("param_importance",),
    "analysis.load": ("SearchNotFoundError", "TrackingUnreachableError", "load_search"),
    "analysis.pareto": ("MIN_FRACTION", "REFERENCE", "hypervolume", "hypervolume_history", "pareto_mask"),
    "analysis.plots": ("front_figure_html", "front_figure_png", "importance_figure_png"),
    "analysis.publish": ("update_search_report", "write_report"),
})
