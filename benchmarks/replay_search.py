"""Search efficiency, many seeds: replay the production searcher and schedulers against tabulated real learning curves.

A live comparison (`bench_search.py`) costs ~20 min per seed on 2 cores, too much for the several paired seeds a
hypervolume comparison needs. The field's answer is a tabular benchmark: train every point of a finite space once,
record its learning curve, then run the search many times against the table. Here:

    python benchmarks/replay_search.py table --data-dir DIR --shards 2   # train all 88 grid points (~45 min)
    python benchmarks/replay_search.py replay --seeds 20     # replay none / banded / asha / pareto on the table
    python benchmarks/replay_search.py --smoke               # both, tiny: does it still run?

DIR is the SST-2 folder (GLUE's train.tsv and dev.tsv; default $PETL_SST2_DIR); the grid is
benchmarks/spaces/bench_sst2_grid.yaml.

`table` trains each (design, lr) of the grid space with the real `finetune.loop.train` (MiniLM, SST-2 sample,
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
sys.path.insert(1, str(ROOT / "benchmarks"))  # bench_data, also when imported as benchmarks.replay_search

from bench_data import add_data_dir, require_data_dir  # noqa: E402

SPACE = ROOT / "benchmarks" / "spaces" / "bench_sst2_grid.yaml"
SMOKE_SET = ("max_steps=2", "eval_every=2", "eval_cap=16", "train_limit=64")  # --smoke: seconds per point
TABLE = ROOT / "benchmarks" / "curves_sst2_grid"


def key_of(config: dict[str, Any]) -> str:
    return json.dumps({"design": config["design"], "lr": config["train"]["lr"]}, sort_keys=True)


def sampler_for(space_path: Path, data_dir: str | None = None, sets: tuple[str, ...] | list[str] = ()) -> Any:
    """(DefineByRunSpace, resolved run configuration, task) exactly as `petl-search --space ... --set ...` plans them."""
    from search.cli import build_parser
    from search.plan import plan

    # Without data the plan is only read (--dry-run: the product checks data and weights only for a run).
    argv = ["--space", str(space_path), *(["--data-dir", data_dir] if data_dir else ["--dry-run"]),
            *(a for s in sets for a in ("--set", s))]
    p = plan(build_parser().parse_args(argv))
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

    from finetune.designpoint import DesignPoint
    from finetune.loop import train

    torch.set_num_threads(1)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    configs = grid_configs(Path(args.space))
    out = Path(args.table)
    out.mkdir(parents=True, exist_ok=True)
    shard_file = out / f"shard{args.shard}.jsonl"
    done = {json.loads(line)["key"] for f in out.glob("shard*.jsonl") for line in f.read_text().splitlines() if line}
    _, run, _ = sampler_for(Path(args.space), args.data_dir, args.set)
    mine = [c for i, c in enumerate(configs) if i % args.shards == args.shard and key_of(c) not in done]
    mine = mine[:args.limit]
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


class _Replay:
    """One simulated search's state: the production searcher and scheduler, the event queue, the trials."""

    def __init__(self, method: str, seed: int, table: dict[str, dict[str, Any]], sampler: Any, *, max_t: int,
                 n_trials: int | None, horizon: float | None, grace: int, eta: float, bands: int,
                 memo: bool) -> None:
        import optuna

        from search.scheduler import make_scheduler
        from search.searcher import FullFidelityOptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)  # = driver's
        self.searcher = FullFidelityOptunaSearch(space=sampler, sampler=tpe, max_steps=max_t)
        self.scheduler = make_scheduler(method, max_t=max_t, grace_period=grace, reduction_factor=eta,
                                        bands_per_decade=bands)
        self.table, self.max_t, self.n_trials, self.horizon, self.memo = table, max_t, n_trials, horizon, memo
        self.events: list[tuple[float, int, str, int]] = []
        self.trials: dict[str, tuple[_Trial, dict[str, Any]]] = {}
        self.done: list[dict[str, Any]] = []
        self.started = 0
        self.finished_keys: set[str] = set()  # memo: a config already trained to full fidelity is answered from it

    def may_start(self, now: float) -> bool:
        if self.n_trials is not None:
            return self.started < self.n_trials
        return now < self.horizon and self.started < 20_000  # the cap only matters if every suggestion is reused

    def start(self, now: float) -> None:
        import heapq

        tid = f"t{self.started:05d}"
        self.started += 1
        config = self.searcher.suggest(tid)
        row = self.table[key_of(config)]  # KeyError: the grid table does not cover the space
        if self.memo and key_of(config) in self.finished_keys:  # deterministic training: same config, same result
            result = {"step": self.max_t, "score": row["curve"][self.max_t], "fraction": row["fraction"]}
            self.searcher.on_trial_complete(tid, result)
            self.done.append({"trial": tid, "key": key_of(config), "end": now, "steps": 0, "fraction": row["fraction"],
                              "score": result["score"], "finished": True, "reused": True})
            if self.may_start(now):
                self.start(now)
            return
        trial = _Trial(tid, config)
        self.scheduler.on_trial_add(None, trial)
        self.trials[tid] = (trial, row)
        steps = sorted(row["curve"]) or [0]
        heapq.heappush(self.events, (now + steps[0], self.started, tid, steps[0]))

    def evaluation(self, now: float, tid: str, step: int) -> None:
        """Trial `tid` reports its tabulated score at `step`: the scheduler continues it or the trial ends."""
        import heapq

        from ray.tune.schedulers import TrialScheduler

        trial, row = self.trials[tid]
        curve = row["curve"]
        failed = bool(row.get("failed")) and step == max(curve, default=0)
        result = {"step": step, "score": curve.get(step), "fraction": row["fraction"]}
        if failed:
            result = {"failed": 1, "step": step, "fraction": row["fraction"]}
        action = self.scheduler.on_trial_result(None, trial, result) if not failed else TrialScheduler.STOP
        later = [s for s in sorted(curve) if s > step]
        if action != TrialScheduler.STOP and later and step < self.max_t:
            heapq.heappush(self.events, (now + later[0] - step, self.started, tid, later[0]))
            return
        self.searcher.on_trial_complete(tid, result)
        self.scheduler.on_trial_complete(None, trial, result)
        finished = not failed and step >= self.max_t
        if finished:
            self.finished_keys.add(key_of(trial.config))
        self.done.append({"trial": tid, "key": key_of(trial.config), "end": now, "steps": step,
                          "fraction": row["fraction"], "score": result.get("score") if finished else math.nan,
                          "finished": finished})
        if self.may_start(now):
            self.start(now)


