"""The study's Pareto front (mean final score over seeds vs stored fraction), its hypervolume per design family, the
paper's presets against the best other design at their budget, and the front's figure.

Front and hypervolume are the product's own (`analysis.pareto.pareto_mask`, `analysis.pareto.hypervolume`: score
up, stored fraction down, area in score x log10-fraction decades above a fixed reference point), applied to one
point per design: its mean final score over the seeds it has. The figure follows `analysis.plots` (families in its
palette, the front as a step line, log-fraction axis) with the 95% t-interval over seeds as each point's error bar.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.pareto import MIN_FRACTION, REFERENCE, hypervolume, pareto_mask
from benchmarks.study.designs import DEFAULT_TOLERANCE
from benchmarks.study.results import DesignResult
from benchmarks.study.stats import Interval, paired, verdict

HEAD_ONLY = "head_only"  # the control whose mean is the second hypervolume reference: what the frozen backbone gives


def scored(results: dict[str, DesignResult]) -> list[DesignResult]:
    return [r for r in results.values() if r.scores]


def front_ids(results: dict[str, DesignResult]) -> list[str]:
    """Ids of the Pareto-optimal designs (mean score over seeds, stored fraction), cheapest first."""
    pts = scored(results)
    mask = pareto_mask([r.ci.mean for r in pts], [r.fraction for r in pts])
    return [r.design.id for r in sorted((p for p, m in zip(pts, mask) if m), key=lambda r: r.fraction)]


def family_hypervolumes(results: dict[str, DesignResult]) -> list[tuple[str, int, float, float | None]]:
    """Per family (in order of first appearance): designs with a score, hypervolume with the product's reference
    (score 0, fraction 1), and with the head-alone mean as the reference score (None until that control has one)."""
    pts = scored(results)
    head = results.get(HEAD_ONLY)
    head_score = head.ci.mean if head is not None and head.scores else None
    out = []
    for fam in dict.fromkeys(r.design.family for r in pts):
        group = [r for r in pts if r.design.family == fam]
        s, f = [r.ci.mean for r in group], [r.fraction for r in group]
        gain = None if head_score is None else hypervolume(s, f, ref_score=head_score)
        out.append((fam, len(group), hypervolume(s, f, *REFERENCE), gain))
    return out


@dataclass(frozen=True)
class PresetCheck:
    preset: str
    rival: str | None  # the non-preset design within the preset's budget with the best selection score (None: none)
    seeds: tuple[int, ...]
    ci: Interval | None  # rival - preset in final score over the common seeds
    verdict: str


def preset_checks(results: dict[str, DesignResult], tolerance: float = DEFAULT_TOLERANCE) -> list[PresetCheck]:
    """Each preset against the best other design storing at most `tolerance` x its parameters (the study's
    matched-budget rule), compared in final score over their common seeds; verdicts in stats' words from the rival's
    side. The rival is picked by its mean SELECTION score, not its final one: picking the winner on the split that
    then tests it would favour "beats the preset" (a preset with no score yet is listed as pending)."""
    pts = scored(results)
    out = []
    for p in (r for r in results.values() if "preset" in r.design.serves):
        if not p.scores:
            out.append(PresetCheck(p.design.id, None, (), None, f"pending ({p.done} of {p.needed} runs)"))
            continue
        rivals = [r for r in pts if "preset" not in r.design.serves and r.design.id != HEAD_ONLY
                  and r.fraction <= tolerance * p.fraction]
        if not rivals:
            out.append(PresetCheck(p.design.id, None, (), None, "no other design at this budget"))
            continue
        best = max(rivals, key=lambda r: (statistics.fmean(r.selection.values()), -r.fraction))
        seeds, ci = paired(best.scores, p.scores)
        word = "pending" if not (best.complete and p.complete) else "fewer than 2 common seeds" if ci is None \
            else {"reproduced": "beats the preset", "reversed": "loses to the preset"}.get(verdict(ci), verdict(ci))
        out.append(PresetCheck(p.design.id, best.design.id, seeds, ci, word))
    return out


def _annotate(ax, pts: list[DesignResult], on_front: set[str]) -> None:
    """Each point's name and seed count; a label that would overprint one already placed (designs at about the same
    budget and score) goes to the point's left instead."""
    bottom, top = ax.get_ylim()  # the error bars set it
    span = top - bottom
    placed: list[tuple[float, float]] = []
    for r in sorted(pts, key=lambda r: (r.fraction, -r.ci.mean)):
        xi, yi = max(r.fraction, MIN_FRACTION), r.ci.mean
        near = any(abs(np.log10(xi) - px) < 0.08 and abs(yi - py) < 0.04 * span for px, py in placed)
        placed.append((np.log10(xi), yi))
        ax.annotate(f"{r.design.id} (n={r.ci.n})", (xi, yi), xytext=(-5 if near else 5, 4), textcoords="offset points",
                    ha="right" if near else "left", fontsize=7,
                    fontweight="bold" if r.design.id in on_front else "normal")


def front_png(results: dict[str, DesignResult], path: Path, title: str) -> Path:
    """Every scored design at (stored %, mean final score) with its 95% t-interval over seeds; the front's steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from analysis.plots import DPI, FIG_SIZE_IN, X_LABEL, family_colors

    pts = scored(results)
    on_front = set(front_ids(results))
    colors = family_colors([r.design.family for r in pts])
    fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for fam, color in colors.items():
        group = [r for r in pts if r.design.family == fam]
        x = np.maximum([r.fraction for r in group], MIN_FRACTION)
        y = np.array([r.ci.mean for r in group])
        err = np.array([[r.ci.mean - r.ci.low for r in group], [r.ci.high - r.ci.mean for r in group]])
        ax.errorbar(x, y, yerr=err, fmt="o", color=color, capsize=3, ms=6, label=f"{fam} ({len(group)})")
    _annotate(ax, pts, on_front)
    front = [results[i] for i in front_ids(results)]
    if front:
        ax.plot(np.maximum([r.fraction for r in front], MIN_FRACTION), [r.ci.mean for r in front],
                drawstyle="steps-post", color="#000000", lw=1.0, label=f"Pareto front of the means ({len(front)})")
    ax.set_xscale("log")
    ax.margins(x=0.1)  # room for a label placed left of the leftmost point
    lo, hi = ax.get_xlim()
    # label 1-2-5 per decade over a narrow range (one decade tick alone says little); minor ticks unlabelled: the log
    # axis would print them as raw fractions (2x10^-3) beside the % labels
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if np.log10(hi / lo) <= 3 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{100 * v:.3g}%"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(X_LABEL + "; 0 (the head alone) drawn at 1e-4 %")
    ax.set_ylabel("final accuracy, mean over seeds with its 95% t-interval")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    if pts:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished runs yet", transform=ax.transAxes, ha="center", va="center", fontsize=14)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path
