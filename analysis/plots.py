"""Figures of a loaded search: the score/parameter-budget front (PNG and self-contained HTML) and importances.

Matplotlib is used through ``Figure`` + the Agg canvas directly (no pyplot), so importing this module never
switches the backend of a notebook or GUI that imported us. Plotly is imported lazily (it is slow to import).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.design import describe_design, pareto_flags
from analysis.pareto import MIN_FRACTION

# Sizes: 10 x 7 in at 100 dpi = 1000 x 700 px, readable in the MLflow artifact viewer without scrolling.
FIG_SIZE_IN = (10.0, 7.0)
DPI = 100
MARKER_SIZE = 36
# Palette (colour-blind safe Okabe-Ito picks); one colour per trial category, reused by the HTML figure.
COLORS = {
    "optimal": "#D55E00",  # vermillion: the Pareto front
    "dominated": "#0072B2",  # blue, faded with DOMINATED_ALPHA
    "partial": "#009E73",  # green hollow: early-stopped / below full fidelity
    "failed": "#555555",  # grey x at the bottom of the axis
}
DOMINATED_ALPHA = 0.35
LABELS = {
    "optimal": "Pareto-optimal (full fidelity)",
    "dominated": "dominated (full fidelity)",
    "partial": "early-stopped / partial fidelity",
    "failed": "failed (no score)",
}
X_LABEL = "fraction = stored PETL parameters / backbone parameters (log scale)"
Y_LABEL = "score (task metric, higher is better)"


def trial_categories(df: pd.DataFrame) -> pd.Series:
    """optimal / dominated (full fidelity), partial (has a score but not full fidelity), failed."""
    pareto = pareto_flags(df)
    has_score = df["score"].notna() & df["status"].ne("failed")
    cat = np.where(pareto, "optimal", np.where(df["full_fidelity"] & has_score, "dominated",
                                                np.where(has_score, "partial", "failed")))
    return pd.Series(cat, index=df.index, name="category")


def _xs(df: pd.DataFrame) -> np.ndarray:
    return np.maximum(df["fraction"].to_numpy(dtype=float, na_value=np.nan), MIN_FRACTION)


def front_figure_png(df: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Scatter of score vs fraction with the Pareto front as a step line; written as a ~1000x700 PNG."""
    path = Path(path)
    fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cat = trial_categories(df)
    x, y = _xs(df), df["score"].to_numpy(dtype=float, na_value=np.nan)
    for name in ("dominated", "partial", "optimal"):
        sel = (cat == name).to_numpy() & np.isfinite(x) & np.isfinite(y)
        if not sel.any():
            continue
        if name == "partial":
            ax.scatter(x[sel], y[sel], s=MARKER_SIZE, facecolors="none", edgecolors=COLORS[name], marker="o",
                       linewidths=1.2, label=f"{LABELS[name]} ({sel.sum()})", zorder=2)
        else:
            ax.scatter(x[sel], y[sel], s=MARKER_SIZE * (1.6 if name == "optimal" else 1), c=COLORS[name],
                       alpha=DOMINATED_ALPHA if name == "dominated" else 1.0, edgecolors="none",
                       label=f"{LABELS[name]} ({sel.sum()})", zorder=3 if name == "optimal" else 1)
    front = (cat == "optimal").to_numpy()
    if front.any():
        order = np.argsort(x[front])
        # steps-post: between two front points the best score reachable at that budget is the left one's.
        ax.plot(x[front][order], y[front][order], drawstyle="steps-post", color=COLORS["optimal"], lw=1.5, zorder=2)
    failed = (cat == "failed").to_numpy()
    if failed.any():
        # Failed trials have no score: draw them on the bottom edge (x in data units where the fraction is known).
        known = failed & np.isfinite(x)
        if known.any():
            ax.scatter(x[known], np.full(known.sum(), 0.02), transform=ax.get_xaxis_transform(), marker="x",
                       c=COLORS["failed"], s=MARKER_SIZE, label=f"{LABELS['failed']} ({failed.sum()})", clip_on=False)
        unknown = int((failed & ~np.isfinite(x)).sum())
        if unknown:
            ax.text(0.01, 0.05, f"{unknown} failed before counting parameters", transform=ax.transAxes,
                    color=COLORS["failed"], fontsize=8)
    for i in np.flatnonzero(df["preset"].notna().to_numpy() & np.isfinite(x) & np.isfinite(y)):
        ax.annotate(str(df["preset"].iat[i]), (x[i], y[i]), xytext=(6, 6), textcoords="offset points", fontsize=9,
                    fontweight="bold", arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "#333333"})
    ax.set_xscale("log")
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    if not np.isfinite(x).any():
        ax.set_xlim(1e-4, 1.0)
        ax.text(0.5, 0.5, "no scored trials yet", transform=ax.transAxes, ha="center", va="center", fontsize=14)
    ax.grid(True, which="both", alpha=0.25)
    n_opt = int(front.sum())
    ax.set_title(title or f"Score vs parameter budget: {len(df)} trials, {n_opt} Pareto-optimal")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=9, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def hover_text(row: Mapping[str, object]) -> str:
    """Design in the paper's vocabulary plus score, fraction and status, for HTML hovers."""
    lines = [f"<b>{row.get('run_name') or row.get('run_id')}</b>"]
    if isinstance(row.get("preset"), str):
        lines.append(f"preset: {row['preset']}")
    lines += describe_design(row)
    score, fraction = row.get("score"), row.get("fraction")
    lines.append(f"score = {score:.4g}" if isinstance(score, float) and np.isfinite(score) else "score: none")
    if isinstance(fraction, float) and np.isfinite(fraction):
        lines.append(f"fraction = {fraction * 100:.3g}% of backbone")
    lines.append(f"status: {row.get('status')} ({row.get('fidelity')}/{row.get('max_fidelity')} steps)")
    if isinstance(row.get("failure"), str):
        lines.append(f"failure: {row['failure']}")
    return "<br>".join(lines)


