"""A search's report: its files written from a loaded search, and attached to the search's MLflow parent run.

`write_report` writes front.png, front.html, importance.png, trials.csv, effects.csv and summary.md; `log_report`
logs them as parent-run artifacts under ``analysis/``, logs the ``hypervolume`` history (step = position in
completion order) on the parent, and tags every run of a Pareto-optimal design ``petl.pareto=true`` (others
``false``). `update_search_report` does both for one parent run and is what the search calls after each trial; it is
idempotent (only missing metric steps and changed tags are written; files are overwritten in place).
The command line is `analysis.report` (``python -m analysis.report``, ``petl-report``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from analysis.design import completion_order, reference_of
from analysis.effects import COLUMNS, like_for_like
from analysis.groups import group_hypervolume, group_hypervolume_history, pareto_flags
from analysis.importance import param_importance
from analysis.load import load_search
from analysis.markdown import summary_markdown
from analysis.plots import front_figure_html, front_figure_png, importance_figure_png
from search.contract import HYPERVOLUME, PARETO_TAG, Reference, score_name

ARTIFACT_DIR = "analysis"  # artifact sub-folder of the parent run
HYPERVOLUME_METRIC = HYPERVOLUME
_BATCH = 1000  # MLflow's per-request metric limit


@dataclass
class ReportResult:
    parent_run_id: str
    files: dict[str, Path]
    hypervolume: float
    history: np.ndarray
    pareto_run_ids: list[str]
    reference: Reference
    notes: list[str] = field(default_factory=list)
    effects: pd.DataFrame | None = None


def _importances(df: pd.DataFrame, out: Path, files: dict[str, Path], notes: list[str]) -> pd.Series | None:
    try:
        importances = param_importance(df, "score")
        panels = {"score": importances}
        try:
            panels["fraction"] = param_importance(df, "fraction")
        except ValueError:
            pass
        files["importance.png"] = importance_figure_png(panels, out / "importance.png")
        return importances
    except ValueError as exc:
        notes.append(f"importance.png skipped: {exc}")
        (out / "importance.png").unlink(missing_ok=True)  # never leave a stale plot from an older update
        return None


def trials_table(df: pd.DataFrame) -> pd.DataFrame:
    """trials.csv: the loaded frame with the task score under its metric's name (`accuracy`, `bleu`, `rouge2`; the
    last step's as `last_<name>`) and the stored fraction in percent (`fraction_pct`), as every other output shows it.
    """
    column = score_name(df.attrs.get("metric")).column
    out = df.rename(columns={"score": column, "last_score": f"last_{column}", "fraction": "fraction_pct"})
    out["fraction_pct"] = 100.0 * df["fraction"].to_numpy(dtype=float, na_value=np.nan)
    return out


def write_report(df: pd.DataFrame, out_dir: str | Path, *, importance: bool = True,
                 reference: Reference | None = None) -> ReportResult:
    """Write the report files for a loaded search; touches no MLflow state.

    ``importance=False`` skips fANOVA, importance.png and the like-for-like effects (they cost most of a refresh):
    the search's periodic refreshes leave them to the final report. ``reference`` overrides the search's
    hypervolume reference score (``reference_of``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref = reference or reference_of(df)
    pareto = pareto_flags(df)
    history = group_hypervolume_history(df, completion_order(df), ref_score=ref.score)
    hv = group_hypervolume(df, ref_score=ref.score)
    files = {"front.png": front_figure_png(df, out / "front.png", reference=ref),
             "front.html": front_figure_html(df, out / "front.html", reference=ref)}
    notes: list[str] = []
    importances: pd.Series | None = None
    effects: pd.DataFrame | None = None
    if not importance:
        notes.append("importance.png and the like-for-like effects are computed when the search ends")
        for name in ("importance.png", "effects.csv"):
            if (out / name).exists():  # the last one computed stays attached
                files[name] = out / name
    else:
        importances = _importances(df, out, files, notes)
        effects = like_for_like(df, ref)
        effects[COLUMNS + ["conclusion"]].to_csv(out / "effects.csv", index=False)
        files["effects.csv"] = out / "effects.csv"
    # the front computed now, not the petl.pareto tags as loaded (log_report sets those after the files are written)
    trials_table(df.assign(pareto_tag=np.where(pareto, "true", "false"))).to_csv(out / "trials.csv", index=False)
    files["trials.csv"] = out / "trials.csv"
    (out / "summary.md").write_text(summary_markdown(df, hv, ref, notes, effects, importances), encoding="utf-8")
    files["summary.md"] = out / "summary.md"
    return ReportResult(parent_run_id=str(df.attrs.get("parent_run_id", "")), files=files, hypervolume=hv,
                        history=history, pareto_run_ids=df.loc[pareto, "run_id"].tolist(), reference=ref,
                        notes=notes, effects=effects)


def log_report(client: MlflowClient, df: pd.DataFrame, result: ReportResult, *, metric: bool = True) -> None:
    """Attach the report to the parent run; writes only what changed so repeated calls are cheap and safe.

    ``metric=False`` leaves the parent's hypervolume history alone (a report against another reference score must
    not add points to the search's own history: MLflow cannot edit one).
    """
    pid = result.parent_run_id
    for path in result.files.values():
        client.log_artifact(pid, str(path), artifact_path=ARTIFACT_DIR)
    if metric:
        _log_history(client, df, result)
    pareto = set(result.pareto_run_ids)
    for run_id, current in zip(df["run_id"], df["pareto_tag"]):
        wanted = "true" if run_id in pareto else "false"
        if current != wanted:
            client.set_tag(run_id, PARETO_TAG, wanted)


def _log_history(client: MlflowClient, df: pd.DataFrame, result: ReportResult) -> None:
    pid = result.parent_run_id
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
