"""Replicate seeds and study mode for real: local Ray, a SQLite MLflow store, MiniLM on the generated task. Slow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from analysis.groups import design_groups
from analysis.load import load_search
from search.cli import main as search_main
from search.reevaluate import main as reevaluate_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_shutdown_after_module")]


def write_space(tmp_path: Path, lr: object) -> Path:
    data = {"task": "toy-cls", "model": "minilm",
            "sites": {"ffn": {"form": ["relu", "identity"], "size": 2, "composition": "scaled", "scale": 2.0,
                              "init": "lora"}},
            "train": {"max_steps": 4, "eval_every": 2, "batch_size": 16, "eval_cap": 32, "max_length": 32, "lr": lr}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def search(tmp_path: Path, *args: str) -> tuple[MlflowClient, pd.DataFrame]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert search_main([*args, "--storage", str(tmp_path / "runs"), "--tracking-uri", uri, "--concurrency", "2"]) == 0
    client = MlflowClient(tracking_uri=uri)
    name = args[args.index("--name") + 1]
    return client, load_search(name, client=client)


def test_a_grid_study_trains_every_design_under_each_seed_and_its_front_is_reevaluated(tmp_path: Path) -> None:
    client, df = search(tmp_path, "--space", str(write_space(tmp_path, 3.0e-3)), "--sampler", "grid", "--seeds", "2",
                        "--name", "grid")
    assert len(df) == 4 and (df["status"] == "finished").all()  # 2 designs x 2 seeds, no early stopping
    groups = design_groups(df)
    assert len(groups) == 2 and groups["n_seeds"].tolist() == [2, 2]
    assert sorted(df["seed"].tolist()) == [0, 0, 1, 1]  # toy-cls's recipe seed and the one after it
    tags = [client.get_run(r).data.tags for r in df["run_id"]]
    assert sorted(t["petl.replicate"] for t in tags) == ["1/2", "1/2", "2/2", "2/2"]
    assert {t["petl.design_key"] for t in tags} == set(df["design_key"])
    summary = (tmp_path / "runs" / "grid" / "report" / "summary.md").read_text()
    assert "with a full-fidelity score: 2 (2 with 2 seeds)" in summary and " seeds) |" in summary
    parent = df.attrs["parent_run_id"]
    assert client.get_run(parent).data.tags["petl.reference_score"] == repr(
        df.attrs["reference"].score) and df.attrs["reference"].basis == "majority class of the 32 evaluation examples"

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert reevaluate_main(["--from-run", parent, "--seeds", "3", "--name", "front", "--storage",
                            str(tmp_path / "runs"), "--tracking-uri", uri]) == 0
    again = load_search("front", client=client)
    optimal = set(df.loc[df["pareto_tag"] == "true", "design_key"])  # tagged by the grid's final report
    checked = design_groups(again)
    assert (again["status"] == "finished").all() and set(checked["n_seeds"]) == {3}
    # fresh seeds after the grid's 0 and 1: the same seeds on the same task would only reproduce its numbers
    assert len(again) == 3 * len(optimal) and sorted(again["seed"].unique()) == [2, 3, 4]
    assert set(checked["design_key"]) == optimal  # the same designs under the same training settings


def test_an_optimizer_search_evaluates_each_design_under_its_seeds(tmp_path: Path) -> None:
    space = write_space(tmp_path, {"low": 1.0e-3, "high": 1.0e-2, "log": True})
    client, df = search(tmp_path, "--space", str(space), "--seeds", "2", "--num-samples", "2", "--scheduler", "none",
                        "--name", "tpe", "--rerun-duplicates")
    assert len(df) == 4 and (df["status"] == "finished").all()
    groups = design_groups(df)
    assert len(groups) == 2 and groups["n_seeds"].tolist() == [2, 2]
    for key, runs in df.groupby("design_key"):
        assert sorted(runs["seed"]) == [0, 1] and runs["train.lr"].nunique() == 1  # one suggestion, two seeds
