"""Search efficiency on a cheap but real problem (not a test): budget-banded ASHA vs no early stopping vs plain ASHA.

    python benchmarks/bench_search.py --data-dir DIR                 # N=10: none 10 trials, the others 30 each
    python benchmarks/bench_search.py --data-dir DIR --n 6 --mult 2  # quicker, noisier
    python benchmarks/bench_search.py --analyze RUN                  # re-print the tables of a finished run in RUN
    python benchmarks/bench_search.py --smoke   # none: 2 trials of 2 steps on generated data: does it still run?

Problem: the packaged pretrained MiniLM (22.7M) on an SST-2 sample (DIR, default $PETL_SST2_DIR: the first
`train_limit` training rows, the first `eval_cap` dev rows), the space `benchmarks/spaces/bench_sst2.yaml` (prefix
tuning l 1..32, FFN adapters r 1..256 sequential/parallel, tied LoRA q/v r 1..64, lr 3e-4..5e-3; stored fractions
~2e-4 .. 8e-2), at the short fidelity fixed in that file: 90 optimizer steps of batch 16 x 64 tokens, evaluation every
10 steps on the first 256 dev rows; eval_every is ASHA's grace period, so with reduction factor 3 the rungs are at 10,
30 and 90 steps and an early-stopped trial costs 1/9 or 1/3 of a full one.

Each method is one unmodified `python search/run.py` (TPE, same --seed, --concurrency 2) into one MLflow store:
`none` with N trials, `pareto`, `banded` and `asha` with mult x N trials. Compute of a trial = the fidelity
(optimizer steps) it reached (`fidelity` column of `analysis.load.load_search`); compute of a search = their sum.
Hypervolume = `analysis.pareto.hypervolume` (fixed reference) of the full-fidelity trials only. "HV at budget B" =
hypervolume of the trials that completed (in completion order, `analysis.design.completion_order`) before the
cumulative compute exceeded B - a search truncated to B steps. Targets:
  1. HV(pareto or banded at <= compute(none)/3) >= HV(none at its full compute);
  2. their fronts reach lower fractions than plain ASHA's (lowest fraction on each front; trials with
     fraction < 1e-3 that reached full fidelity).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_data import add_data_dir, require_data_dir, smoke_sst2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's analysis/, before an installed copy elsewhere
SPACE = ROOT / "benchmarks" / "spaces" / "bench_sst2.yaml"
SMOKE_SET = ("max_steps=2", "eval_every=2", "eval_cap=16", "train_limit=64")  # --smoke: seconds per trial
METHODS = ("none", "pareto", "banded", "asha")
LOW = 1e-3  # "low-fraction end"


def run_method(method: str, trials: int, work: Path, seed: int, extra: list[str], data_dir: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(SPACE), "--data-dir", str(data_dir),
           "--num-samples", str(trials), "--storage", str(work / "runs"), "--tracking-uri",
           f"sqlite:///{work / 'mlflow.db'}", "--name", f"bench-{method}", "--scheduler", method, "--seed", str(seed),
           "--concurrency", "2", *extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(work / f"{method}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.perf_counter() - t0
    print(f"  {method}: rc {rc}, {wall:.0f} s, log {work / f'{method}.log'}", flush=True)
    if rc:
        print((work / f"{method}.log").read_text()[-4000:])
        raise SystemExit(f"search {method} failed")
    return {"method": method, "trials": trials, "wall_s": wall, "cmd": cmd}


def method_row(df: Any) -> tuple[dict, tuple[Any, Any]]:
    """One search's row of the table, and its hypervolume after each completed trial against cumulative compute."""
    import numpy as np

    from analysis.design import completion_order
    from analysis.pareto import hypervolume, pareto_mask

    full = df["full_fidelity"].to_numpy(bool)
    score = np.where(full, df["score"].to_numpy(float, na_value=np.nan), np.nan)
    frac = df["fraction"].to_numpy(float, na_value=np.nan)
    fid = df["fidelity"].fillna(0).to_numpy(float)
    fid[df["reused_from"].notna().to_numpy()] = 0.0  # answered from an identical trial's result: no training
    on_front = pareto_mask(score, frac)
    order = completion_order(df)
    hv_curve = [hypervolume(score[order[:k + 1]], frac[order[:k + 1]]) for k in range(len(order))]
    status = df["status"].value_counts().to_dict()
    row = {
        "trials": len(df), "finished": int(full.sum()), "stopped": int(status.get("stopped", 0)),
        "failed": int(status.get("failed", 0)), "compute": float(fid.sum()),
        "hv": hypervolume(score, frac), "front": int(on_front.sum()),
        "lowest_front": float(np.min(frac[on_front])) if on_front.any() else math.nan,
        "low_full": int((full & (frac < LOW)).sum()), "low_tried": int((frac < LOW).sum()),
        "best": float(np.nanmax(score)) if full.any() else math.nan,
        "front_points": sorted((float(f), float(s)) for f, s in zip(frac[on_front], score[on_front])),
    }
    return row, (np.cumsum(fid[order]), np.array(hv_curve))


