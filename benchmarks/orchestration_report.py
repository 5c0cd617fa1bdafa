"""Overhead per trial, as benchmarks/bench_orchestration.py defines it (literal, at c=2, steady), and its tables."""

from __future__ import annotations

import statistics


def _mean(xs: list) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else float("nan")


def summarize(r: dict) -> dict:
    n = r["trials"]
    t = r["timers"]
    train = sum(p["train"] for p in r["per_trial"])
    fit = t.get("tune fit", float("nan"))
    # Steady state: from the suggestion of the 3rd trial (the first that can land on an already-warm worker) to the
    # last trial's end, i.e. without Ray start-up and the first two workers' imports.
    pts = sorted((p for p in r["per_trial"] if p.get("suggested") and p.get("finished")), key=lambda p: p["suggested"])
    steady = float("nan")
    if len(pts) > 3:
        window = max(p["finished"] for p in pts) - pts[2]["suggested"]
        steady = (window - sum(p["train"] for p in pts[2:]) / 2) / (len(pts) - 2)
    return {"steady_c2": steady, "workers": len({p.get("pid") for p in r["per_trial"]}),
        "n": n, "wall": r["wall"], "fit": fit, "train_sum": train,
        "lit_whole": (r["wall"] - train) / n, "c2_whole": (r["wall"] - train / 2) / n,
        "lit_fit": (fit - train) / n, "c2_fit": (fit - train / 2) / n,
    }


def report(results: list[dict]) -> str:
    lines = ["### Overhead per trial (seconds), concurrency 2, smoke space (scheduler banded unless the name names another)", "",
             "| scenario | trials | worker processes | whole search s | Tune fit s | sum train s | per trial, whole "
             "(literal / at c=2) | per trial, fit only (literal / at c=2) | per trial, steady state at c=2 | "
             "target <= 0.5 s (c=2, steady) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = summarize(r)
        lines.append(f"| {r['scenario']} | {s['n']} | {s['workers']} | {s['wall']:.1f} | {s['fit']:.1f} | "
                     f"{s['train_sum']:.1f} | {s['lit_whole']:.2f} / {s['c2_whole']:.2f} | "
                     f"{s['lit_fit']:.2f} / {s['c2_fit']:.2f} | {s['steady_c2']:.2f} | "
                     f"{'PASS' if s['steady_c2'] <= 0.5 else 'FAIL'} |")
    lines += ["", "### Breakdown (driver-side totals, seconds; per trial = total / trials)", ""]
    keys: list[str] = []
    for r in results:
        keys += [k for k in r["timers"] if k not in keys]
    order = ["ray start", "plan", "mlflow check", "mlflow parent run", "tune fit",
             "searcher: suggest (TPE + DefineByRunSpace)", "searcher: tell (on_trial_complete)",
             "cb: child run create (on_trial_start)", "cb: metrics log (on_trial_result)",
             "cb: _finish (incl. refresh)", "cb: _refresh", "cb: progress line"]
    keys = [k for k in order if k in keys] + sorted(k for k in keys if k not in order and
                                                    not k.startswith("posthoc:"))
    lines.append("| part | " + " | ".join(r["scenario"] for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    for k in keys:
        cells = []
        for r in results:
            v, c = r["timers"].get(k), r["counts"].get(k, 0)
            cells.append("" if v is None else f"{v:.2f} ({c}x, {v / r['trials']:.3f}/trial)")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "### Per-trial latencies (means, seconds; from trainable-side timestamps)", "",
              "| scenario | launch (suggest -> trainable entered) | pre-train in worker (imports) | train | "
              "tail (train end -> driver _finish) | train() returned | final checkpoints / full-fidelity |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        pt = r["per_trial"]
        ret = sum(p["train_returned"] for p in pt)
        lines.append(f"| {r['scenario']} | {_mean([p['launch'] for p in pt]):.2f} | "
                     f"{_mean([p['pre_train'] for p in pt]):.2f} | {_mean([p['train'] for p in pt]):.2f} | "
                     f"{_mean([p['tail'] for p in pt]):.2f} | "
                     f"{f'{ret}/{len(pt)}' if r['scenario'].startswith('tiny') else 'n/a'} | "
                     f"{r['final_checkpoints']}/{r['n_full_fidelity']} |")
    lines += ["", "### One report refresh (`analysis.report.update_search_report`) at the end of each search", "",
              "| scenario | trials in MLflow | refresh s (3 runs) | load_search | write_report | log_report | "
              "fANOVA | front.png | front.html |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["timers"]
        g = lambda k: t.get(f"posthoc:{k}", float("nan")) / 3  # noqa: E731
        lines.append(f"| {r['scenario']} | {sum(r['status'].values())} | "
                     f"{', '.join(f'{x:.2f}' for x in r['posthoc_refresh'])} | {g('load_search'):.2f} | "
                     f"{g('write_report'):.2f} | {g('log_report (artifacts, HV metric, tags)'):.2f} | "
                     f"{g('  param_importance (fANOVA)'):.2f} | {g('  front.png (matplotlib)'):.2f} | "
                     f"{g('  front.html (plotly)'):.2f} |")
    return "\n".join(lines)
