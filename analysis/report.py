"""Write a search's report and attach it to the search's MLflow parent run.

``python -m analysis.report --experiment NAME --out DIR`` writes front.png, front.html, importance.png,
trials.csv and summary.md; unless ``--no-log`` it also logs them as parent-run artifacts under
``analysis/``, logs the ``hypervolume`` history (step = position in completion order) on the parent, and
tags every trial ``petl.pareto=true|false``. ``update_search_report`` does the same for one parent run and is
what the search calls after each trial; it is idempotent (only missing metric steps and changed tags are
written; files are overwritten in place).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from analysis.design import TERMINAL_STATUSES, completion_order, describe_design, pareto_flags
from analysis.effects import marginal_effects, param_importance
from analysis.load import PARETO_TAG, SearchNotFoundError, TrackingUnreachableError, load_search, make_client
from analysis.pareto import REFERENCE, hypervolume, hypervolume_history
from analysis.plots import front_figure_html, front_figure_png, importance_figure_png

ARTIFACT_DIR = "analysis"  # artifact sub-folder of the parent run
HYPERVOLUME_METRIC = "hypervolume"
BYTES_PER_PARAM = 4  # stored size is reported at fp32
_BATCH = 1000  # MLflow's per-request metric limit


@dataclass
class ReportResult:
    parent_run_id: str
    files: dict[str, Path]
    hypervolume: float
    history: np.ndarray
    pareto_run_ids: list[str]
    notes: list[str] = field(default_factory=list)


def _md_cell(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]


def _pct(f: float) -> str:
    return f"{f * 100:.3g}%" if np.isfinite(f) else "n/a"


def _stored(v: object) -> tuple[str, str]:
    if pd.isna(v):
        return "n/a", "n/a"
    return f"{int(v):,}", f"{int(v) * BYTES_PER_PARAM / 1e6:.3g}"


def summary_markdown(df: pd.DataFrame, pareto: pd.Series, hv: float, notes: list[str],
                     effects: pd.DataFrame | None, importance: pd.Series | None) -> str:
    """The report's text: counts, hypervolume, the Pareto table in the paper's vocabulary, presets, effects."""
    counts = df["status"].value_counts()
    title = df.attrs.get("experiment", "search")
    out = [f"# Search report: {title}", "",
           f"- parent run: `{df.attrs.get('parent_run_id', '?')}`",
           f"- trials: {len(df)} (finished {counts.get('finished', 0)}, of which full fidelity "
           f"{int(df['full_fidelity'].sum())}; early-stopped {counts.get('stopped', 0)}; failed "
           f"{counts.get('failed', 0)}; other {len(df) - int(counts.reindex(TERMINAL_STATUSES).fillna(0).sum())})",
           f"- hypervolume: {hv:.4g} (score x decades of fraction; reference score {REFERENCE.ref_score:g}, "
           f"fraction {REFERENCE.ref_fraction:g}; only full-fidelity trials count)", "",
           "## Pareto-optimal designs (full fidelity, by fraction)", ""]
    front = df[pareto.to_numpy()].sort_values("fraction")
    rows = []
    for rec in front.to_dict("records"):
        params, mb = _stored(rec["params.stored"])
        rows.append(["; ".join(describe_design(rec)), rec["preset"] if isinstance(rec["preset"], str) else "",
                     f"{rec['score']:.4g}", _pct(rec["fraction"]), params, mb, f"`{rec['run_id'][:8]}`"])
    header = ["design", "preset", "score", "fraction", "stored params", "size MB (fp32)", "run"]
    out += _md_table(header, rows) if rows else ["No full-fidelity trial has a score yet."]
    presets = df[df["preset"].notna()]
    if len(presets):
        out += ["", "## Paper presets", ""]
        out += _md_table(["preset", "status", "score", "fraction", "Pareto-optimal"], [
            [r["preset"], r["status"], f"{r['score']:.4g}" if np.isfinite(r["score"]) else "n/a", _pct(r["fraction"]),
             "yes" if p else "no"] for r, p in zip(presets.to_dict("records"), pareto[presets.index])])
    if effects is not None and len(effects):
        out += ["", "## Design choices at matched parameter budgets", "",
                "Score difference averaged over log10-fraction bins where both values were tried.", ""]
        out += _md_table(["axis", "better", "worse", "mean diff", "median diff", "bins (won)", "trials"], [
            [r.axis, r.better, r.worse, f"{r.mean_diff:+.4g}", f"{r.median_diff:+.4g}", f"{r.n_bins} ({r.bins_won})",
             f"{r.n_better} vs {r.n_worse}"] for r in effects.itertuples()])
    if importance is not None and len(importance):
        out += ["", f"## Parameter importance for score ({importance.attrs.get('evaluator', '')})", ""]
        out += _md_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in importance.head(10).items()])
    failures = df.loc[df["status"] == "failed", "failure"].dropna().value_counts().head(5)
    if len(failures):
        out += ["", "## Failures", ""] + [f"- {n} x {_md_cell(reason)}" for reason, n in failures.items()]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def write_report(df: pd.DataFrame, out_dir: str | Path, *, importance: bool = True) -> ReportResult:
    """Write the report files for a loaded search; touches no MLflow state.

    ``importance=False`` skips fANOVA and importance.png (about 0.6 s of a 1 s refresh at a dozen trials): the
    search's periodic refreshes leave them to the final report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pareto = pareto_flags(df)
    full_score = np.where(df["full_fidelity"].to_numpy(dtype=bool), df["score"].to_numpy(dtype=float), np.nan)
    fraction = df["fraction"].to_numpy(dtype=float, na_value=np.nan)
    history = hypervolume_history(full_score, fraction, completion_order(df))
    hv = hypervolume(full_score, fraction)
    files = {"front.png": front_figure_png(df, out / "front.png"),
             "front.html": front_figure_html(df, out / "front.html")}
    notes: list[str] = []
    importances: pd.Series | None = None
    if not importance:
        notes.append("importance.png is computed when the search ends")
        if (out / "importance.png").exists():  # the last one computed stays attached
            files["importance.png"] = out / "importance.png"
    else:
        try:
            importances = param_importance(df, "score")
            panels = {"score": importances}
            try:
                panels["fraction"] = param_importance(df, "fraction")
            except ValueError:
                pass
            files["importance.png"] = importance_figure_png(panels, out / "importance.png")
        except ValueError as exc:
            notes.append(f"importance.png skipped: {exc}")
            (out / "importance.png").unlink(missing_ok=True)  # never leave a stale plot from an older update
    effects = marginal_effects(df) if df["full_fidelity"].any() else None
    df.to_csv(out / "trials.csv", index=False)
    files["trials.csv"] = out / "trials.csv"
    (out / "summary.md").write_text(summary_markdown(df, pareto, hv, notes, effects, importances), encoding="utf-8")
    files["summary.md"] = out / "summary.md"
    return ReportResult(parent_run_id=str(df.attrs.get("parent_run_id", "")), files=files, hypervolume=hv,
                        history=history, pareto_run_ids=df.loc[pareto, "run_id"].tolist(), notes=notes)


