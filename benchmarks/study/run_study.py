"""Run a tier of the study: every design of benchmarks/study/designs.yaml through the protocol of protocol.py, each run
trained by the product's loop (`finetune.loop.train`) and scored by the product's `evaluate`, one JSON line per
finished run in the tier's table (tiers.yaml). Resumable anywhere: the table is the state, and a run killed midway
continues from its last evaluation (the loop's own resume state, kept under --work).

    nice -n 15 python -m benchmarks.study.run_study --tier sst2                 # the SST-2 tier, 2 workers x 1 thread
    python -m benchmarks.study.run_study --tier sst2 --status                    # what the table holds, per design
    python -m benchmarks.study.run_study --tier sst2 --dry-run                   # what is still to run
    python -m benchmarks.study.run_study --tier pilot_sst2                       # the pilot (docs/study.md)
    python -m benchmarks.study.run_study --tier mnli --workers 12                # on a GPU: benchmarks/study/mnli_gpu.sh
    python -m benchmarks.study.run_study --tier mnli --smoke --table /tmp/t.jsonl --designs head_only,lora_qv_r32

--smoke trains 4 steps per run, scores 64 final rows and needs --table (it never writes a committed table).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.study import protocol, splits
from benchmarks.study.designs import StudyDesign, load_study
from benchmarks.study.table import append_row, exclusive, fingerprint, read_rows, run_key

REPO = Path(__file__).resolve().parents[2]
TIERS_FILE = Path(__file__).with_name("tiers.yaml")
SMOKE = {"max_steps": 4, "eval_every": 2}
SMOKE_FINAL_ROWS = 64


def load_tiers(path: Path = TIERS_FILE) -> dict[str, dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def code_version() -> dict[str, Any]:
    """The commit the runs are made with, and whether the product or the study code differ from it."""
    env = os.environ.get("STUDY_CODE_VERSION")  # a copied tree without .git (a lent GPU machine) passes it in
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "finetune", "benchmarks/study/*.py",
                                "benchmarks/study/*.yaml"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": env or "unknown", "dirty": None}


def model_sha(task: str, model: str) -> str:
    """sha256 of the checkpoint's weights file: what a run's model is, wherever its folder lives."""
    from finetune.models import resolve_model_path
    from finetune.tasks import get_task

    folder = Path(resolve_model_path(get_task(task), model))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"model {model!r} must be a checkpoint folder with model.safetensors, got {folder}")
    return splits.sha256(weights)


class Tier:
    """One tier resolved against the design list: its grid, seeds, training settings and each run's fingerprint."""

    def __init__(self, name: str, spec: dict[str, Any], smoke: bool, only: list[str] | None,
                 model: str | None = None) -> None:
        self.name, self.spec, self.smoke = name, spec, smoke
        self.study = load_study()
        self.model = model or self.study.model  # a checkpoint folder, or the packaged MiniLM's alias
        self.model_sha = model_sha(spec["task"], self.model)  # runs on other weights are other runs
        lrs = spec.get("designs") or {d.id: d.lrs for d in self.study.designs.values()}
        unknown = sorted(set(lrs) - set(self.study.designs)) + sorted(set(only or ()) - set(self.study.designs))
        if unknown:
            raise ValueError(f"tier {name}: unknown design id(s) {unknown}; expected ids of {sorted(self.study.designs)}")
        self.grid = {d: tuple(float(x) for x in v) for d, v in lrs.items() if not only or d in only}
        self.seeds = tuple(int(s) for s in spec["seeds"])[: 2 if smoke else None]
        self.train = {**spec["train"], **(SMOKE if smoke else {})}
        self.epochs = spec.get("code_epochs", {})  # site -> tag: bump a tag to retrain the designs using that site

    def design(self, design_id: str) -> StudyDesign:
        return self.study.designs[design_id]

    def settings(self, job: protocol.Job, data: splits.TierData) -> dict[str, Any]:
        return {"task": self.spec["task"], "model": self.model, "data_dir": str(data.train_dir),
                "eval_cap": None, "engine": "torch", "precision": "fp32", **self.train, "lr": job.lr,
                "seed": job.seed}

    def fingerprint(self, design_id: str, lr: float, seed: int, data: splits.TierData) -> str:
        d = self.design(design_id)
        epochs = {s.value: self.epochs[s.value] for s in d.design.sites() if s.value in self.epochs}
        return fingerprint({"design": d.design.to_dict(), "train": {**self.train, "lr": lr, "seed": seed},
                            "task": self.spec["task"], "model": self.model_sha, "data": data.fingerprint,
                            "code_epochs": epochs, "smoke": self.smoke})

    def done(self, rows: list[dict[str, Any]], data: splits.TierData) -> dict[str, dict[str, Any]]:
        """Rows of this tier's current grid whose fingerprint matches (stale rows stay in the table, unused)."""
        out = {}
        for row in rows:
            did = row.get("design_id")
            if did in self.grid and row.get("fingerprint") == self.fingerprint(did, row["lr"], row["seed"], data):
                out[row["key"]] = row
        return out


