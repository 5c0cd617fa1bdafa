"""load_search and the report against a fabricated search in a temporary sqlite MLflow store."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Param, Run, RunData, RunInfo, RunTag

from analysis.design import BASE_COLUMNS, completion_order
from analysis.groups import pareto_flags
from analysis.load import SearchNotFoundError, TrackingUnreachableError, load_search, runs_to_frame
from analysis.pareto import hypervolume
from analysis.report import main, update_search_report
from analysis.synthetic import fabricate_search

# 12 trials: presets mam and prefix first (finished), then a fixed mix of finished / stopped / failed.
STATUSES = ["finished", "finished", "finished", "stopped", "finished", "failed",
            "finished", "stopped", "finished", "failed", "finished", "stopped"]
EXPERIMENT = "petl-test"


def _store(tmp_path: Path) -> tuple[str, MlflowClient]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment(EXPERIMENT, artifact_location=str(tmp_path / "artifacts"))
    return uri, client


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One fabricated search shared by the read-only tests (the sqlite schema set-up costs ~1.5 s)."""
    tmp = tmp_path_factory.mktemp("mlflow")
    uri, client = _store(tmp)
    s = fabricate_search(client, EXPERIMENT, 12, seed=3, statuses=STATUSES)
    return {"uri": uri, "client": client, "search": s, "tmp": tmp}