def log_report(client: MlflowClient, df: pd.DataFrame, result: ReportResult) -> None:
    """Attach the report to the parent run; writes only what changed so repeated calls are cheap and safe."""
    pid = result.parent_run_id
    for path in result.files.values():
        client.log_artifact(pid, str(path), artifact_path=ARTIFACT_DIR)
    # Metric history: one point per completed trial. Steps already logged with the same value are skipped
    # (an MLflow metric history cannot be edited, so re-logging would duplicate points).
    seen: dict[int, list[float]] = {}
    for m in client.get_metric_history(pid, HYPERVOLUME_METRIC):
        seen.setdefault(int(m.step), []).append(float(m.value))
    order = completion_order(df)
    times = df["end_time"].fillna(df["start_time"]).to_numpy(dtype=float, na_value=0.0)
    new = [Metric(HYPERVOLUME_METRIC, float(v), int(times[i]), step)
           for step, (i, v) in enumerate(zip(order, result.history))
           if not any(abs(v - old) <= 1e-12 * max(1.0, abs(v)) for old in seen.get(step, []))]
    for k in range(0, len(new), _BATCH):
        client.log_batch(pid, metrics=new[k:k + _BATCH])
    pareto = set(result.pareto_run_ids)
    for run_id, current in zip(df["run_id"], df["pareto_tag"]):
        wanted = "true" if run_id in pareto else "false"
        if current != wanted:
            client.set_tag(run_id, PARETO_TAG, wanted)


def update_search_report(client: MlflowClient, parent_run_id: str, out_dir: str | Path, *, log: bool = True,
                         importance: bool = True) -> ReportResult:
    """Reload the search under ``parent_run_id``, rewrite the report in ``out_dir`` and (by default) log it.

    Called by the search after each trial completes (ideally after the trial's run is terminated, so its
    end_time fixes its place in the completion order). Idempotent.
    """
    df = load_search(parent_run_id=parent_run_id, client=client)
    result = write_report(df, out_dir, importance=importance)
    if log:
        log_report(client, df, result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Analyse a PETL design-space search recorded in MLflow: Pareto front (PNG + interactive "
                    "HTML), parameter importance, trial table and a Markdown summary; optionally attach them "
                    "to the search's parent run.",
        epilog="Give --experiment, --parent-run-id or both (the run id wins). Unless --no-log, the files are "
               "logged to the parent run under analysis/, the parent gets a 'hypervolume' metric (step = trial "
               "index in completion order) and every trial run a petl.pareto=true|false tag. "
               "Exit status 2: tracking store unreachable, or experiment/search not found.",
    )
    p.add_argument("--experiment", metavar="NAME",
                   help="MLflow experiment holding the search; its newest search parent run is analysed.")
    p.add_argument("--parent-run-id", metavar="ID",
                   help="analyse this search parent run (tag petl.role=search) instead of the newest one.")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI, e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db "
                        "(default: $MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db in the cwd).")
    p.add_argument("--out", metavar="DIR", required=True, type=Path,
                   help="directory for front.png, front.html, importance.png, trials.csv and summary.md "
                        "(created if missing; files are overwritten).")
    p.add_argument("--no-log", action="store_true",
                   help="only write the files; do not log artifacts, the hypervolume metric or petl.pareto tags.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.experiment and not args.parent_run_id:
        parser.error("give --experiment NAME or --parent-run-id ID")
    try:
        client = make_client(args.tracking_uri)
        df = load_search(args.experiment, args.parent_run_id, client=client)
        result = write_report(df, args.out)
        if not args.no_log:
            log_report(client, df, result)
    except (TrackingUnreachableError, SearchNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(df)} trials, {len(result.pareto_run_ids)} Pareto-optimal, hypervolume {result.hypervolume:.4g}")
    for note in result.notes:
        print(f"note: {note}")
    for path in result.files.values():
        where = "" if args.no_log else f" (logged to run {result.parent_run_id} under {ARTIFACT_DIR}/)"
        print(f"wrote {path}{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
