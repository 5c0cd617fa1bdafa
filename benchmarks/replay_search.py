"""Search efficiency, many seeds: replay the production searcher and schedulers against tabulated real learning curves.

A live comparison (`bench_search.py`) costs ~20 min per seed on 2 cores, too much for the several paired seeds a
hypervolume comparison needs. The field's answer is a tabular benchmark: train every point of a finite space once,
record its learning curve, then run the search many times against the table. Here:

    python benchmarks/replay_search.py table --shards 2      # train all 88 points of spaces/bench_sst2_grid.yaml (~45 min)
    python benchmarks/replay_search.py replay --seeds 20     # replay none / banded / asha / pareto on the table

`table` trains each (design, lr) of the grid space with the real `trainables.loop.train` (MiniLM, SST-2 sample,
90 steps, evaluation every 10) and appends {key, fraction, curve {step: score}} to JSONL shards.

`replay` drives the *production* classes without Ray: `search.searcher.FullFidelityOptunaSearch` over
`search.driver.DefineByRunSpace` (TPE, the driver's settings) suggests configs, and `search.scheduler.make_scheduler`
decides CONTINUE/STOP at every evaluation, exactly as Ray Tune would call them. Time is simulated in optimizer steps
with `--concurrency` workers (a trial's evaluations arrive in step order across workers); a trial's score at step t is
the table's. Compute = Σ steps trained; HV = `analysis.pareto.hypervolume` of full-fidelity trials (same reference
as everywhere). For each seed, `none` runs --n trials; the early-stopping methods run until they have spent the same
compute as that seed's `none`, and we record the compute at which each first reaches HV(none).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPACE = ROOT / "spaces" / "bench_sst2_grid.yaml"
DATA = Path("/work/shared/data/sst2")
TABLE = ROOT / "benchmarks" / "curves_sst2_grid"


def key_of(config: dict[str, Any]) -> str:
    return json.dumps({"design": config["design"], "lr": config["train"]["lr"]}, sort_keys=True)


def sampler_for(space_path: Path, data_dir: str | None = None) -> Any:
    """(DefineByRunSpace, resolved run configuration, task) exactly as `petl-search --space ...` plans them."""
    from search.cli import build_parser
    from search.plan import plan

    p = plan(build_parser().parse_args(["--space", str(space_path)] + (["--data-dir", data_dir] if data_dir else [])))
    return p.define_by_run, p.run, p.task


def grid_configs(space_path: Path) -> list[dict[str, Any]]:
    """Every point of a finite space, by Optuna's brute-force sampler over the same define-by-run function."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, _, _ = sampler_for(space_path)
    seen: dict[str, dict[str, Any]] = {}

    def objective(trial: Any) -> float:
        config = sampler(trial)
        seen.setdefault(key_of(config), config)
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
    study.optimize(objective, n_trials=10_000)
    return [seen[k] for k in sorted(seen)]


class _Collect:
    def __init__(self) -> None:
        self.curve: dict[int, float] = {}

    def report(self, metrics: dict[str, float]) -> None:
        self.curve[int(metrics["step"])] = float(metrics["score"])


def build_table(args: argparse.Namespace) -> int:
    """Train the grid's points whose index ≡ shard (mod shards); resumable (done keys are skipped)."""
    import torch

    from trainables.designpoint import DesignPoint
    from trainables.loop import train

    torch.set_num_threads(1)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    configs = grid_configs(Path(args.space))
    out = Path(args.table)
    out.mkdir(parents=True, exist_ok=True)
    shard_file = out / f"shard{args.shard}.jsonl"
    done = {json.loads(line)["key"] for f in out.glob("shard*.jsonl") for line in f.read_text().splitlines() if line}
    _, run, _ = sampler_for(Path(args.space), args.data_dir)
    mine = [c for i, c in enumerate(configs) if i % args.shards == args.shard and key_of(c) not in done]
    print(f"{len(configs)} grid points, {len(done)} done, shard {args.shard}/{args.shards}: {len(mine)} to train",
          flush=True)
    for i, config in enumerate(mine):
        t0 = time.perf_counter()
        cfg = run.trial_config(config["train"], None)
        collect = _Collect()
        try:
            train(DesignPoint.from_dict(config["design"]), cfg, collect)
            failed = None
        except Exception as err:  # noqa: BLE001 - a failed point is a real outcome; tabulate it as such
            failed = f"{type(err).__name__}: {err}"
        row = {"key": key_of(config), "fraction": config["fraction"], "curve": collect.curve, "failed": failed,
               "seconds": round(time.perf_counter() - t0, 1)}
        with shard_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{i + 1}/{len(mine)}] {row['seconds']:.0f} s fraction {config['fraction']:.2e} "
              f"final {collect.curve.get(cfg.max_steps, math.nan):.3f} {failed or ''}", flush=True)
    return 0


class _Trial:
    """What Ray's schedulers read of a trial."""

    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id, self.config = trial_id, config


