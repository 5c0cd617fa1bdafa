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


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table under its `### title`: header, rule, one line per row."""
    return [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def overhead_table(results: list[dict]) -> list[str]:
    header = ["scenario", "trials", "worker processes", "whole search s", "Tune fit s", "sum train s",
              "per trial, whole (literal / at c=2)", "per trial, fit only (literal / at c=2)",
              "per trial, steady state at c=2", "target <= 0.5 s (c=2, steady)"]
    rows = []
    for r in results:
        s = summarize(r)
        rows.append([r["scenario"], str(s["n"]), str(s["workers"]), f"{s['wall']:.1f}", f"{s['fit']:.1f}",
                     f"{s['train_sum']:.1f}", f"{s['lit_whole']:.2f} / {s['c2_whole']:.2f}",
                     f"{s['lit_fit']:.2f} / {s['c2_fit']:.2f}", f"{s['steady_c2']:.2f}",
                     "PASS" if s["steady_c2"] <= 0.5 else "FAIL"])
    return _table("Overhead per trial (seconds), concurrency 2, smoke space, tiny real trials", header, rows)


def breakdown_table(results: list[dict]) -> list[str]:
    def cell(r: dict, key: str) -> str:
        v, c = r["timers"].get(key), r["counts"].get(key, 0)
        return "" if v is None else f"{v:.2f} ({c}x, {v / r['trials']:.3f}/trial)"

    return _table("Breakdown (driver-side spans, seconds; per trial = total / trials)",
                  ["part", *(r["scenario"] for r in results)],
                  [[label, *(cell(r, key) for r in results)] for key, label in PARTS.items()])


def latency_table(results: list[dict]) -> list[str]:
    header = ["scenario", "launch (suggest -> trial entered)", "pre-train in worker (imports, build)", "train",
              "tail (train end -> searcher told)", "train() returned", "final checkpoints / full-fidelity"]
    rows = []
    for r in results:
        pt = r["per_trial"]
        means = [f"{_mean([p[k] for p in pt]):.2f}" for k in ("launch", "pre_train", "train", "tail")]
        rows.append([r["scenario"], *means, f"{sum(p['train_returned'] for p in pt)}/{len(pt)}",
                     f"{r['final_checkpoints']}/{r['n_full_fidelity']}"])
    return _table("Per-trial latencies (means, seconds; from the workers' spans)", header, rows)


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
