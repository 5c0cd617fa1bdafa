"""What a tier's table holds, design by design, read from the table alone (no data files, no model weights).

A row counts for the tier when it was made for it with the tier's current settings: its `tier`, its design (the
design point as designs.yaml defines it now), its lr in the design's grid, its seed among the tier's seeds, and its
training settings equal to the tier's `train` block. (The runner also checks the data files' and the weights'
hashes; those are the same for every row of one committed table, and the report prints them.) The protocol of
protocol.py then names each design's kept lr and its runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.study import protocol
from benchmarks.study.designs import Study, StudyDesign, price
from benchmarks.study.stats import Interval, t_interval
from benchmarks.study.table import run_key


@dataclass(frozen=True)
class TierPlan:
    name: str
    task: str
    grid: dict[str, tuple[float, ...]]  # design id -> its lrs, in the tier's (= the runner's) order
    seeds: tuple[int, ...]
    train: dict[str, Any]


def tier_plan(name: str, spec: dict[str, Any], study: Study) -> TierPlan:
    lrs = spec.get("designs") or {d.id: d.lrs for d in study.designs.values()}
    unknown = sorted(set(lrs) - set(study.designs))
    if unknown:
        raise ValueError(f"tier {name}: unknown design id(s) {unknown}; expected ids of benchmarks/study/designs.yaml")
    grid = {d: tuple(float(x) for x in v) for d, v in lrs.items()}
    return TierPlan(name, spec["task"], grid, tuple(int(s) for s in spec["seeds"]), dict(spec["train"]))


def counts(plan: TierPlan, study: Study, row: dict[str, Any]) -> bool:
    did = row.get("design_id")
    if row.get("tier") != plan.name or did not in plan.grid or row.get("seed") not in plan.seeds:
        return False
    if row.get("lr") not in plan.grid[did] or row.get("design") != study.designs[did].design.to_dict():
        return False
    train = row.get("train") or {}
    return train.get("task") == plan.task and all(train.get(k) == v for k, v in plan.train.items())


def current(plan: TierPlan, study: Study, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows that count, by run key (a later row of the same key replaces an earlier one, as in the runner)."""
    return {row["key"]: row for row in rows if counts(plan, study, row)}


@dataclass(frozen=True)
class DesignResult:
    design: StudyDesign
    fraction: float  # stored parameters / backbone parameters (finetune.accounting, the task head apart)
    lr: float | None  # the kept lr (None until its grid is complete, or when every lr failed)
    scores: dict[int, float]  # seed -> final score of the finished runs at the kept lr
    selection: dict[int, float]  # seed -> selection score of those runs (what choices between designs are made on)
    done: int  # runs of the protocol in the table (finished or failed)
    needed: int  # runs the protocol makes for this design: its lr grid + the further seeds
    all_failed: bool  # every lr of its grid failed: no score, no replicates

    @property
    def complete(self) -> bool:
        return self.done >= self.needed or self.all_failed

    @property
    def ci(self) -> Interval | None:
        return t_interval(list(self.scores.values())) if self.scores else None


def design_results(plan: TierPlan, study: Study, done: dict[str, dict[str, Any]]) -> dict[str, DesignResult]:
    kept = protocol.kept_runs(plan.grid, plan.seeds, done)
    out = {}
    for did, lrs in plan.grid.items():
        best, runs = kept[did]
        grid_rows = [done[k] for lr in lrs if (k := run_key(did, lr, plan.seeds[0])) in done]
        replicates = [] if best is None else [k for s in plan.seeds[1:] if (k := run_key(did, best, s)) in done]
        all_failed = len(grid_rows) == len(lrs) and best is None
        d = study.designs[did]
        out[did] = DesignResult(d, price(d.design, study.model).fraction, best,
                                {int(r["seed"]): float(r["final"]["score"]) for r in runs},
                                {int(r["seed"]): float(r["selection"]["score"]) for r in runs},
                                len(grid_rows) + len(replicates), len(lrs) + len(plan.seeds) - 1, all_failed)
    return out