def test_load_search_frame(search: dict) -> None:
    df = load_search(EXPERIMENT, tracking_uri=search["uri"])
    assert len(df) == 12
    assert list(df.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    for col in ("ffn.form", "ffn.size", "ffn.insertion", "ffn.composition", "ffn.scale", "head_attn.size",
                "attn.form", "prompt.length", "backbone", "train.lr"):
        assert col in df.columns, col
    assert df["score"].dtype == np.float64 and df["fraction"].dtype == np.float64
    assert df["full_fidelity"].dtype == bool
    assert pd.api.types.is_integer_dtype(df["fidelity"]) and pd.api.types.is_integer_dtype(df["params.stored"])
    assert pd.api.types.is_integer_dtype(df["ffn.size"]) and pd.api.types.is_integer_dtype(df["prompt.length"])
    assert pd.api.types.is_float_dtype(df["ffn.scale"]) and pd.api.types.is_float_dtype(df["train.lr"])
    assert pd.api.types.is_string_dtype(df["ffn.form"]) or df["ffn.form"].dtype == object
    assert sorted(df["status"]) == sorted(STATUSES)
    assert (df["full_fidelity"] == (df["status"] == "finished")).all()
    assert df.loc[df["status"] == "stopped", "fidelity"].lt(df["max_fidelity"]).all()
    assert sorted(df["preset"].dropna()) == ["mam", "prefix"]
    failed = df[df["status"] == "failed"]
    assert failed["score"].isna().all() and failed["failure"].str.contains("out of memory").all()
    mam = df[df["preset"] == "mam"].iloc[0]
    assert (mam["ffn.form"], mam["ffn.size"], mam["ffn.scale"]) == ("relu", 512, 4.0)
    # The last logged score is the final one (the fabricator logs lower values at earlier steps).
    assert df["score"].notna().sum() == 10
    assert df.attrs["parent_run_id"] == search["search"].parent_run_id


def test_load_picks_newest_parent_unless_given(tmp_path: Path) -> None:
    uri, client = _store(tmp_path)
    old = fabricate_search(client, EXPERIMENT, 3, seed=1, t0=1_000_000_000_000)
    new = fabricate_search(client, EXPERIMENT, 4, seed=2, t0=1_000_100_000_000)
    assert load_search(EXPERIMENT, tracking_uri=uri).attrs["parent_run_id"] == new.parent_run_id
    assert len(load_search(EXPERIMENT, tracking_uri=uri)) == 4
    df_old = load_search(parent_run_id=old.parent_run_id, tracking_uri=uri)
    assert len(df_old) == 3 and set(df_old["run_id"]) == set(old.run_ids)


def test_load_pages_through_search_runs(search: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import analysis.load

    monkeypatch.setattr(analysis.load, "PAGE_SIZE", 5)  # 12 trials -> pages of 5, 5, 2
    df = load_search(EXPERIMENT, tracking_uri=search["uri"])
    assert len(df) == 12 and df["run_id"].is_unique


def test_param_coercion_and_status_fallback() -> None:
    info = RunInfo(run_id="r1", experiment_id="0", user_id="u", status="FAILED", start_time=1, end_time=2,
                   lifecycle_stage="active", run_name="t")
    params = [Param("ffn.learn_scale", "True"), Param("ffn.dropout", "0.1"), Param("ffn.size", "64"),
              Param("ffn.init", "lora"), Param("ffn.scale", "None")]
    run = Run(info, RunData(params=params, tags=[RunTag("petl.role", "trial")]))
    df = runs_to_frame([run])
    assert df["ffn.learn_scale"].dtype == "boolean" and bool(df["ffn.learn_scale"].iat[0])
    assert df["ffn.dropout"].dtype == np.float64 and pd.api.types.is_integer_dtype(df["ffn.size"])
    assert df["ffn.init"].iat[0] == "lora"
    assert df["status"].iat[0] == "failed"  # no petl.status tag: MLflow's FAILED status is used
    assert not df["full_fidelity"].iat[0] and np.isnan(df["score"].iat[0])


def test_error_unknown_experiment(search: dict) -> None:
    with pytest.raises(SearchNotFoundError, match=r"Unknown experiment 'nope'.*Existing experiments: .*'petl-test'"):
        load_search("nope", tracking_uri=search["uri"])


def test_error_no_parent_and_wrong_parent(search: dict) -> None:
    client: MlflowClient = search["client"]
    if client.get_experiment_by_name("empty") is None:
        client.create_experiment("empty")
    with pytest.raises(SearchNotFoundError, match=r"No search parent run .* in experiment 'empty'"):
        load_search("empty", tracking_uri=search["uri"])
    child = search["search"].run_ids[0]
    with pytest.raises(SearchNotFoundError, match=r"is not a search parent \(tag petl.role='trial'"):
        load_search(parent_run_id=child, tracking_uri=search["uri"])
    with pytest.raises(ValueError, match="experiment name or a parent run id"):
        load_search(tracking_uri=search["uri"])


def test_error_unreachable_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:  # a port nobody listens on: bind, read the number, close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    expected = rf"Cannot reach the MLflow tracking store at '{uri}'.*--tracking-uri"
    with pytest.raises(TrackingUnreachableError, match=expected):
        load_search(EXPERIMENT, tracking_uri=uri)
    assert time.perf_counter() - t0 < 15
    assert main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", "/nonexistent-never-written"]) == 2


def test_a_report_from_the_wrong_folder_names_the_missing_store_and_creates_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`petl-report` run outside the search's folder: before, MLflow created an empty mlflow.db there and the report
    answered "Unknown experiment ... Existing experiments: 'Default'"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["--experiment", EXPERIMENT, "--out", str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err == (
        f"error: No MLflow store at 'sqlite:///{tmp_path / 'mlflow.db'}' (no such file). A search writes "
        "sqlite:///mlflow.db in the folder it ran from unless given --tracking-uri: run from that folder, or pass "
        "the search's --tracking-uri.\n")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "report").exists()


def _check_png(path: Path) -> None:
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    assert abs(w - 1000) <= 20 and abs(h - 700) <= 20, (w, h)
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05  # not blank
    assert len(np.unique(rgb, axis=0)) > 10  # more than one colour


def test_report_main_writes_and_logs(tmp_path: Path) -> None:
    uri, client = _store(tmp_path)
    s = fabricate_search(client, EXPERIMENT, 12, seed=3, statuses=STATUSES)
    out = tmp_path / "report"
    assert main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(out)]) == 0
    names = ["front.png", "front.html", "importance.png", "trials.csv", "effects.csv", "summary.md"]
    for name in names:
        assert (out / name).stat().st_size > 0, name
    _check_png(out / "front.png")
    _check_png(out / "importance.png")
    html = (out / "front.html").read_text(encoding="utf-8")
    assert "cdn.plot.ly" not in html.split("<body>")[0] and len(html) > 1_000_000  # plotly.js embedded
    # MAM in its own words, prefix MLP included (it was dropped when the report tested settings for truthiness).
    assert "head_attn: softmax, parallel, gated, l=30, prefix MLP 800" in html
    assert "ffn: relu, parallel, scaled s=4, r=512, init=lora, dropout=0.1" in html
    assert "hypervolume reference score 0.5 (chance, 1\\u002f2 classes; the search recorded no reference)" in html
    assert len(pd.read_csv(out / "trials.csv")) == 12
    effects = pd.read_csv(out / "effects.csv")
    assert list(effects.columns) == ["axis", "site", "a", "b", "diff", "ci_low", "ci_high", "n_pairs", "verdict",
                                     "conclusion"]
    assert effects["conclusion"].dropna().tolist() == ["parallel > sequential", "FFN > attention at larger budgets",
                                                       "scaled > plain addition", "multi-head wins at tiny budgets"]
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| design |" in summary and "mam" in summary and "MB" in summary
    assert "- hypervolume reference score: 0.5 (chance, 1/2 classes; the search recorded no reference)" in summary
    assert "## Hypervolume per design family" in summary and "| MAM | 1 |" in summary
    assert "## The paper's conclusions, like for like" in summary

    logged = {Path(a.path).name for a in client.list_artifacts(s.parent_run_id, "analysis")}
    assert set(names) <= logged
    df = load_search(EXPERIMENT, tracking_uri=uri)
    history = client.get_metric_history(s.parent_run_id, "hypervolume")
    order = completion_order(df)
    assert len(history) == len(order) == 12  # one point per completed trial, failed and stopped included
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(12))
    assert np.all(np.diff(values) >= 0)
    full = np.where(df["full_fidelity"], df["score"], np.nan)
    assert values[-1] == pytest.approx(hypervolume(full, df["fraction"], ref_score=0.5))  # the task's chance score

    pareto = pareto_flags(df)
    assert pareto.any()
    assert (df["pareto_tag"] == np.where(pareto, "true", "false")).all()
    assert not df.loc[df["status"].isin(["stopped", "failed"]), "pareto_tag"].eq("true").any()

    # Idempotent: a second update adds no metric points and changes no tags.
    update_search_report(client, s.parent_run_id, out)
    assert len(client.get_metric_history(s.parent_run_id, "hypervolume")) == 12
    assert (load_search(EXPERIMENT, tracking_uri=uri)["pareto_tag"] == df["pareto_tag"]).all()


