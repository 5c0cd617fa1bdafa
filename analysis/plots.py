"""Figures of a loaded search: the score/parameter-budget front (PNG and self-contained HTML) and importances.

One point per design (the mean over its replicate seeds, with a ±1 std error bar when it has several), coloured by
design family (prefix, LoRA, SA, PA, scaled PA, MAM, ...); the Pareto-optimal designs carry a black edge and the
front's step line; early-stopped runs are hollow and failed ones are crosses on the bottom edge. The hypervolume
reference score is drawn as a dashed line and written in the legend with its basis.

Matplotlib is used through `Figure` + the Agg canvas directly (no pyplot), so importing this module never switches
the backend of a notebook or GUI that imported us. Plotly is imported lazily (it is slow to import).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text
from matplotlib.ticker import Formatter, FuncFormatter, LogFormatter
from matplotlib.transforms import Bbox

from analysis.design import describe_design, reference_of
from analysis.groups import design_groups, group_front, pareto_flags
from analysis.pareto import MIN_FRACTION, hypervolume
from finetune.spans import timed
from search.contract import FAILED, Reference, score_name

# Sizes: 10 x 7 in at 100 dpi = 1000 x 700 px, readable in the MLflow artifact viewer without scrolling.
FIG_SIZE_IN = (10.0, 7.0)
DPI = 100
MARKER_SIZE = 36
# Colour-blind safe Okabe-Ito first, then tab10's; one colour per design family, in order of first appearance.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
           "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD", "#FF9896")
COLORS = {"front": "#000000", "failed": "#555555", "reference": "#777777"}
DOMINATED_ALPHA = 0.55
X_LABEL = "stored parameters, % of the backbone's (log scale)"  # the fraction, in percent as every table shows it
# Offsets (points) tried in order for a preset's label: up-right first, then around the point, farther out ring by
# ring (a label 12 pt high needs 12 pt steps to clear its neighbour).
LABEL_OFFSETS = tuple((sx * dx, dy) for ring in range(6) for dy in (6 + 12 * ring, -14 - 12 * ring)
                      for dx in (6 + 8 * ring,) for sx in (1, -1))


def y_label(df: pd.DataFrame) -> str:
    """The y-axis title: the task's metric by name with its scale (`BLEU (sacreBLEU, 0-100), higher is better`)."""
    return f"{score_name(df.attrs.get('metric')).title}, higher is better"


def _percent(value: float, _pos: object = None) -> str:
    return f"{100 * value:.3g}%"


class PercentLogFormatter(Formatter):
    """Minor ticks of a log axis in percent, labelled where matplotlib's own log formatter would label them (all of
    them when the data spans less than about a decade, none when it spans many)."""

    def __init__(self) -> None:
        self.log = LogFormatter(labelOnlyBase=False)  # decides which ticks get a label; we write the label

    def set_axis(self, axis: object) -> None:
        super().set_axis(axis)
        self.log.set_axis(axis)

    def set_locs(self, locs: object) -> None:
        super().set_locs(locs)
        self.log.set_locs(locs)

    def __call__(self, x: float, pos: int | None = None) -> str:
        return _percent(x) if self.log(x, pos) else ""


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def family_colors(families: list[str]) -> dict[str, str]:
    ordered = list(dict.fromkeys(str(f) for f in families))
    return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(ordered)}


def trial_categories(df: pd.DataFrame) -> pd.Series:
    """Per run: optimal / dominated (full fidelity), partial (a score below full fidelity), failed (no score)."""
    pareto = pareto_flags(df)
    has_score = df["score"].notna() & df["status"].ne(FAILED)
    cat = np.where(pareto, "optimal", np.where(df["full_fidelity"] & has_score, "dominated",
                                                np.where(has_score, "partial", "failed")))
    return pd.Series(cat, index=df.index, name="category")


def _reference_label(ref: Reference) -> str:
    return f"hypervolume reference score {ref.score:.4g} ({ref.basis})"


def _xs(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=float), MIN_FRACTION)


