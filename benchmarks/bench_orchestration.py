"""Orchestration overhead of a search (not a test): seconds per trial spent outside `trainables.loop.train`.

    python benchmarks/bench_orchestration.py                       # ~4-5 min on 2 cores: the DEFAULT scenarios
    python benchmarks/bench_orchestration.py --only noop,noop-fix  # a subset

Every scenario is one whole search, `search.cli.main` exactly as `python search/run.py` runs it (plan, MLflow parent
run, Ray Tune with TruthfulOptunaSearch + SpaceSampler over spaces/smoke.yaml, the banded scheduler, the MLflow
callback, the final summary), at --concurrency 2, in a fresh subprocess so each pays its own Ray start. Only the
trainable is swapped (through `search.trial.run_trial`, which `search.tuner.fit` imports at call time):

* noop    a function that reports one result shaped like a trial's final one (step = max_steps, score, fraction,
          loss, ...) and returns: no torch, no model. Its "train" time is 0.
* tiny    the real `search.trial.run_trial` on the smoke space with max_steps=2, eval_every=2, eval_cap=16: builds the
          pretrained MiniLM, injects the design, trains 2 steps, evaluates 16 examples. Time inside
          `trainables.loop.train` is measured in the worker (wrapped there), from the call until it returns or, when
          the scheduler stops the trial on its final report before `train` returns, until that final report.

`-every` scenarios monkeypatch `MlflowSearchCallback.refresh_every_s = 0`: the parent's report is rebuilt after every
completed trial, as before commit 136e0b4 (which made search/driver.py pass 30 s; the plain scenarios run that).
`-fresh` scenarios set `reuse_actors=False` in the TuneConfig `search.tuner.fit` builds: a new Ray worker process per
trial, as before reuse was switched on. The scheduler is the one named in the scenario (banded when unnamed).

Overhead per trial, two definitions (both printed):
* literal   (wall - sum of train time) / trials   - the brief's definition; at concurrency 2 it can be < 0.
* at c=2    (wall - sum of train time / 2) / trials - the wall time per trial that training cannot explain when two
            trials train at once: the throughput cost of the orchestration (for noop both are equal). "wall" is
            either the whole search (cli.main: imports excluded, Ray start, plan, parent run, Tune, final report)
            or Tune's fit alone.
* steady    at c=2 over the window from the 3rd trial's suggestion to the last trial's end: what each further
            trial costs once the first two workers are up (Ray start, the first workers' imports and the final
            report are one-off costs of a search, not per-trial ones). The 0.5 s target is judged on this one.
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

from orchestration_report import report, summarize

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {  # name: (trainable, refresh_every_s, reuse_actors, scheduler); None = as search/ ships it
    "noop-every": ("noop", 0.0, False, "banded"),  # before 136e0b4: fresh worker, report refreshed after every trial
    "noop-fresh": ("noop", None, False, "banded"),  # before reuse_actors: a fresh Ray worker per trial
    "noop": ("noop", None, None, "banded"),  # as shipped: reused workers, refresh at most every 30 s (no fANOVA)
    "noop-pareto": ("noop", None, None, "pareto"),
    "tiny-every": ("tiny", 0.0, False, "banded"),
    "tiny-fresh": ("tiny", None, False, "banded"),
    "tiny": ("tiny", None, None, "banded"),
    "tiny-pareto": ("tiny", None, None, "pareto"),
    "tiny-none": ("tiny", None, None, "none"),
}
DEFAULT = "noop-fresh,noop,noop-pareto,tiny-fresh,tiny,tiny-pareto"


# ----------------------------------------------------------------------------------------------------------------
# Worker side: the trainables (pickled by value from __main__ by cloudpickle; they import only in the worker)

def make_trainable(mode: str, log_dir: str, max_steps: int):  # noqa: ANN201
    def bench_trial(config: dict, context: object) -> None:
        enter = time.time()
        import json as _json
        import os as _os
        import time as _time
        import zlib

        from ray import tune

        tid = tune.get_context().get_trial_id()
        rec: dict = {"trial_id": tid, "enter": enter, "pid": _os.getpid(), "reports": 0}
        path = _os.path.join(log_dir, f"{tid}.json")

        def dump() -> None:  # rewritten at every event: the thread may never run past its final report
            with open(path + ".tmp", "w") as fh:
                _json.dump(rec, fh)
            _os.replace(path + ".tmp", path)

        if mode == "noop":
            rec["train_start"] = rec["train_end"] = _time.time()
            rec["reports"] = 1
            dump()
            score = 0.5 + 0.4 * (zlib.crc32(tid.encode()) % 1000) / 1000
            fraction = float(config["fraction"])
            tune.report({"step": max_steps, "score": score, "selected_score": score, "selected_step": max_steps,
                         "loss": 0.5, "eval_loss": 0.5, "tokens_per_s": 1.0,
                         "trainable": 1, "stored": 1, "fraction": fraction, "elapsed_s": 0.0,
                         "metric.accuracy": score})
            rec["returned"] = _time.time()
            dump()
            return

        import search.trial as ST
        import trainables.loop as L

        orig_train, orig_report = L.train, ST.TuneReporter.report

        def train(*a, **k):  # noqa: ANN002, ANN003, ANN202
            rec["train_start"] = _time.time()
            dump()
            out = orig_train(*a, **k)
            rec["train_end"] = rec["train_returned"] = _time.time()
            dump()
            return out

        def report(self, metrics):  # noqa: ANN001, ANN202
            rec["reports"] += 1
            rec["train_end"] = rec["last_report"] = _time.time()
            dump()
            return orig_report(self, metrics)

        L.train, ST.TuneReporter.report = train, report
        try:
            ST.run_trial(config, context)
        finally:
            L.train, ST.TuneReporter.report = orig_train, orig_report
        rec["returned"] = _time.time()
        dump()

    return bench_trial


# ----------------------------------------------------------------------------------------------------------------
# Driver side: one scenario in this process

class Timer:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.phase = "setup"

    def wrap(self, owner: object, attr: str, key: str, phased: bool = False) -> None:
        orig = getattr(owner, attr)
        timer = self

        def wrapped(*a, **k):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                name = f"{timer.phase}:{key}" if phased else key
                timer.total[name] += time.perf_counter() - t0
                timer.count[name] += 1

        wrapped.__wrapped__ = orig  # type: ignore[attr-defined]
        setattr(owner, attr, wrapped)


def run_scenario(name: str, trials: int, workdir: Path, out_json: Path) -> None:
    mode, refresh_s, reuse, scheduler = SCENARIOS[name]
    t_imp = time.perf_counter()
    import analysis.publish as AR  # the report's functions, where write_report looks up what it calls
    import search.cli
    import search.driver as SD
    import search.searcher as SS
    import search.summary as SU
    import search.tracking as TR
    import search.trial as STR
    import search.tuner as TU
    t_imp = time.perf_counter() - t_imp

    log_dir = workdir / "trainable_log"
    log_dir.mkdir(parents=True)
    max_steps = 30 if mode == "noop" else 2  # smoke.yaml's max_steps; tiny overrides it with --set
    STR.run_trial = make_trainable(mode, str(log_dir), max_steps)

    T = Timer()
    T.wrap(SD, "plan", "plan")
    T.wrap(TR, "check_tracking", "mlflow check")
    T.wrap(TR, "parent_run", "mlflow parent run")
    T.wrap(TU, "_init_ray", "ray start")
    T.wrap(TU, "fit", "tune fit")
    T.wrap(SU, "finish", "final report + summary")
    cb = TR.MlflowSearchCallback
    T.wrap(cb, "on_trial_start", "cb: child run create (on_trial_start)")
    T.wrap(cb, "on_trial_result", "cb: metrics log (on_trial_result)")
    T.wrap(cb, "_finish", "cb: _finish (incl. refresh)")
    T.wrap(cb, "_refresh", "cb: _refresh")
    T.wrap(cb, "_progress", "cb: progress line")
    for attr, key in (("load_search", "load_search"), ("write_report", "write_report"),
                      ("log_report", "log_report (artifacts, HV metric, tags)"),
                      ("front_figure_png", "  front.png (matplotlib)"), ("front_figure_html", "  front.html (plotly)"),
                      ("param_importance", "  param_importance (fANOVA)"),
                      ("importance_figure_png", "  importance.png"), ("like_for_like", "  like_for_like effects")):
        T.wrap(AR, attr, key, phased=True)
    T.wrap(SS.TruthfulOptunaSearch, "on_trial_complete", "searcher: tell (on_trial_complete)")

    suggest_at: dict[str, float] = {}
    finish_at: dict[str, float] = {}
    orig_suggest = SS.TruthfulOptunaSearch.suggest

    def suggest(self, trial_id):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        out = orig_suggest(self, trial_id)
        T.total["searcher: suggest (TPE + SpaceSampler)"] += time.perf_counter() - t0
        T.count["searcher: suggest (TPE + SpaceSampler)"] += 1
        if out is not None:
            suggest_at[trial_id] = time.time()
        return out

    SS.TruthfulOptunaSearch.suggest = suggest
    orig_finish = cb._finish

    def _finish(self, trial, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        finish_at[trial.trial_id] = time.time()
        return orig_finish(self, trial, *a, **k)

    cb._finish = _finish
    if refresh_s is not None:
        orig_init = cb.__init__

        def __init__(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            orig_init(self, *a, **k)
            self.refresh_every_s = refresh_s

        cb.__init__ = __init__
    if reuse is not None:
        import ray.tune

        orig_cfg = ray.tune.TuneConfig
        ray.tune.TuneConfig = lambda **kw: orig_cfg(**{**kw, "reuse_actors": reuse})
    orig_finish_fn = SU.finish

    def finish(*a, **k):  # noqa: ANN002, ANN003, ANN202
        T.phase = "final"
        return orig_finish_fn(*a, **k)

    SU.finish = finish
    T.phase = "search"

    argv = ["--space", str(ROOT / "spaces" / "smoke.yaml"), "--num-samples", str(trials), "--concurrency", "2",
            "--storage", str(workdir / "runs"), "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--name", name, "--scheduler", scheduler, "--seed", "0"]
    if mode == "tiny":
        argv += ["--set", "max_steps=2", "--set", "eval_every=2", "--set", "eval_cap=16"]
    t0 = time.perf_counter()
    rc = search.cli.main(argv)
    wall = time.perf_counter() - t0

    recs = [json.loads(p.read_text()) for p in sorted(log_dir.glob("*.json"))]
    per_trial = []
    for r in recs:
        tid = r["trial_id"]
        per_trial.append({
            "trial_id": tid,
            "launch": r["enter"] - suggest_at[tid] if tid in suggest_at else None,
            "pre_train": r.get("train_start", r["enter"]) - r["enter"],
            "train": r.get("train_end", r.get("train_start", 0)) - r.get("train_start", 0),
            "tail": finish_at[tid] - r.get("train_end", r["enter"]) if tid in finish_at else None,
            "returned": "returned" in r, "train_returned": "train_returned" in r, "reports": r["reports"],
            "suggested": suggest_at.get(tid), "finished": finish_at.get(tid), "pid": r["pid"],
        })
    # Post-hoc cost of one report refresh at this search's size (what every completed trial pays by default).
    from mlflow import MlflowClient

    from analysis.load import load_search

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                                "tags.`petl.role` = 'search'")[0].info.run_id
    T.phase = "posthoc"
    refresh_times = []
    for _ in range(3):
        t1 = time.perf_counter()
        AR.update_search_report(client, parent, str(workdir / "posthoc_report"))
        refresh_times.append(time.perf_counter() - t1)
    df = load_search(parent_run_id=parent, client=client)
    # Final checkpoints: trials that reached full fidelity should have petl.safetensors in their folder.
    trial_dirs = workdir / "runs" / name / "trials"
    finals = sorted(p.parent.name for p in trial_dirs.glob("*/petl.safetensors")) if trial_dirs.exists() else []
    out = {"scenario": name, "rc": rc, "trials": trials, "wall": wall, "imports": t_imp,
           "timers": dict(T.total), "counts": dict(T.count), "per_trial": per_trial,
           "posthoc_refresh": refresh_times, "status": df["status"].value_counts().to_dict(),
           "n_full_fidelity": int(df["full_fidelity"].sum()), "final_checkpoints": len(finals),
           "trial_dirs": len(list(trial_dirs.iterdir())) if trial_dirs.exists() else 0}
    out_json.write_text(json.dumps(out, indent=1, default=str))


# ----------------------------------------------------------------------------------------------------------------
# Parent: run the scenarios, print the tables

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16, help="trials per noop search")
    ap.add_argument("--tiny-trials", type=int, default=10, help="trials per tiny search")
    ap.add_argument("--only", default=DEFAULT, help="comma-separated scenarios")
    ap.add_argument("--json", default=None, help="write all raw results here")
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scenario:  # child
        n = args.trials if SCENARIOS[args.scenario][0] == "noop" else args.tiny_trials
        run_scenario(args.scenario, n, Path(args.workdir), Path(args.out))
        return 0
    results = []
    print(f"# bench_orchestration {datetime.datetime.now():%Y-%m-%d %H:%M} | {platform.node()} | "
          f"{os.cpu_count()} cores | python {platform.python_version()}", flush=True)
    for name in args.only.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"bench_orch_{name}_"))
        out = work / "result.json"
        cmd = [sys.executable, __file__, "--scenario", name, "--workdir", str(work), "--out", str(out),
               "--trials", str(args.trials), "--tiny-trials", str(args.tiny_trials)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode or not out.exists():
            print(proc.stdout[-3000:], proc.stderr[-5000:])
            raise SystemExit(f"scenario {name} failed (rc {proc.returncode})")
        r = json.loads(out.read_text())
        r["process_s"] = time.perf_counter() - t0
        results.append(r)
        s = summarize(r)
        print(f"{name}: {r['trials']} trials, whole {s['wall']:.1f} s (process {r['process_s']:.1f} s), "
              f"fit {s['fit']:.1f} s, overhead/trial at c=2: whole {s['c2_whole']:.2f} s, fit {s['c2_fit']:.2f} s, "
              f"steady {s['steady_c2']:.2f} s, {s['workers']} worker processes; "
              f"status {r['status']}", flush=True)
    print()
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