def simulate(method: str, seed: int, table: dict[str, dict[str, Any]], sampler: Any, *, workers: int, max_t: int,
             n_trials: int | None = None, horizon: float | None = None, grace: int = 10, eta: float = 3,
             bands: int = 2, memo: bool = False) -> list[dict[str, Any]]:
    """One search, event by event: `workers` trials run at once, each reporting at the steps its curve has.

    `none` starts exactly `n_trials`; the others keep every worker busy until `horizon` (simulated steps per
    worker). Returns one record per trial that ended by `horizon`, in completion order.
    """
    import heapq

    s = _Replay(method, seed, table, sampler, max_t=max_t, n_trials=n_trials, horizon=horizon, grace=grace, eta=eta,
                bands=bands, memo=memo)
    for _ in range(workers):
        if s.may_start(0.0):
            s.start(0.0)
    while s.events:
        now, _, tid, step = heapq.heappop(s.events)
        if horizon is not None and now > horizon:
            break
        s.evaluation(now, tid, step)
    return s.done


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


def seed_records(args: argparse.Namespace, seed: int, table: dict[str, dict[str, Any]], sampler: Any, max_t: int,
                 methods: list[str]) -> tuple[dict[str, dict[str, float]], int]:
    """One seed: `none` with --n trials, then each method up to --horizon x none's compute; ({method: record},
    configs none trained more than once)."""
    base = simulate("none", seed, table, sampler, workers=args.workers, max_t=max_t, n_trials=args.n, memo=args.memo)
    t_none = max(d["end"] for d in base)
    hv_none = hv_by_time(base)[1][-1]
    line, recs = [f"seed {seed}: none HV {hv_none:.4f} @ {t_none * args.workers:.0f} steps"], {}
    for m in methods:
        done = base if m == "none" else simulate(m, seed, table, sampler, workers=args.workers, max_t=max_t,
                                                 horizon=t_none * args.horizon, grace=args.grace, eta=args.eta,
                                                 bands=args.bands, memo=args.memo)
        times, hv = hv_by_time(done)
        reach = next((t for t, h in zip(times, hv) if h >= hv_none - 1e-12), math.inf)
        within = [d for d in done if d["end"] <= t_none + 1e-9]  # counts at equal compute
        full = [d for d in within if d["finished"]]
        recs[m] = {"hv_third": hv_at((times, hv), t_none / 3), "hv_half": hv_at((times, hv), t_none / 2),
                   "lowest_full": min((d["fraction"] for d in full), default=math.nan),
                   "hv_equal": hv_at((times, hv), t_none), "reach": reach / t_none, "trials": len(within),
                   "full": len(full), "low_full": len([d for d in full if d["fraction"] < args.low]),
                   "hv_none": hv_none}
        line.append(f"{m} {recs[m]['hv_third']:.3f}/{recs[m]['hv_equal']:.3f} reach {recs[m]['reach']:.2f}")
    print(" | ".join(line), flush=True)
    return recs, len(base) - len({d["key"] for d in base})


