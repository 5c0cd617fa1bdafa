"""The study's protocol as a pure function of the table: which runs are still to do, and which lr each design keeps.

A fixed grid, not an optimizer. Per design: every learning rate of its grid at the tier's first seed; then, once all
of them finished (or failed), the lr with the best selection-split score (a run's best evaluation on that split,
whose checkpoint the run keeps; ties: lower selection loss at the last evaluation, then the smaller lr), trained
again at each further seed. A failed run (diverged, NaN) is a result: that lr is
never picked, and a design whose every lr failed gets no replicates. The plan is recomputed from the table after
every finished run, so an interrupted study resumes exactly where its table ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from benchmarks.study.table import run_key

LR_GRID, REPLICATE = "lr-grid", "replicate"


@dataclass(frozen=True)
class Job:
    design_id: str
    lr: float
    seed: int
    role: str  # LR_GRID or REPLICATE

    @property
    def key(self) -> str:
        return run_key(self.design_id, self.lr, self.seed)


def selection_rank(row: dict[str, Any]) -> tuple[float, float]:
    """How a finished run ranks for lr choice: its selection score (the best evaluation, the kept checkpoint's), then
    lower selection loss (at the last evaluation)."""
    sel = row["selection"]
    loss = sel.get("eval_loss")
    return (float(sel["score"]), -float(loss) if loss is not None and math.isfinite(loss) else -math.inf)


def pick_lr(grid_rows: dict[float, dict[str, Any]]) -> float | None:
    """The kept lr among finished runs of one design at the grid seed; None when every lr failed."""
    finished = {lr: row for lr, row in grid_rows.items() if row.get("status") == "finished"}
    if not finished:
        return None
    return max(finished, key=lambda lr: (*selection_rank(finished[lr]), -lr))


def plan(grid: dict[str, tuple[float, ...]], seeds: tuple[int, ...], done: dict[str, dict[str, Any]]) -> list[Job]:
    """Runs still to do, in the study's order: a design's lr grid, then its replicates, design after design."""
    jobs: list[Job] = []
    first = seeds[0]
    for design_id, lrs in grid.items():
        grid_rows = {lr: done.get(run_key(design_id, lr, first)) for lr in lrs}
        missing = [lr for lr, row in grid_rows.items() if row is None]
        jobs += [Job(design_id, lr, first, LR_GRID) for lr in missing]
        if missing:
            continue
        best = pick_lr({lr: row for lr, row in grid_rows.items() if row is not None})
        if best is None:
            continue
        jobs += [Job(design_id, best, s, REPLICATE) for s in seeds[1:] if run_key(design_id, best, s) not in done]
    return jobs


def runs_left(grid: dict[str, tuple[float, ...]], seeds: tuple[int, ...], done: dict[str, dict[str, Any]]) -> int:
    """Every run the protocol still makes, including the further seeds that `plan` names only once a design's lr
    grid is done (a design whose every lr failed makes none)."""
    left = 0
    for design_id, lrs in grid.items():
        grid_rows = {lr: done.get(run_key(design_id, lr, seeds[0])) for lr in lrs}
        left += sum(row is None for row in grid_rows.values())
        complete = all(row is not None for row in grid_rows.values())
        best = pick_lr(grid_rows) if complete else None
        if complete and best is None:
            continue
        left += sum(best is None or run_key(design_id, best, s) not in done for s in seeds[1:])
    return left


def kept_runs(grid: dict[str, tuple[float, ...]], seeds: tuple[int, ...],
              done: dict[str, dict[str, Any]]) -> dict[str, tuple[float | None, list[dict[str, Any]]]]:
    """Per design: the kept lr and its finished runs over the seeds (the lr-grid seed counts as one)."""
    out = {}
    for design_id, lrs in grid.items():
        grid_rows = {lr: done[run_key(design_id, lr, seeds[0])] for lr in lrs if run_key(design_id, lr, seeds[0])
                     in done}
        best = pick_lr(grid_rows) if len(grid_rows) == len(lrs) else None
        runs = [] if best is None else [done[k] for s in seeds if (k := run_key(design_id, best, s)) in done
                                        and done[k].get("status") == "finished"]
        out[design_id] = (best, runs)
    return out