@timed("report.figure.front_figure_png")
def front_figure_png(df: pd.DataFrame, path: str | Path, title: str | None = None,
                     reference: Reference | None = None) -> Path:
    """`front_figure` written as a ~1000x700 PNG."""
    path = Path(path)
    front_figure(df, title, reference).savefig(path, dpi=DPI)
    return path


def front_figure(df: pd.DataFrame, title: str | None = None, reference: Reference | None = None) -> Figure:
    """Configurations by family with ±1 std seed error bars, the Pareto front as a step line, the reference score."""
    ref = reference or reference_of(df)
    fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    groups = design_groups(df)
    optimal = group_front(groups) if len(groups) else np.zeros(0, dtype=bool)
    colors = family_colors(groups["family"].fillna("unknown").tolist() + df["family"].fillna("unknown").tolist())
    for fam, g in groups.assign(_opt=optimal).groupby(groups["family"].fillna("unknown"), sort=False):
        x, y, err = _xs(g["fraction"]), g["score"].to_numpy(dtype=float), g["score_std"].to_numpy(dtype=float)
        opt = g["_opt"].to_numpy(dtype=bool)
        seeded = g["n_seeds"].to_numpy() > 1
        if seeded.any():  # ±1 std over replicate seeds
            ax.errorbar(x[seeded], y[seeded], yerr=err[seeded], fmt="none", ecolor=colors[fam], alpha=0.7, capsize=3,
                        zorder=1)
        # One legend entry per family: on its first non-empty scatter (an empty one would still be listed).
        label = f"{fam} ({_plural(len(g), 'config')})"
        if (~opt).any():
            ax.scatter(x[~opt], y[~opt], s=MARKER_SIZE, c=colors[fam], alpha=DOMINATED_ALPHA, edgecolors="none",
                       label=label, zorder=2)
        if opt.any():
            ax.scatter(x[opt], y[opt], s=MARKER_SIZE * 1.8, c=colors[fam], edgecolors=COLORS["front"],
                       linewidths=1.4, zorder=4, label=None if (~opt).any() else label)
    if optimal.any():
        front = groups[optimal].sort_values("fraction")
        # steps-post: between two front points the best score reachable at that budget is the left one's.
        ax.plot(_xs(front["fraction"]), front["score"], drawstyle="steps-post", color=COLORS["front"], lw=1.2,
                zorder=3, label=f"Pareto front ({int(optimal.sum())} configs, mean over seeds)")
    _partial_and_failed(ax, df, colors)
    ax.axhline(ref.score, color=COLORS["reference"], ls="--", lw=1.0, label=_reference_label(ref), zorder=0)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    ax.xaxis.set_minor_formatter(PercentLogFormatter())  # within one decade matplotlib labels minor ticks too
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(y_label(df))
    if not len(groups) and not df["score"].notna().any():
        ax.set_xlim(1e-4, 1.0)
        ax.text(0.5, 0.5, "no scored trials yet", transform=ax.transAxes, ha="center", va="center", fontsize=14)
    ax.grid(True, which="both", alpha=0.25)
    hv = hypervolume(groups["score"], groups["fraction"], ref_score=ref.score) if len(groups) else 0.0
    ax.set_title(title or f"{score_name(df.attrs.get('metric')).label} vs parameter budget: {len(df)} runs, "
                          f"{len(groups)} configurations, {int(optimal.sum())} Pareto-optimal; hypervolume {hv:.4g}",
                 fontsize=11)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    _label_presets(ax, groups[groups["preset"].notna()])  # after the layout: placed where they will be drawn
    return fig