def hv_at(curve: tuple[Any, Any], budget: float) -> tuple[float, int]:
    """(HV of the trials completed within `budget` steps, how many they are): the search truncated to `budget`."""
    import numpy as np

    cum, hv = curve
    k = int(np.searchsorted(cum, budget, side="right"))
    return (float(hv[k - 1]) if k else 0.0), k


def compute_to_reach(curve: tuple[Any, Any], target: float) -> float:
    import numpy as np

    cum, hv = curve
    hit = np.flatnonzero(hv >= target - 1e-12)
    return float(cum[hit[0]]) if hit.size else math.nan


def trials_table(rows: dict[str, dict]) -> list[str]:
    from analysis.pareto import REFERENCE

    lines = [f"reference point: score {REFERENCE.ref_score:g}, fraction {REFERENCE.ref_fraction:g}; HV in score x "
             "decades of fraction; only full-fidelity trials count", "",
             "| method | trials | full fidelity | stopped | failed | compute (steps) | wall s | HV | front size | "
             "best score | lowest fraction on front | trials < 1e-3: tried / full fidelity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        lines.append(f"| {m} | {r['trials']} | {r['finished']} | {r['stopped']} | {r['failed']} | "
                     f"{r['compute']:.0f} | {r['wall_s']:.0f} | {r['hv']:.4f} | {r['front']} | {r['best']:.4f} | "
                     f"{r['lowest_front']:.2e} | "
                     f"{r['low_tried']} / {r['low_full']} |")
    return lines


def budget_table(rows: dict[str, dict], curves: dict[str, tuple[Any, Any]], verdict: dict) -> list[str]:
    """HV of each method at 1/3, 1/2 and all of none's compute, and target 1 (sets `verdict`)."""
    c_none, hv_none = rows["none"]["compute"], rows["none"]["hv"]
    lines = ["", f"HV at equal compute budgets (fractions of compute(none) = {c_none:.0f} steps); trials completed "
             "within the budget in brackets:", "",
             "| method | 1/3 | 1/2 | 1 | all its trials | compute to reach HV(none) = " + f"{hv_none:.4f} |",
             "|---|---|---|---|---|---|"]
    for m in rows:
        cells = [f"{hv:.4f} ({k})" for hv, k in (hv_at(curves[m], f * c_none) for f in (1 / 3, 1 / 2, 1.0))]
        reach = compute_to_reach(curves[m], hv_none)
        reach_s = f"{reach:.0f} steps ({reach / c_none:.2f} x)" if math.isfinite(reach) else "not reached"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {rows[m]['hv']:.4f} ({rows[m]['trials']}) | {reach_s} |")
    for m in ("pareto", "banded"):
        if m not in rows:
            continue
        hv_3, k_3 = hv_at(curves[m], c_none / 3)
        verdict[f"target1_{m}"] = hv_3 >= hv_none
        lines += ["", f"Target 1 ({m} at <= 1/3 of none's compute reaches HV(none)): HV({m} @ {c_none / 3:.0f} "
                  f"steps, {k_3} trials) = {hv_3:.4f} vs HV(none @ {c_none:.0f} steps) = {hv_none:.4f} -> "
                  f"{'PASS' if verdict[f'target1_{m}'] else 'FAIL'}"]
        hv_1, _ = hv_at(curves[m], c_none)
        lines.append(f"  (at equal compute {c_none:.0f} steps: {m} {hv_1:.4f} vs none {hv_none:.4f})")
    return lines