def test_update_after_more_trials_extends_history(tmp_path: Path) -> None:
    uri, client = _store(tmp_path)
    s = fabricate_search(client, EXPERIMENT, 4, seed=5, t0=1_000_000_000_000)
    r1 = update_search_report(client, s.parent_run_id, tmp_path / "out")
    # Later trials start after the earlier ones ended, as when the search reports after each trial.
    fabricate_search(client, EXPERIMENT, 3, seed=6, parent_run_id=s.parent_run_id, t0=1_000_001_000_000, presets=())
    r2 = update_search_report(client, s.parent_run_id, tmp_path / "out")
    hist = client.get_metric_history(s.parent_run_id, "hypervolume")
    assert len(hist) == 7
    assert np.allclose(r2.history[:4], r1.history)
    assert r2.hypervolume >= r1.hypervolume


def test_no_log_and_too_few_trials(tmp_path: Path) -> None:
    uri, client = _store(tmp_path)
    s = fabricate_search(client, EXPERIMENT, 2, seed=0)  # the two presets only: too few for importances
    out = tmp_path / "r"
    assert main(["--parent-run-id", s.parent_run_id, "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    assert (out / "front.png").exists() and not (out / "importance.png").exists()
    assert "importance.png skipped" in (out / "summary.md").read_text(encoding="utf-8")
    assert client.list_artifacts(s.parent_run_id) == []
    assert client.get_metric_history(s.parent_run_id, "hypervolume") == []
    assert all("petl.pareto" not in client.get_run(r).data.tags for r in s.run_ids)


def test_empty_search_still_reports(tmp_path: Path) -> None:
    uri, client = _store(tmp_path)
    s = fabricate_search(client, EXPERIMENT, 0)
    result = update_search_report(client, s.parent_run_id, tmp_path / "r")
    assert result.hypervolume == 0.0 and result.pareto_run_ids == []
    assert (tmp_path / "r" / "front.png").stat().st_size > 0


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--experiment", "--parent-run-id", "--tracking-uri", "--out", "--no-log"):
        assert flag in text


def test_periodic_refresh_defers_importance_and_keeps_the_last_plot(tmp_path: Path) -> None:
    uri, client = _store(tmp_path)
    s = fabricate_search(client, EXPERIMENT, 12, seed=3, statuses=STATUSES)
    out = tmp_path / "report"
    quick = update_search_report(client, s.parent_run_id, out, importance=False)
    assert not (out / "importance.png").exists() and "importance.png" not in quick.files
    assert "importance.png and the like-for-like effects are computed when the search ends" in (
        out / "summary.md").read_text(encoding="utf-8")
    update_search_report(client, s.parent_run_id, out)  # the final report computes it
    assert (out / "importance.png").stat().st_size > 0
    mtime = (out / "importance.png").stat().st_mtime_ns
    again = update_search_report(client, s.parent_run_id, out, importance=False)
    assert again.files["importance.png"] == out / "importance.png"  # still attached, not recomputed
    assert (out / "importance.png").stat().st_mtime_ns == mtime


def test_reference_score_override_is_written_everywhere_but_the_searchs_history(tmp_path: Path) -> None:
    uri, client = _store(tmp_path)
    s = fabricate_search(client, EXPERIMENT, 12, seed=3, statuses=STATUSES)
    out = tmp_path / "r"
    args = ["--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(out), "--reference-score", "0.7"]
    assert main(args) == 0
    df = load_search(EXPERIMENT, tracking_uri=uri)
    hv = hypervolume(np.where(df["full_fidelity"], df["score"], np.nan), df["fraction"], ref_score=0.7)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert f"- hypervolume: {hv:.4g} (" in summary and hv < hypervolume(df["score"], df["fraction"], ref_score=0.5)
    assert "- hypervolume reference score: 0.7 (given on the command line)" in summary
    assert "hypervolume reference score 0.7 (given on the command line)" in (out / "front.html").read_text()
    # A report against another reference must not add points to the search's own hypervolume history.
    assert client.get_metric_history(s.parent_run_id, "hypervolume") == []
    assert {Path(a.path).name for a in client.list_artifacts(s.parent_run_id, "analysis")} >= {"summary.md"}


def test_trials_csv_marks_the_front_computed_now_not_the_tags_as_loaded(tmp_path: Path) -> None:
    from analysis.report import write_report
    from analysis.synthetic import synthetic_runs

    df = runs_to_frame(synthetic_runs(12, seed=3)).assign(pareto_tag="false")  # tags from before the last refresh
    write_report(df, tmp_path, importance=False)
    table = pd.read_csv(tmp_path / "trials.csv")
    front = pareto_flags(df)
    assert front.any() and table["pareto_tag"].astype(str).str.lower().tolist() == [
        "true" if f else "false" for f in front]