def _label_presets(ax: Axes, named: pd.DataFrame) -> list[Annotation]:
    """Each preset's name beside its point, at the first offset of `LABEL_OFFSETS` where the label lies inside the
    axes and clear of the labels placed before it (else where it overlaps least), so no label clips at the plot's
    edge or covers another. Labels are placed left to right."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed: list[Bbox] = []
    labels = []
    for _, g in named.sort_values(["fraction", "score"]).iterrows():
        ann = ax.annotate(str(g["preset"]), (max(g["fraction"], MIN_FRACTION), g["score"]), xytext=(0, 0),
                          textcoords="offset points", fontsize=9, fontweight="bold", zorder=5,
                          arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "#333333"})
        best: tuple[float, tuple[int, int]] | None = None
        for dx, dy in LABEL_OFFSETS:
            ann.set_position((dx, dy))
            ann.set_horizontalalignment("left" if dx >= 0 else "right")
            box = _text_box(ann, renderer)
            outside = box.width * box.height - _overlap(box, frame)
            cost = outside * 10 + sum(_overlap(box, other) for other in placed)
            if best is None or cost < best[0]:
                best = (cost, (dx, dy))
            if cost == 0:
                break
        assert best is not None
        ann.set_position(best[1])
        ann.set_horizontalalignment("left" if best[1][0] >= 0 else "right")
        placed.append(_text_box(ann, renderer).expanded(1.05, 1.1))
        labels.append(ann)
    return labels


def _text_box(ann: Annotation, renderer: object) -> Bbox:
    """The label's own box in display pixels (an Annotation's extent also spans its leader line)."""
    ann.update_positions(renderer)  # where the text goes for its current offset
    return Text.get_window_extent(ann, renderer)


def _overlap(a: Bbox, b: Bbox) -> float:
    """Area (display px²) where two boxes intersect."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _partial_and_failed(ax: Axes, df: pd.DataFrame, colors: Mapping[str, str]) -> None:
    cat = trial_categories(df)
    x, y = _xs(df["fraction"].to_numpy(dtype=float, na_value=np.nan)), df["score"].to_numpy(dtype=float,
                                                                                           na_value=np.nan)
    part = (cat == "partial").to_numpy() & np.isfinite(x) & np.isfinite(y)
    if part.any():
        edge = [colors.get(str(f), COLORS["failed"]) for f in df["family"].fillna("unknown")[part]]
        ax.scatter(x[part], y[part], s=MARKER_SIZE, facecolors="none", edgecolors=edge, linewidths=1.2,
                   label=f"early-stopped / partial fidelity ({_plural(int(part.sum()), 'run')})", zorder=2)
    failed = (cat == "failed").to_numpy()
    known = failed & np.isfinite(x)
    if known.any():  # failed trials have no score: on the bottom edge, at their fraction
        ax.scatter(x[known], np.full(known.sum(), 0.02), transform=ax.get_xaxis_transform(), marker="x",
                   c=COLORS["failed"], s=MARKER_SIZE, label=f"failed, no score ({_plural(int(failed.sum()), 'run')})",
                   clip_on=False)
    unknown = int((failed & ~np.isfinite(x)).sum())
    if unknown:
        ax.text(0.01, 0.05, f"{unknown} failed before counting parameters", transform=ax.transAxes,
                color=COLORS["failed"], fontsize=8)


def hover_text(row: Mapping[str, object], group: Mapping[str, object] | None = None) -> str:
    """Design in its own words plus score (mean ± std over seeds), fraction and status, for HTML hovers."""
    lines = [f"<b>{row.get('run_name') or row.get('run_id')}</b> ({row.get('family')})"]
    if isinstance(row.get("preset"), str):
        lines.append(f"preset: {row['preset']}")
    lines += describe_design(row)
    score, fraction = row.get("score"), row.get("fraction")
    if group is not None and int(group["n_seeds"]) > 1:  # type: ignore[call-overload]
        lines.append(f"score = {group['score']:.4g} ± {group['score_std']:.2g} over {group['n_seeds']} seeds")
    else:
        lines.append(f"score = {score:.4g}" if isinstance(score, float) and np.isfinite(score) else "score: none")
    if isinstance(fraction, float) and np.isfinite(fraction):
        lines.append(f"fraction = {fraction * 100:.3g}% of backbone")
    lines.append(f"status: {row.get('status')} ({row.get('fidelity')}/{row.get('max_fidelity')} steps)")
    if isinstance(row.get("failure"), str):
        lines.append(f"failure: {row['failure']}")
    return "<br>".join(lines)


