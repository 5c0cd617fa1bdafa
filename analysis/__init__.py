"""Analysis of a PETL design-space search recorded in MLflow: load, Pareto front, effects, plots, report."""

from __future__ import annotations

from analysis.design import describe_design, design_columns, pareto_flags
from analysis.effects import design_axes, marginal_effects, marginal_means, param_importance
from analysis.load import SearchNotFoundError, TrackingUnreachableError, load_search
from analysis.pareto import MIN_FRACTION, REFERENCE, hypervolume, hypervolume_history, pareto_mask
from analysis.plots import front_figure_html, front_figure_png, importance_figure_png

# The report functions are loaded lazily: importing analysis.report here would make
# `python -m analysis.report` warn that the module was already imported before running as __main__.
_LAZY = {"update_search_report": "analysis.report", "write_report": "analysis.report"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "MIN_FRACTION",
    "REFERENCE",
    "SearchNotFoundError",
    "TrackingUnreachableError",
    "describe_design",
    "design_axes",
    "design_columns",
    "front_figure_html",
    "front_figure_png",
    "hypervolume",
    "hypervolume_history",
    "importance_figure_png",
    "load_search",
    "marginal_effects",
    "marginal_means",
    "param_importance",
    "pareto_flags",
    "pareto_mask",
    "update_search_report",
    "write_report",
]
