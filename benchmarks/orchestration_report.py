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
    fit = t.get("search.fit", float("nan"))
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


PARTS = {  # driver-side spans (finetune.spans) → what the breakdown calls them
    "search.ray_start": "Ray start", "search.plan": "plan", "search.check_tracking": "MLflow check",
    "search.open": "MLflow parent run + callback", "search.fit": "Tune fit",
    "search.suggest": "searcher: suggest", "search.tell": "searcher: tell", "search.finish": "final report + summary",
}
REFRESH_PARTS = ("report.load", "report.importance", "report.effects", "report.figure.front_figure_png",
                 "report.figure.front_figure_html", "report.figure.importance_figure_png")


def overhead_table(results: list[dict]) -> list[str]:
    lines = ["### Overhead per trial (seconds), concurrency 2, smoke space, tiny real trials", "",
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
    return lines


def breakdown_table(results: list[dict]) -> list[str]:
    lines = ["### Breakdown (driver-side spans, seconds; per trial = total / trials)", "",
             "| part | " + " | ".join(r["scenario"] for r in results) + " |", "|---|" + "---|" * len(results)]
    for key, label in PARTS.items():
        cells = []
        for r in results:
            v, c = r["timers"].get(key), r["counts"].get(key, 0)
            cells.append("" if v is None else f"{v:.2f} ({c}x, {v / r['trials']:.3f}/trial)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def latency_table(results: list[dict]) -> list[str]:
    lines = ["### Per-trial latencies (means, seconds; from the workers' spans)", "",
             "| scenario | launch (suggest -> trial entered) | pre-train in worker (imports, build) | train | "
             "tail (train end -> searcher told) | train() returned | final checkpoints / full-fidelity |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        pt = r["per_trial"]
        ret = sum(p["train_returned"] for p in pt)
        lines.append(f"| {r['scenario']} | {_mean([p['launch'] for p in pt]):.2f} | "
                     f"{_mean([p['pre_train'] for p in pt]):.2f} | {_mean([p['train'] for p in pt]):.2f} | "
                     f"{_mean([p['tail'] for p in pt]):.2f} | {ret}/{len(pt)} | "
                     f"{r['final_checkpoints']}/{r['n_full_fidelity']} |")
    return lines


def refresh_table(results: list[dict]) -> list[str]:
    lines = ["### One report refresh (`analysis.report.update_search_report`) after each search; parts: mean seconds",
             "", "| scenario | trials in MLflow | refresh s (each run) | " + " | ".join(REFRESH_PARTS) + " |",
             "|---|---|---|" + "---|" * len(REFRESH_PARTS)]
    for r in results:
        parts = r["posthoc_parts"]
        lines.append(f"| {r['scenario']} | {sum(r['status'].values())} | "
                     f"{', '.join(f'{x:.2f}' for x in r['posthoc_refresh'])} | "
                     + " | ".join(f"{parts.get(k, float('nan')):.2f}" for k in REFRESH_PARTS) + " |")
    return lines


def report(results: list[dict]) -> str:
    tables = (overhead_table, breakdown_table, latency_table, refresh_table)
    return "\n\n".join("\n".join(t(results)) for t in tables)
