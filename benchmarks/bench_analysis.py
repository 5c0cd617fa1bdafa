"""Timings of the analysis package (not a test): python benchmarks/bench_analysis.py [--trials 1000]
(`--smoke`: 1,000 points and 12 runs, to check that it still runs.)

Targets: pareto_mask + hypervolume over 100,000 points < 1 s; load_search over 1,000 runs (sqlite) < 10 s.
Also times a whole report update over the same runs, which is what the search pays after each trial.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's analysis/, before an installed copy


def _best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_pareto(n: int) -> None:
    from analysis.pareto import hypervolume, hypervolume_history, pareto_mask

    rng = np.random.default_rng(0)
    fraction = 10 ** rng.uniform(-5, 0, n)
    score = 0.6 + 0.05 * np.log10(fraction) / 5 + rng.normal(0, 0.05, n)  # correlated, like real searches
    score[rng.random(n) < 0.05] = np.nan  # failed trials
    t_mask = _best_of(lambda: pareto_mask(score, fraction))
    t_hv = _best_of(lambda: hypervolume(score, fraction))
    t_hist_1k = _best_of(lambda: hypervolume_history(score[:1000], fraction[:1000], np.arange(1000)))
    t_hist_all = _best_of(lambda: hypervolume_history(score, fraction, rng.permutation(n)), repeat=1)
    n_opt = int(pareto_mask(score, fraction).sum())
    print(f"pareto_mask({n:,})                 {t_mask * 1e3:8.1f} ms  ({n_opt} optimal)")
    print(f"hypervolume({n:,})                 {t_hv * 1e3:8.1f} ms")
    print(f"pareto_mask + hypervolume({n:,})   {(t_mask + t_hv) * 1e3:8.1f} ms  (target < 1000 ms)")
    print(f"hypervolume_history(1,000)           {t_hist_1k * 1e3:8.1f} ms")
    print(f"hypervolume_history({n:,})         {t_hist_all * 1e3:8.1f} ms")


def bench_mlflow(n: int) -> None:
    from mlflow import MlflowClient

    from analysis.importance import param_importance
    from analysis.load import load_search
    from analysis.report import update_search_report
    from analysis.synthetic import fabricate_search

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = MlflowClient(tracking_uri=uri)
        client.create_experiment("bench", artifact_location=str(Path(tmp) / "artifacts"))
        t0 = time.perf_counter()
        s = fabricate_search(client, "bench", n, seed=0)
        print(f"fabricate {n:,} runs (create_run + log_batch + set_terminated) {time.perf_counter() - t0:6.1f} s")
        t_load = _best_of(lambda: load_search("bench", tracking_uri=uri))
        df = load_search("bench", tracking_uri=uri)
        print(f"load_search({n:,} runs, sqlite)       {t_load:6.2f} s  ({df.shape[0]} rows x {df.shape[1]} cols; "
              "target < 10 s)")
        t_imp = _best_of(lambda: param_importance(df), repeat=1)
        print(f"param_importance(score, {int(df['full_fidelity'].sum())} trials)  {t_imp:6.2f} s")
        for label in ("first (tags every run)", "repeat (idempotent)"):
            t0 = time.perf_counter()
            update_search_report(client, s.parent_run_id, Path(tmp) / "report")
            print(f"update_search_report, {label:24s} {time.perf_counter() - t0:6.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--points", type=int, default=100_000, help="synthetic points for the Pareto/hypervolume timing")
    p.add_argument("--trials", type=int, default=1000, help="runs fabricated in sqlite for the load timing")
    p.add_argument("--smoke", action="store_true", help="1,000 points, 12 runs: does it still run? (seconds)")
    args = p.parse_args()
    if args.smoke:
        args.points, args.trials = 1000, 12
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    bench_pareto(args.points)
    bench_mlflow(args.trials)


if __name__ == "__main__":
    main()
