"""The analysis report on real data: the 88 tabulated MiniLM/SST-2 learning curves, recorded as a search records them.

    python benchmarks/grid_report.py --out /tmp/grid_report --data-dir DIR  # MLflow store + `analysis.report` files
    python benchmarks/grid_report.py --smoke     # the first 8 curves into a temporary folder: does it still run?

DIR is the SST-2 sample the table was trained on (default $PETL_SST2_DIR); its dev.tsv gives the majority-class
reference score. Without it the report uses the fixed reference (score 0) and says so.

Every (design, lr) point of `benchmarks/spaces/bench_sst2_grid.yaml` (see `replay_search.py table`) becomes one trial
of a search recorded in a fresh SQLite MLflow store through the product's own `search.tracking.MlflowSearchCallback`:
the same parent run, child runs, params, tags and per-step metrics a live search writes, in the order the table lists
them. Then the report is written from that store by `analysis.report.main`, exactly as a user would run it. Run it
from a checkout of another commit (copy this file and bench_data.py there) to compare what the report says before
and after a change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_data import add_data_dir  # noqa: E402
from benchmarks.replay_search import SPACE, TABLE, grid_configs, key_of, load_table  # noqa: E402

EVAL_CAP = 256  # the grid space's eval_cap: the trials were scored on the first 256 dev examples


def _replicate(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The trial config a search with one training seed hands to Ray (a checkout before replicate seeds: as is)."""
    try:
        from search.replicates import with_replicate
    except ImportError:  # an older checkout: trials carried no seed of their own
        return config
    return with_replicate(config, seed=seed, index=0, count=1)


def _reference_tags(client: Any, parent_id: str, data_dir: Path | None) -> None:
    try:
        from search import contract as C
    except ImportError:  # an older checkout: the report used its fixed reference score 0
        return
    from finetune.data import load_examples
    from finetune.tasks import get_task

    labels = None
    if data_dir is not None and (data_dir / "dev.tsv").is_file():
        labels = [int(e["label"]) for e in load_examples(get_task("sst2"), "validation", data_dir, limit=EVAL_CAP)]
    for key, value in C.reference_tags(C.task_reference("sst2", labels), "accuracy").items():
        client.set_tag(parent_id, key, value)


def record(table: Path, space: Path, uri: str, experiment: str, data_dir: Path | None, seed: int = 42,
           limit: int | None = None) -> str:
    """Write the table (its first `limit` points) into `uri` as one search; returns the parent run id."""
    from search.store import check_tracking, parent_run
    from search.tracking import MlflowSearchCallback

    rows = load_table(table)
    configs = [c for c in grid_configs(space) if key_of(c) in rows][:limit]
    client = check_tracking(uri)
    parent_id = parent_run(client, experiment, f"/grid/{experiment}", {"task": "sst2", "space": str(space)},
                           {"space.yaml": space.read_text()}, resume=False)
    _reference_tags(client, parent_id, data_dir)
    max_t = max(max(r["curve"]) for r in rows.values())
    callback = MlflowSearchCallback(uri, parent_id, max_t, str(Path("/tmp") / experiment),
                                    refresh_every_s=float("inf"), num_samples=len(configs))
    for i, config in enumerate(configs):
        row = rows[key_of(config)]
        trial = SimpleNamespace(trial_id=f"grid_{i:05d}", config=_replicate(config, seed), last_result=None,
                                error_file=None)
        callback.on_trial_start(i, [], trial)
        for step, score in sorted(row["curve"].items()):
            result = {"step": step, "score": score, "fraction": row["fraction"]}
            callback.on_trial_result(i, [], trial, result)
        if row.get("failed"):
            callback.on_trial_result(i, [], trial, {"failed": 1, "failure": row["failed"], "step": max(row["curve"])})
        callback.on_trial_complete(i, [], trial)
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for mlflow.db and the report (report/); required")
    ap.add_argument("--table", default=str(TABLE), type=Path)
    ap.add_argument("--space", default=str(SPACE), type=Path)
    add_data_dir(ap, "the table was trained on (optional: for the majority-class reference score)")
    ap.add_argument("--limit", type=int, default=None, help="record only the first LIMIT points")
    ap.add_argument("--smoke", action="store_true", help="the first 8 points into a temporary folder")
    args, report_args = ap.parse_known_args()
    if args.smoke:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="grid_report_smoke_") as tmp:
            return write(Path(tmp), args.table, args.space, None, 8, report_args)
    if args.out is None:
        ap.error("--out: a folder for mlflow.db and the report is required, got none; pass --out DIR (or --smoke)")
    return write(args.out, args.table, args.space, Path(args.data_dir) if args.data_dir else None, args.limit,
                 report_args)


def write(out: Path, table: Path, space: Path, data_dir: Path | None, limit: int | None,
          report_args: list[str]) -> int:
    """Record the table into out/mlflow.db, then `analysis.report.main` into out/report, as a user runs it."""
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out.resolve() / 'mlflow.db'}"
    parent_id = record(table, space, uri, "grid", data_dir, limit=limit)
    from analysis.report import main as report

    return report(["--parent-run-id", parent_id, "--tracking-uri", uri, "--out", str(out / "report"), *report_args])


if __name__ == "__main__":
    raise SystemExit(main())
