"""Orchestration overhead of a search (not a test): seconds per trial spent outside `finetune.loop.train`.

    python benchmarks/bench_orchestration.py --tiny-trials 12      # ~3-4 min on 2 cores: the DEFAULT scenarios
    python benchmarks/bench_orchestration.py --only tiny-none      # a subset
    python benchmarks/bench_orchestration.py --smoke               # one 2-trial search: does the timing still work?

Every scenario is one whole, unmodified search, `python -m search.run` (plan, MLflow parent run, Ray Tune with the
Optuna searcher over spaces/smoke.yaml, the scheduler named in the scenario, the MLflow callback, the final summary),
at --concurrency 2, in a fresh process so each pays its own Ray start. Trials are real and tiny: the packaged
pretrained MiniLM on the generated smoke task, `--set max_steps=2 eval_every=2 eval_cap=16` (build the model, inject
the design, train 2 steps, evaluate 16 examples).

Nothing is patched: the product emits named timing spans when the environment variable PETL_SPANS names a folder
(`finetune.spans`; the Ray workers inherit it): the driver's phases (plan, tracking check, Ray start, parent run,
Tune's fit, each suggestion and each told outcome, the final report), each trial in its worker, `loop.train` in it
and each evaluation's report. Time inside `train` runs from its call until its last report is handed to Ray (what
follows, Tune taking the result or ending the trial inside that report, is orchestration).

Overhead per trial, three definitions (all printed):
* literal   (wall - sum of train time) / trials; at concurrency 2 it can be < 0.
* at c=2    (wall - sum of train time / 2) / trials: the wall time per trial that training cannot explain when two
            trials train at once. "wall" is either the whole search (plan to final report; imports excluded) or
            Tune's fit alone.
* steady    at c=2 over the window from the 3rd trial's suggestion to the last trial's end: what each further trial
            costs once the first two workers are up. The 0.5 s target is judged on this one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from orchestration_report import report, summarize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout first: `python benchmarks/x.py` puts only benchmarks/ on the path
SCENARIOS = {"tiny": "banded", "tiny-pareto": "pareto", "tiny-none": "none"}  # name: --scheduler
DEFAULT = "tiny,tiny-pareto"
DRIVER_SPANS = ("search.plan", "search.check_tracking", "search.ray_start", "search.open", "search.fit",
                "search.suggest", "search.tell", "search.finish")


def search_command(name: str, trials: int, work: Path) -> list[str]:
    return [sys.executable, "-m", "search.run", "--space", str(ROOT / "spaces" / "smoke.yaml"),
            "--num-samples", str(trials), "--concurrency", "2", "--storage", str(work / "runs"),
            "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--name", name, "--scheduler", SCENARIOS[name],
            "--seed", "0", "--set", "max_steps=2", "--set", "eval_every=2", "--set", "eval_cap=16"]


def run_search(name: str, trials: int, work: Path) -> float:
    """One search in a fresh process with spans on; returns its process seconds (imports and Ray's exit included)."""
    spans_dir = work / "spans"
    spans_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PETL_SPANS": str(spans_dir), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    proc = subprocess.run(search_command(name, trials, work), capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-5000:])
        raise SystemExit(f"scenario {name} failed (rc {proc.returncode})")
    return time.perf_counter() - t0


def driver_timers(spans: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for s in spans:
        if s["name"] in DRIVER_SPANS:
            total[s["name"]] += s["seconds"]
            count[s["name"]] += 1
    return dict(total), dict(count)


def _in_window(events: list[dict[str, Any]], pid: int, start: float, end: float) -> list[dict[str, Any]]:
    return [e for e in events if e["pid"] == pid and start <= e["t"] <= end]


def trial_record(trial: dict[str, Any], events: list[dict[str, Any]], suggested: dict[str, float],
                 told: dict[str, float], window_end: float) -> dict[str, Any]:
    """One trial's latencies from its worker's events between its start and `window_end` (its end, or the next
    trial's start in the same worker when Ray ended it inside a report)."""
    tid, enter = trial["trial"], trial["start"]
    mine = _in_window(events, trial["pid"], enter, window_end)
    begin = next((e["t"] for e in mine if e["name"] == "train" and e["kind"] == "begin"), enter)
    returned = next((e["t"] for e in mine if e["name"] == "train" and e["kind"] == "end"), None)
    reports = [e["t"] for e in mine if e["name"] == "train.report"]
    # Training ends when its last report is handed to Ray: a function trainable's report waits there until Tune
    # takes the result (or ends the trial inside it), which is orchestration, not training.
    train_end = reports[-1] if reports else (returned if returned is not None else begin)
    return {"trial_id": tid, "launch": enter - suggested[tid] if tid in suggested else None,
            "pre_train": begin - enter, "train": train_end - begin,
            "tail": told[tid] - train_end if tid in told else None,
            "returned": trial.get("end") is not None, "train_returned": returned is not None,
            "reports": len(reports), "suggested": suggested.get(tid), "finished": told.get(tid), "pid": trial["pid"]}


def per_trial(events: list[dict[str, Any]], spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-trial latencies: suggestion (driver) → trial entered (worker) → train → told (driver)."""
    suggested = {s["trial"]: s["end"] for s in spans if s["name"] == "search.suggest"}
    told = {s["trial"]: s["start"] for s in spans if s["name"] == "search.tell"}
    ends = {s["trial"]: s["end"] for s in spans if s["name"] == "trial"}
    begins = sorted((e for e in events if e["name"] == "trial" and e["kind"] == "begin"), key=lambda e: e["t"])
    records = []
    for i, b in enumerate(begins):
        later = [n["t"] for n in begins[i + 1:] if n["pid"] == b["pid"]]
        window_end = ends.get(b["trial"], later[0] if later else float("inf"))
        trial = {"trial": b["trial"], "pid": b["pid"], "start": b["t"], "end": ends.get(b["trial"])}
        records.append(trial_record(trial, events, suggested, told, window_end))
    return records


def posthoc_refresh(work: Path, name: str, repeats: int) -> tuple[list[float], dict[str, float], Any]:
    """`analysis.report.update_search_report` at this search's size, `repeats` times, with its parts' spans."""
    from mlflow import MlflowClient

    from analysis.load import load_search
    from analysis.report import update_search_report
    from finetune.spans import ENV, pair_spans, read_events

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                                "tags.`petl.role` = 'search'")[0].info.run_id
    spans_dir = work / "posthoc_spans"
    spans_dir.mkdir()
    times, before = [], os.environ.get(ENV)
    os.environ[ENV] = str(spans_dir)
    try:
        for _ in range(repeats):
            t1 = time.perf_counter()
            update_search_report(client, parent, str(work / "posthoc_report"))
            times.append(time.perf_counter() - t1)
    finally:
        os.environ.pop(ENV) if before is None else os.environ.__setitem__(ENV, before)
    parts: dict[str, float] = defaultdict(float)
    for s in pair_spans(read_events(spans_dir)):
        parts[s["name"]] += s["seconds"]
    return times, dict(parts), load_search(parent_run_id=parent, client=client)


def measure(name: str, trials: int, work: Path, repeats: int) -> dict[str, Any]:
    """Run one scenario and read everything it emitted into the record `orchestration_report` tabulates."""
    from finetune.spans import pair_spans, read_events

    process_s = run_search(name, trials, work)
    events = read_events(work / "spans")
    spans = pair_spans(events)
    timers, counts = driver_timers(spans)
    whole = [s for s in spans if s["name"] in ("search.plan", "search.finish")]
    if not any(e["name"] == "trial" for e in events):
        raise SystemExit(f"scenario {name}: no trial spans under {work / 'spans'}; did the Ray workers inherit "
                         "PETL_SPANS? (finetune.spans)")
    refresh, parts, df = posthoc_refresh(work, name, repeats)
    trial_dirs = work / "runs" / name / "trials"
    finals = sorted(p.parent.name for p in trial_dirs.glob("*/petl.safetensors")) if trial_dirs.exists() else []
    return {"scenario": name, "trials": trials, "process_s": process_s,
            "wall": max(s["end"] for s in whole) - min(s["start"] for s in whole), "timers": timers,
            "counts": counts, "per_trial": per_trial(events, spans), "posthoc_refresh": refresh,
            "posthoc_parts": {k: v / repeats for k, v in parts.items()},
            "status": df["status"].value_counts().to_dict(), "n_full_fidelity": int(df["full_fidelity"].sum()),
            "final_checkpoints": len(finals)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny-trials", type=int, default=12, help="trials per search")
    ap.add_argument("--only", default=DEFAULT, help=f"comma-separated scenarios of {', '.join(SCENARIOS)}")
    ap.add_argument("--refreshes", type=int, default=3, help="timed report refreshes after each search")
    ap.add_argument("--json", default=None, help="write all raw results here")
    ap.add_argument("--smoke", action="store_true", help="one 2-trial search, one refresh (about a minute)")
    args = ap.parse_args()
    if args.smoke:
        args.only, args.tiny_trials, args.refreshes = "tiny", 2, 1
    unknown = [n for n in args.only.split(",") if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"--only: unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    print(f"# bench_orchestration {datetime.datetime.now():%Y-%m-%d %H:%M} | {platform.node()} | "
          f"{os.cpu_count()} cores | python {platform.python_version()}", flush=True)
    results = []
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench_orch_{name}_") as work:
            r = measure(name, args.tiny_trials, Path(work), args.refreshes)
        results.append(r)
        s = summarize(r)
        print(f"{name}: {r['trials']} trials, whole {s['wall']:.1f} s (process {r['process_s']:.1f} s), "
              f"fit {s['fit']:.1f} s, overhead/trial at c=2: whole {s['c2_whole']:.2f} s, fit {s['c2_fit']:.2f} s, "
              f"steady {s['steady_c2']:.2f} s, {s['workers']} worker processes; status {r['status']}", flush=True)
    print()
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