def load_table(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for f in sorted(path.glob("shard*.jsonl")) for line in f.read_text().splitlines() if line]
    return {r["key"]: {**r, "curve": {int(k): v for k, v in r["curve"].items()}} for r in rows}


def simulate(method: str, seed: int, table: dict[str, dict[str, Any]], sampler: Any, *, workers: int, max_t: int,
             n_trials: int | None = None, horizon: float | None = None, grace: int = 10, eta: float = 3,
             bands: int = 2, memo: bool = False) -> list[dict[str, Any]]:
    """One search, event by event: `workers` trials run at once, each reporting at the steps its curve has.

    `none` starts exactly `n_trials`; the others keep every worker busy until `horizon` (simulated steps per
    worker). Returns one record per trial that ended by `horizon`, in completion order.
    """
    import heapq

    import optuna
    from ray.tune.schedulers import TrialScheduler

    from search.scheduler import make_scheduler
    from search.searcher import FullFidelityOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)  # = driver's
    searcher = FullFidelityOptunaSearch(space=sampler, sampler=tpe, max_steps=max_t)
    scheduler = make_scheduler(method, max_t=max_t, grace_period=grace, reduction_factor=eta, bands_per_decade=bands)
    events: list[tuple[float, int, str, int]] = []
    trials: dict[str, tuple[_Trial, dict[str, Any]]] = {}
    done: list[dict[str, Any]] = []
    started = 0
    finished_keys: set[str] = set()  # memo: a config already trained to full fidelity is answered from the table

    def start(now: float) -> None:
        nonlocal started
        tid = f"t{started:05d}"
        started += 1
        config = searcher.suggest(tid)
        row = table[key_of(config)]  # KeyError: the grid table does not cover the space
        if memo and key_of(config) in finished_keys:  # deterministic training: the same config, the same result
            result = {"step": max_t, "score": row["curve"][max_t], "fraction": row["fraction"]}
            searcher.on_trial_complete(tid, result)
            done.append({"trial": tid, "key": key_of(config), "end": now, "steps": 0, "fraction": row["fraction"],
                         "score": result["score"], "finished": True, "reused": True})
            if may_start(now):
                start(now)
            return
        trial = _Trial(tid, config)
        scheduler.on_trial_add(None, trial)
        trials[tid] = (trial, row)
        steps = sorted(row["curve"]) or [0]
        heapq.heappush(events, (now + steps[0], started, tid, steps[0]))

    def may_start(now: float) -> bool:
        if n_trials is not None:
            return started < n_trials
        return now < horizon and started < 20_000  # the cap only matters if every suggestion is a reused one

    for _ in range(workers):
        if may_start(0.0):
            start(0.0)
    while events:
        now, _, tid, step = heapq.heappop(events)
        if horizon is not None and now > horizon:
            break
        trial, row = trials[tid]
        curve = row["curve"]
        failed = bool(row.get("failed")) and step == max(curve, default=0)
        result = {"step": step, "score": curve.get(step), "fraction": row["fraction"]}
        if failed:
            result = {"failed": 1, "step": step, "fraction": row["fraction"]}
        action = scheduler.on_trial_result(None, trial, result) if not failed else TrialScheduler.STOP
        later = [s for s in sorted(curve) if s > step]
        if action == TrialScheduler.STOP or not later or step >= max_t:
            searcher.on_trial_complete(tid, result)
            scheduler.on_trial_complete(None, trial, result)
            finished = not failed and step >= max_t
            if finished:
                finished_keys.add(key_of(trial.config))
            done.append({"trial": tid, "key": key_of(trial.config), "end": now, "steps": step,
                         "fraction": row["fraction"],
                         "score": result.get("score") if finished else math.nan, "finished": finished})
            if may_start(now):
                start(now)
        else:
            heapq.heappush(events, (now + later[0] - step, started, tid, later[0]))
    return done