def print_table(args: argparse.Namespace, per: dict[str, list[dict[str, float]]]) -> None:
    import statistics

    print("| method | seeds | HV at 1/3 compute (mean) | at 1/2 | at equal compute | seeds reaching HV(none) "
          f"within 1/3 / 1/2 / 1 / {args.horizon:g} x its compute | median compute to reach it | "
          f"at equal compute: trials (mean) | full fidelity (mean) | full-fidelity < {args.low:g} (mean) | "
          f"seeds with one < {args.low:g} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, recs in per.items():
        def mean(k: str, recs: list[dict[str, float]] = recs) -> float:
            return statistics.fmean(r[k] for r in recs)

        wins = " / ".join(str(sum(r["reach"] <= b + 1e-9 for r in recs)) for b in (1 / 3, 1 / 2, 1, args.horizon))
        med = statistics.median(r["reach"] for r in recs)
        print(f"| {m} | {len(recs)} | {mean('hv_third'):.4f} | {mean('hv_half'):.4f} | {mean('hv_equal'):.4f} | "
              f"{wins} | {med:.2f} x | {mean('trials'):.1f} | {mean('full'):.1f} | {mean('low_full'):.2f} | "
              f"{sum(r['low_full'] > 0 for r in recs)} |")
    first = next(iter(per.values()))
    print(f"\nnone's HV at its full compute (mean over seeds): {statistics.fmean(r['hv_none'] for r in first):.4f}")


def replay(args: argparse.Namespace) -> int:
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
        recs, repeated = seed_records(args, seed, table, sampler, max_t, methods)
        for m in methods:
            per[m].append(recs[m])
        duplicates.append(repeated)
    print()
    print_table(args, per)
    print(f"repeated configs among none's {args.n} trials, per seed: {duplicates}")
    if args.json:
        Path(args.json).write_text(json.dumps(per, indent=1))
    return 0


def smoke() -> int:
    """Both commands, tiny: tabulate one grid point (2 steps on generated data), replay 1 seed on the committed
    table."""
    import tempfile

    from bench_data import smoke_sst2

    with tempfile.TemporaryDirectory(prefix="replay_smoke_") as tmp:
        data = smoke_sst2(Path(tmp) / "sst2")
        table = argparse.Namespace(space=str(SPACE), data_dir=str(data), table=str(Path(tmp) / "table"), shard=0,
                                   shards=1, limit=1, set=list(SMOKE_SET))
        build_table(table)
        rows = load_table(Path(table.table))
        if len(rows) != 1 or rows[next(iter(rows))]["failed"]:
            raise SystemExit(f"smoke: expected one trained grid point, got {rows}")
    return replay(make_parser().parse_args(["replay", "--seeds", "1", "--n", "4", "--methods", "none,pareto"]))


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="table: 1 point, 2 steps, generated data; replay: 1 seed")
    sub = ap.add_subparsers(dest="cmd")
    t = sub.add_parser("table", help="train the grid and tabulate learning curves")
    t.add_argument("--space", default=str(SPACE))
    add_data_dir(t, "(required)")
    t.add_argument("--table", default=str(TABLE))
    t.add_argument("--shard", type=int, default=0)
    t.add_argument("--shards", type=int, default=1)
    t.add_argument("--limit", type=int, default=None, help="train at most this many of the shard's points")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting, as "
                   "petl-search --set (the table then answers another problem)")
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
    return ap


def main() -> int:
    ap = make_parser()
    args = ap.parse_args()
    if args.smoke:
        return smoke()
    if args.cmd == "table":
        args.data_dir = str(require_data_dir(args.data_dir))
        return build_table(args)
    if args.cmd == "replay":
        return replay(args)
    ap.error("choose a command (table or replay) or --smoke")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