def front_figure_html(df: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Interactive version of the front; self-contained (plotly.js embedded: users may have no internet)."""
    import plotly.graph_objects as go  # lazy: plotly import costs ~1 s

    path = Path(path)
    cat = trial_categories(df)
    x, y = _xs(df), df["score"].to_numpy(dtype=float, na_value=np.nan)
    records = df.to_dict("records")
    fig = go.Figure()
    y_floor = float(np.nanmin(y)) if np.isfinite(y).any() else 0.0
    for name in ("dominated", "partial", "optimal", "failed"):
        sel = (cat == name).to_numpy() & np.isfinite(x)
        if name != "failed":
            sel &= np.isfinite(y)
        if not sel.any():
            continue
        idx = np.flatnonzero(sel)
        ys = y[idx] if name != "failed" else np.full(idx.size, y_floor)
        marker = {"color": COLORS[name], "size": 9 if name == "optimal" else 7}
        if name == "partial":
            marker.update(symbol="circle-open", line={"width": 1.5})
        elif name == "failed":
            marker.update(symbol="x")
        elif name == "dominated":
            marker.update(opacity=DOMINATED_ALPHA)
        order = np.argsort(x[idx]) if name == "optimal" else np.arange(idx.size)
        fig.add_trace(go.Scatter(
            x=x[idx][order], y=ys[order], mode="lines+markers" if name == "optimal" else "markers",
            line={"shape": "hv", "color": COLORS[name]} if name == "optimal" else None,
            marker=marker, name=f"{LABELS[name]} ({idx.size})",
            text=[hover_text(records[i]) for i in idx[order]], hoverinfo="text",
        ))
    fig.update_layout(
        title=title or f"Score vs parameter budget: {len(df)} trials", width=1000, height=700,
        xaxis={"type": "log", "title": X_LABEL}, yaxis={"title": Y_LABEL}, template="plotly_white",
    )
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def importance_figure_png(
    importances: pd.Series | Mapping[str, pd.Series], path: str | Path, title: str | None = None
) -> Path:
    """Horizontal bars of parameter importances; one panel per target when given a mapping target -> Series."""
    path = Path(path)
    panels = {"score": importances} if isinstance(importances, pd.Series) else dict(importances)
    fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (target, imp) in zip(axes, panels.items()):
        imp = imp.sort_values()  # attrs (the evaluator's name) survive sort_values
        ax.barh(list(imp.index), imp.to_numpy(dtype=float), color=COLORS["dominated"])
        ax.set_xlabel(f"{imp.attrs.get('evaluator', 'fANOVA')} importance for {target} (sums to 1)")
        ax.set_title(f"what matters for {target}")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="x", alpha=0.25)
    fig.suptitle(title or "Design-parameter importance (full-fidelity trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
