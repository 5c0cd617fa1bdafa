"""What the study's tables say without the analysis package: learning curves of the pilot, the designs' lr grids and
seeds, and what the tier cost. Pure functions of table rows, so the report is a function of the committed tables.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from benchmarks.study import protocol
from benchmarks.study.designs import Study, price
from benchmarks.study.table import run_key

PLATEAU_EVALS = 3  # the plateau of a curve: the mean of its last 3 evaluations
FLAT_WITHIN = 0.005  # a curve has flattened at the first step whose 3-evaluation mean is within 0.5 points of it


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)]


def curve(row: dict[str, Any], key: str = "curve") -> list[tuple[int, float]]:
    return sorted((int(s), float(v)) for s, v in row["selection"][key].items())


def flat_step(points: list[tuple[int, float]], evals: int = PLATEAU_EVALS, within: float = FLAT_WITHIN) -> int | None:
    """First step from which the running mean of `evals` evaluations stays within `within` of the plateau (the mean
    of the last `evals`); None when the curve is too short to tell."""
    if len(points) < 2 * evals:
        return None
    values = [v for _, v in points]
    plateau = statistics.fmean(values[-evals:])
    means = [statistics.fmean(values[i - evals + 1:i + 1]) for i in range(evals - 1, len(values))]
    for i, m in enumerate(means):
        if all(abs(x - plateau) <= within for x in means[i:]):
            return points[i + evals - 1][0]
    return points[-1][0]


def pilot_rows(rows: list[dict[str, Any]]) -> list[list[object]]:
    """One line per pilot run: selection accuracy every eval, its plateau, where it flattened, final dev accuracy."""
    out = []
    for r in rows:
        if r["status"] != "finished":
            out.append([r["design_id"], f"{r['lr']:g}", f"failed at step {r['failed_step']}: {r['failure']}"])
            continue
        pts = curve(r)
        flat = flat_step(pts)
        plateau = statistics.fmean([v for _, v in pts[-PLATEAU_EVALS:]])
        out.append([r["design_id"], f"{r['lr']:g}", " ".join(f"{v:.3f}" for _, v in pts), f"{plateau:.3f}",
                    "-" if flat is None else flat, f"{r['final']['score']:.4f}",
                    f"{r['train_s_per_step']:.2f}", f"{r['cpu_s'] / 60:.0f}"])
    return out


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def design_rows(study: Study, grid: dict[str, tuple[float, ...]], seeds: tuple[int, ...],
                done: dict[str, dict[str, Any]]) -> list[list[object]]:
    """Per design: budget, stored %, the lr grid's selection scores, the kept lr, the final scores over its seeds."""
    kept = protocol.kept_runs(grid, seeds, done)
    out = []
    for did, lrs in grid.items():
        d = study.designs[did]
        cells = []
        for lr in lrs:
            row = done.get(run_key(did, lr, seeds[0]))
            cells.append(f"{lr:g}: " + ("-" if row is None else "failed" if row["status"] != "finished"
                                        else f"{row['selection']['score']:.3f}"))
        best, runs = kept[did]
        finals = [r["final"]["score"] for r in runs]
        edge = "" if best is None or len(lrs) < 2 or best not in (min(lrs), max(lrs)) else " (edge)"
        out.append([did, d.family, d.budget, f"{100 * price(d.design, study.model).fraction:.3f}%",
                    "; ".join(cells), "-" if best is None else f"{best:g}{edge}", len(finals), mean_std(finals),
                    _flatness(None if best is None else done.get(run_key(did, best, seeds[0])))])
    return out


def _flatness(row: dict[str, Any] | None) -> str:
    """'flat from step / best at step' of one run's selection curve ('-' where the curve is too short to tell)."""
    if row is None or row.get("status") != "finished":
        return "-"
    flat = flat_step(curve(row))
    return f"{'-' if flat is None else flat} / {row['selection'].get('selected_step', '-')}"


def cost(rows: list[dict[str, Any]]) -> dict[str, float]:
    """CPU and wall time of a set of runs, in hours, and how many runs that is."""
    wall = sum(r.get("wall_s") or 0.0 for r in rows)
    cpu = sum(r.get("cpu_s") or 0.0 for r in rows)
    steps = [r["train_s_per_step"] for r in rows if r.get("train_s_per_step")]
    return {"runs": len(rows), "wall_h": wall / 3600, "cpu_h": cpu / 3600,
            "median_s_per_step": statistics.median(steps) if steps else math.nan}