def hv_by_time(done: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    from analysis.pareto import hypervolume_history

    times = [d["end"] for d in done]
    hv = hypervolume_history([d["score"] for d in done], [d["fraction"] for d in done], list(range(len(done))))
    return times, list(hv)


def hv_at(curve: tuple[list[float], list[float]], t: float) -> float:
    import bisect

    times, hv = curve
    k = bisect.bisect_right(times, t + 1e-9)
    return hv[k - 1] if k else 0.0


def replay(args: argparse.Namespace) -> int:
    import statistics

    table = load_table(Path(args.table))
    sampler, run, _ = sampler_for(Path(args.space))
    max_t = run.train.max_steps
    if args.oracle:  # a perfect low-fidelity signal: every evaluation already shows the final score
        table = {k: {**r, "curve": {s: r["curve"][max_t] for s in r["curve"]}} for k, r in table.items()}
    methods = args.methods.split(",")
    print(f"# replay: {len(table)} tabulated points, {args.seeds} seeds, none = {args.n} trials, {args.workers} "
          f"workers, grace {args.grace}, eta {args.eta:g}, bands/decade {args.bands}"
          f"{', ORACLE rungs' if args.oracle else ''}", flush=True)
    per: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    duplicates: list[int] = []
    for seed in range(args.seed0, args.seed0 + args.seeds):
        base = simulate("none", seed, table, sampler, workers=args.workers, max_t=max_t, n_trials=args.n,
                        memo=args.memo)
        t_none = max(d["end"] for d in base)
        curve_none = hv_by_time(base)
        hv_none = curve_none[1][-1]
        duplicates.append(len(base) - len({d["key"] for d in base}))  # configs none trained more than once
        line = [f"seed {seed}: none HV {hv_none:.4f} @ {t_none * args.workers:.0f} steps"]
        for m in methods:
            done = base if m == "none" else simulate(m, seed, table, sampler, workers=args.workers, max_t=max_t,
                                                     horizon=t_none * args.horizon, grace=args.grace, eta=args.eta,
                                                     bands=args.bands, memo=args.memo)
            times, hv = hv_by_time(done)
            reach = next((t for t, h in zip(times, hv) if h >= hv_none - 1e-12), math.inf)
            within = [d for d in done if d["end"] <= t_none + 1e-9]  # counts at equal compute
            full = [d for d in within if d["finished"]]
            low = [d for d in full if d["fraction"] < args.low]
            front_low = min((d["fraction"] for d in full), default=math.nan)
            rec = {"hv_third": hv_at((times, hv), t_none / 3), "hv_half": hv_at((times, hv), t_none / 2),
                   "lowest_full": front_low,
                   "hv_equal": hv_at((times, hv), t_none), "reach": reach / t_none, "trials": len(within),
                   "full": len(full), "low_full": len(low), "hv_none": hv_none}
            per[m].append(rec)
            line.append(f"{m} {rec['hv_third']:.3f}/{rec['hv_equal']:.3f} reach {rec['reach']:.2f}")
        print(" | ".join(line), flush=True)
    print()
    print("| method | seeds | HV at 1/3 compute (mean) | at 1/2 | at equal compute | seeds reaching HV(none) "
          "within 1/3 / 1/2 / 1 / " + f"{args.horizon:g} x its compute | median compute to reach it | at equal compute: trials (mean) | "
          f"full fidelity (mean) | full-fidelity < {args.low:g} (mean) | seeds with one < {args.low:g} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, recs in per.items():
        def mean(k: str, recs: list[dict[str, float]] = recs) -> float:
            return statistics.fmean(r[k] for r in recs)

        wins = " / ".join(str(sum(r["reach"] <= b + 1e-9 for r in recs)) for b in (1 / 3, 1 / 2, 1, args.horizon))
        med = statistics.median(r["reach"] for r in recs)
        print(f"| {m} | {len(recs)} | {mean('hv_third'):.4f} | {mean('hv_half'):.4f} | {mean('hv_equal'):.4f} | "
              f"{wins} | {med:.2f} x | {mean('trials'):.1f} | {mean('full'):.1f} | {mean('low_full'):.2f} | "
              f"{sum(r['low_full'] > 0 for r in recs)} |")
    print(f"\nnone's HV at its full compute (mean over seeds): {statistics.fmean(r['hv_none'] for r in per[methods[0]]):.4f}")
    print(f"repeated configs among none's {args.n} trials, per seed: {duplicates}")
    if args.json:
        Path(args.json).write_text(json.dumps(per, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="train the grid and tabulate learning curves")
    t.add_argument("--space", default=str(SPACE))
    t.add_argument("--data-dir", default=str(DATA))
    t.add_argument("--table", default=str(TABLE))
    t.add_argument("--shard", type=int, default=0)
    t.add_argument("--shards", type=int, default=1)
    r = sub.add_parser("replay", help="replay seeded searches against the table")
    r.add_argument("--space", default=str(SPACE))
    r.add_argument("--table", default=str(TABLE))
    r.add_argument("--methods", default="none,pareto,banded,asha")
    r.add_argument("--seeds", type=int, default=10)
    r.add_argument("--seed0", type=int, default=0)
    r.add_argument("--n", type=int, default=30, help="trials of the no-early-stopping search")
    r.add_argument("--workers", type=int, default=2, help="concurrent trials")
    r.add_argument("--grace", type=int, default=10)
    r.add_argument("--eta", type=float, default=3.0)
    r.add_argument("--bands", type=int, default=2, help="bands per decade (banded)")
    r.add_argument("--horizon", type=float, default=1.0,
                   help="early-stopping searches run until this multiple of none's compute")
    r.add_argument("--memo", action="store_true",
                   help="what-if: a config already trained to full fidelity is answered from its result, 0 steps")
    r.add_argument("--oracle", action="store_true", help="what-if: rungs see the final score (an upper bound)")
    r.add_argument("--low", type=float, default=1e-3, help="the low-fraction end: full-fidelity trials below this")
    r.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.cmd == "table":
        return build_table(args)
    return replay(args)


if __name__ == "__main__":
    raise SystemExit(main())
