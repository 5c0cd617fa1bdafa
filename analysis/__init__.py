"""Analysis of a PETL design-space search recorded in MLflow: load, Pareto front, effects, plots, report.

Submodules load on first use, so `from analysis.pareto import hypervolume` (the search's scheduler does it) does not
pull in MLflow, Optuna, matplotlib or plotly.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MIN_FRACTION": "analysis.pareto",
    "REFERENCE": "analysis.pareto",
    "SearchNotFoundError": "analysis.load",
    "TrackingUnreachableError": "analysis.load",
    "completion_order": "analysis.design",
    "describe_design": "analysis.design",
    "design_columns": "analysis.design",
    "design_groups": "analysis.groups",
    "front_figure_html": "analysis.plots",
    "front_figure_png": "analysis.plots",
    "hypervolume": "analysis.pareto",
    "hypervolume_history": "analysis.pareto",
    "importance_figure_png": "analysis.plots",
    "like_for_like": "analysis.effects",
    "load_search": "analysis.load",
    "param_importance": "analysis.importance",
    "pareto_flags": "analysis.groups",
    "pareto_mask": "analysis.pareto",
    "reference_of": "analysis.design",
    "update_search_report": "analysis.publish",
    "write_report": "analysis.publish",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    # Lazy: importing analysis.report here would also make `python -m analysis.report` warn that the module was
    # already imported before running as __main__.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