def job_spec(tier: Tier, job: protocol.Job, data: splits.TierData, work: Path) -> dict[str, Any]:
    d = tier.design(job.design_id)
    return {"tier": tier.name, "job": job.__dict__, "key": job.key, "design": d.design.to_dict(),
            "meta": {"family": d.family, "budget": d.budget, "method": d.method},
            "settings": tier.settings(job, data), "final_dir": str(data.final_dir),
            "final_cap": SMOKE_FINAL_ROWS if tier.smoke else None,
            "run_dir": str(work / "runs" / tier.name / tier.fingerprint(job.design_id, job.lr, job.seed, data)),
            "fingerprint": tier.fingerprint(job.design_id, job.lr, job.seed, data), "data": data.fingerprint,
            "data_rows": data.rows, "code": code_version(), "model_sha": tier.model_sha}


def _init_worker(threads: int) -> None:
    """A worker dies with its runner (SIGTERM, kill -9 alike): orphans would train runs that nobody records."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the runner died before the line above
            os._exit(1)
    import torch

    torch.set_num_threads(threads)


def _log(msg: str) -> None:
    print(f"{datetime.datetime.now().isoformat(timespec='seconds')} {msg}", flush=True)


def _describe(row: dict[str, Any]) -> str:
    if row["status"] != "finished":
        return f"FAILED at step {row.get('failed_step')}: {row.get('failure')}"
    return (f"selection {row['selection']['score']:.4f} final {row['final']['score']:.4f} "
            f"{row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} s CPU, {row['train_s_per_step']:.3f} s/step")


def run_tier(tier: Tier, table: Path, data: splits.TierData, work: Path, workers: int, threads: int,
             max_jobs: int | None, deadline_s: float | None = None) -> int:
    """Train what the plan says until it is empty (or, past the deadline, until the runs in flight end); returns the
    number of runs that raised (a failed run is a result, not an error)."""
    from benchmarks.study.worker import execute

    started, errors, running, t0 = 0, {}, {}, time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    with exclusive(table), cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                  initargs=(threads,)) as pool:
        while True:
            todo = [j for j in protocol.plan(tier.grid, tier.seeds, tier.done(read_rows(table), data))
                    if j.key not in running.values() and j.key not in errors]
            late = deadline_s is not None and time.monotonic() - t0 > deadline_s
            while todo and not late and len(running) < workers and (max_jobs is None or started < max_jobs):
                job = todo.pop(0)
                running[pool.submit(execute, job_spec(tier, job, data, work))] = job.key
                started += 1
                _log(f"start {job.key} ({job.role}); {len(todo)} more planned now")
            if not running:
                if late and todo:
                    _log(f"deadline of {deadline_s:g} s passed: {len(todo)} planned runs left for the next start")
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                key = running.pop(fut)
                try:
                    row = fut.result()
                except Exception as err:  # noqa: BLE001 - a crash (not a failed run) is retried on the next start
                    errors[key] = f"{type(err).__name__}: {err}"
                    _log(f"ERROR {key}: {errors[key]} (not recorded; the next start retries it)")
                    continue
                append_row(table, row)
                _log(f"done  {key}: {_describe(row)}")
    for key, err in errors.items():
        _log(f"not recorded: {key}: {err}")
    return len(errors)


def status(tier: Tier, table: Path, data: splits.TierData) -> str:
    """Per design: the lr grid's selection scores, the kept lr, the final scores of its seeds; totals."""
    import statistics

    rows = read_rows(table)
    done = tier.done(rows, data)
    kept = protocol.kept_runs(tier.grid, tier.seeds, done)
    lines = [f"{table}: {len(rows)} rows, {len(done)} current for tier {tier.name}; "
             f"{len(protocol.plan(tier.grid, tier.seeds, done))} runs planned now, "
             f"{protocol.runs_left(tier.grid, tier.seeds, done)} left in all (a design's further seeds are planned "
             "once its lr grid is done)"]
    for did, lrs in tier.grid.items():
        grid = []
        for lr in lrs:
            row = done.get(run_key(did, lr, tier.seeds[0]))
            grid.append(f"{lr:g}:" + ("-" if row is None else "fail" if row["status"] != "finished"
                                      else f"{row['selection']['score']:.3f}"))
        best, runs = kept[did]
        finals = [r["final"]["score"] for r in runs]
        agg = "" if not finals else f"final {statistics.fmean(finals):.4f}" + (
            f" ± {statistics.stdev(finals):.4f}" if len(finals) > 1 else "") + f" (n={len(finals)})"
        kept_lr = "-" if best is None else f"{best:g}"
        lines.append(f"  {did:22s} {' '.join(grid):40s} kept {kept_lr:>7} {agg}")
    wall = sum(r.get("wall_s", 0) for r in done.values())
    cpu = sum(r.get("cpu_s", 0) for r in done.values())
    lines.append(f"  total over current rows: {wall / 3600:.2f} h of run wall time, {cpu / 3600:.2f} CPU-hours")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study.run_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tier", required=True, help="a tier of benchmarks/study/tiers.yaml: sst2, pilot_sst2, mnli")
    p.add_argument("--table", type=Path, default=None, help="the results table (default: the tier's)")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("PETL_DATA", "/work/shared/data")),
                   help="folder holding the tier's data folder (default: $PETL_DATA or /work/shared/data)")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "study" / "work",
                   help="derived data and in-progress runs (git-ignored; safe to delete between runs)")
    p.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--nice", type=int, default=15, help="raise the runner's niceness to this (default 15)")
    p.add_argument("--designs", default=None, help="comma-separated design ids: run only these")
    p.add_argument("--max-jobs", type=int, default=None, help="start at most this many runs, then stop")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="start no run after this many seconds; the runs in flight finish (a lent GPU's time limit)")
    p.add_argument("--model", default=None,
                   help="checkpoint folder to use instead of the study's model (a copy of MiniLM on a GPU machine)")
    p.add_argument("--smoke", action="store_true", help="4 steps per run, 64 final rows, 2 seeds; needs --table")
    p.add_argument("--status", action="store_true", help="print what the table holds and exit")
    p.add_argument("--dry-run", action="store_true", help="print the runs still to do and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tiers = load_tiers()
    if args.tier not in tiers:
        print(f"error: --tier must be one of {sorted(tiers)}, got {args.tier!r}", file=sys.stderr)
        return 2
    spec = tiers[args.tier]
    if args.smoke and args.table is None:
        print("error: --smoke needs --table (a smoke run never writes the committed table)", file=sys.stderr)
        return 2
    table = args.table or REPO / spec["table"]
    try:
        tier = Tier(args.tier, spec, args.smoke, args.designs.split(",") if args.designs else None, args.model)
        data = splits.prepare(spec, args.data_root, args.work)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.status or args.dry_run:
        jobs = protocol.plan(tier.grid, tier.seeds, tier.done(read_rows(table), data))
        print(status(tier, table, data) if args.status else "\n".join(f"{j.key} ({j.role})" for j in jobs)
              or "nothing to run")
        return 0
    if spec.get("device") == "cuda" and not args.smoke and not _cuda():
        print(f"error: tier {args.tier} is sized for a GPU and torch sees no CUDA device here "
              f"(torch.cuda.is_available() is False); run the same command on a machine with a CUDA GPU, or check "
              f"its CPU path with --smoke", file=sys.stderr)
        return 2
    os.nice(max(0, args.nice - os.nice(0)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # the spawned workers inherit it before torch loads
    _log(f"tier {tier.name}: {len(tier.grid)} designs, seeds {tier.seeds}, {args.workers} workers x "
         f"{args.threads} threads, table {table}, data {data.train_dir} ({data.rows}), model {tier.model} "
         f"(sha256 {tier.model_sha[:12]}), {platform.node()}")
    return 1 if run_tier(tier, table, data, args.work, args.workers, args.threads, args.max_jobs,
                         args.deadline_s) else 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