def low_end_lines(rows: dict[str, dict], verdict: dict) -> list[str]:
    """Target 2: the early-stopping fronts reach lower fractions than plain ASHA's (sets `verdict`)."""
    lines = []
    for m in ("pareto", "banded"):
        if m in rows and "asha" in rows:
            b, a = rows[m], rows["asha"]
            ok = (b["lowest_front"] < a["lowest_front"] or not math.isfinite(a["lowest_front"])) and \
                b["low_full"] > a["low_full"]
            verdict[f"target2_{m}"] = ok
            lines.append(f"Target 2 ({m} covers the low-fraction end plain ASHA leaves empty): lowest fraction on the "
                         f"front {m} {b['lowest_front']:.2e} vs asha {a['lowest_front']:.2e}; full-fidelity trials "
                         f"< 1e-3: {m} {b['low_full']} of {b['low_tried']} tried vs asha {a['low_full']} of "
                         f"{a['low_tried']} -> {'PASS' if ok else 'FAIL'}")
    return lines


def analyse(work: Path, walls: dict[str, float] | None = None) -> tuple[str, dict]:
    from analysis.load import load_search

    uri = f"sqlite:///{work / 'mlflow.db'}"
    rows, curves = {}, {}
    for m in METHODS:
        try:
            df = load_search(f"bench-{m}", tracking_uri=uri)
        except Exception as err:  # noqa: BLE001 - a method that was not run
            print(f"({m}: {type(err).__name__}: {err})")
            continue
        rows[m], curves[m] = method_row(df)
        rows[m]["wall_s"] = (walls or {}).get(m, math.nan)
    verdict: dict = {}
    lines = trials_table(rows)
    if "none" in rows:
        lines += budget_table(rows, curves, verdict)
    lines += low_end_lines(rows, verdict)
    lines += ["", "Fronts (fraction, score), by fraction:"]
    for m, r in rows.items():
        lines.append(f"- {m}: " + ", ".join(f"({f:.2e}, {s:.3f})" for f, s in r["front_points"]))
    return "\n".join(lines), {"rows": rows, "verdict": verdict}


def run_all(args: argparse.Namespace, work: Path, data_dir: Path) -> dict[str, float]:
    """Each method's search into `work` (its wall seconds kept in walls.json, so a rerun adds methods)."""
    print(f"# bench_search {datetime.datetime.now():%Y-%m-%d %H:%M} | {platform.node()} | {os.cpu_count()} cores | "
          f"workdir {work}", flush=True)
    extra = [a for s in args.set for a in ("--set", s)]
    walls = json.loads((work / "walls.json").read_text()) if (work / "walls.json").exists() else {}
    for m in args.methods.split(","):
        n = args.n if m == "none" else int(round(args.mult * args.n))
        walls[m] = run_method(m, n, work, args.seed, extra, data_dir)["wall_s"]
        (work / "walls.json").write_text(json.dumps(walls))
    return walls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10, help="trials of the no-early-stopping search")
    ap.add_argument("--mult", type=float, default=3.0, help="banded and asha run mult x N trials")
    ap.add_argument("--seed", type=int, default=0, help="sampler seed (the same for every method)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--workdir", default=None, help="default: a new temporary folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to search/run.py")
    ap.add_argument("--analyze", default=None, metavar="DIR", help="only analyse a finished run in DIR")
    ap.add_argument("--json", default=None)
    add_data_dir(ap, "(not with --smoke or --analyze)")
    ap.add_argument("--smoke", action="store_true", help="none: 2 trials of 2 steps on generated data")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.analyze:
        work = Path(args.analyze)
        walls = json.loads((work / "walls.json").read_text()) if (work / "walls.json").exists() else None
    elif args.smoke:
        work = Path(tempfile.mkdtemp(prefix="bench_search_smoke_"))
        args.n, args.methods, args.set = 2, "none", [*SMOKE_SET, *args.set]
        walls = run_all(args, work, smoke_sst2(work / "sst2"))
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_search_"))
        work.mkdir(parents=True, exist_ok=True)
        walls = run_all(args, work, require_data_dir(args.data_dir))
    text, data = analyse(work, walls)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1, default=str))
    if args.smoke:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