@timed("report.figure.front_figure_html")
def front_figure_html(df: pd.DataFrame, path: str | Path, title: str | None = None,
                      reference: Reference | None = None) -> Path:
    """Interactive version of the front; self-contained (plotly.js embedded: users may have no internet)."""
    import plotly.graph_objects as go  # deferred on purpose: plotly import costs ~1 s

    path, ref = Path(path), reference or reference_of(df)
    groups = design_groups(df)
    optimal = group_front(groups) if len(groups) else np.zeros(0, dtype=bool)
    colors = family_colors(groups["family"].fillna("unknown").tolist() + df["family"].fillna("unknown").tolist())
    records = df.to_dict("records")
    fig = go.Figure()
    for fam, g in groups.assign(_opt=optimal).groupby(groups["family"].fillna("unknown"), sort=False):
        seeded = g["n_seeds"].to_numpy() > 1
        fig.add_trace(go.Scatter(
            x=100 * _xs(g["fraction"]), y=g["score"], mode="markers", name=f"{fam} ({len(g)} configs)",
            error_y={"type": "data", "array": np.where(seeded, g["score_std"], 0.0).tolist(),
                     "visible": bool(seeded.any())},
            marker={"color": colors[fam], "size": np.where(g["_opt"], 12, 8),
                    "line": {"color": COLORS["front"], "width": np.where(g["_opt"], 1.5, 0.0)}},
            text=[hover_text(records[int(r["row"])], r) for r in g.to_dict("records")], hoverinfo="text"))
    if optimal.any():
        front = groups[optimal].sort_values("fraction")
        fig.add_trace(go.Scatter(x=100 * _xs(front["fraction"]), y=front["score"], mode="lines", hoverinfo="skip",
                                 line={"shape": "hv", "color": COLORS["front"]}, name="Pareto front"))
    cat = trial_categories(df)
    y = df["score"].to_numpy(dtype=float, na_value=np.nan)
    floor = float(np.nanmin(y)) if np.isfinite(y).any() else ref.score
    for name, symbol in (("partial", "circle-open"), ("failed", "x")):
        idx = np.flatnonzero((cat == name).to_numpy() & df["fraction"].notna().to_numpy())
        if idx.size:
            fig.add_trace(go.Scatter(
                x=100 * _xs(df["fraction"].to_numpy(dtype=float)[idx]), y=y[idx] if name == "partial" else
                np.full(idx.size, floor), mode="markers", name=f"{name} ({idx.size} runs)",
                marker={"symbol": symbol, "color": COLORS["failed"], "size": 8},
                text=[hover_text(records[i]) for i in idx], hoverinfo="text"))
    fig.add_hline(y=ref.score, line_dash="dash", line_color=COLORS["reference"],
                  annotation_text=_reference_label(ref), annotation_position="bottom right")
    fig.update_layout(  # no fixed size: the figure fills the page or MLflow's artifact pane, whatever its width
        title=title or f"{score_name(df.attrs.get('metric')).label} vs parameter budget: {len(df)} runs, "
                       f"{len(groups)} configurations", autosize=True,
        xaxis={"type": "log", "title": X_LABEL, "ticksuffix": "%"}, yaxis={"title": y_label(df)},
        template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    fig.write_html(path, include_plotlyjs=True, full_html=True, default_width="100%", default_height="100%",
                   config={"responsive": True})
    return path


@timed("report.figure.importance_figure_png")
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
        ax.barh(list(imp.index), imp.to_numpy(dtype=float), color=PALETTE[0])
        ax.set_xlabel(f"{imp.attrs.get('evaluator', 'fANOVA')} importance for {target} (sums to 1)")
        ax.set_title(f"what matters for {target}")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="x", alpha=0.25)
    fig.suptitle(title or "Design-parameter importance (full-fidelity designs, parameters that vary)")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
