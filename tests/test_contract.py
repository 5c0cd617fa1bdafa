"""One contract: what search/tracking.py writes is what analysis/load.py reads, by the names of search/contract.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from analysis.design import describe_design
from analysis.load import load_search
from finetune.presets import get_preset
from search import contract as C
from search.replicates import with_replicate
from search.store import parent_run
from search.tracking import MlflowSearchCallback

# What tracking wrote before the contract existed, for MAM with a sampled lr (users' saved MLflow queries use these).
OLD_PARAMS = {
    "head_attn.form": "softmax", "head_attn.size": "30", "head_attn.insertion": "parallel",
    "head_attn.composition": "gated", "head_attn.scale": "1.0", "head_attn.learn_scale": "False",
    "head_attn.layernorm": "none", "head_attn.dropout": "0.0", "head_attn.prefix_mlp": "800", "attn.form": "none",
    "ffn.form": "relu", "ffn.size": "512", "ffn.insertion": "parallel", "ffn.composition": "scaled",
    "ffn.scale": "4.0", "ffn.learn_scale": "False", "ffn.init": "lora", "ffn.layernorm": "none", "ffn.dropout": "0.1",
    "ffn.prefix_mlp": "0", "query.form": "none", "value.form": "none", "fc1.form": "none", "fc2.form": "none",
    "prompt.length": "0", "backbone": "frozen", "train_task_head": "True", "train.lr": "0.001",
}
OLD_TAGS = {"mlflow.parentRunId", "petl.role", "petl.trial_id", "petl.max_fidelity", "petl.status", "petl.preset",
            "petl.design", "petl.fidelity"}
OLD_METRICS = {"fraction", "params.trainable", "params.stored", "score", "loss", "eval_loss", "metric.accuracy"}


def record_trials(tmp_path: Path, configs: list[dict], results: list[list[dict]]) -> tuple[MlflowClient, str]:
    """Drive the search's own tracking callback with fake Ray trials, as a search does."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    parent_id = parent_run(client, "contract", str(tmp_path / "search"), {"task": "sst2"}, {}, resume=False)
    callback = MlflowSearchCallback(uri, parent_id, max_steps=20, report_dir=str(tmp_path / "report"),
                                    refresh_every_s=float("inf"), num_samples=len(configs))
    for i, (config, steps) in enumerate(zip(configs, results)):
        trial = SimpleNamespace(trial_id=f"t{i:03d}", config=config, last_result=None, error_file=None)
        callback.on_trial_start(i, [], trial)
        for result in steps:
            callback.on_trial_result(i, [], trial, result)
        callback.on_trial_complete(i, [], trial)
    return client, parent_id


def mam_config(seed: int, lr: float = 0.001) -> dict:
    config = {"design": get_preset("mam").design.to_dict(), "train": {"lr": lr}, "fraction": 0.067, "preset": "mam",
              "counts": {"trainable": 1000, "stored": 900}}
    return with_replicate(config, seed=seed, index=seed - 42, count=2)


def steps(score: float) -> list[dict]:
    return [{"step": s, "score": score - 0.01 * (20 - s) / 10, "loss": 0.5, "eval_loss": 0.4,
             "metric.accuracy": score, "fraction": 0.067} for s in (10, 20)]


def test_tracking_keeps_every_old_param_tag_and_metric_name_and_adds_the_new_ones(tmp_path: Path) -> None:
    client, parent_id = record_trials(tmp_path, [mam_config(42)], [steps(0.81)])
    run = client.search_runs([client.get_run(parent_id).info.experiment_id],
                             f"tags.`{C.PARENT_RUN_TAG}` = '{parent_id}'")[0]
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert {k: params[k] for k in OLD_PARAMS} == OLD_PARAMS  # same names, same spelling of the values
    assert set(params) - set(OLD_PARAMS) == {"train.seed"} and params["train.seed"] == "42"
    assert OLD_TAGS <= set(tags) and tags["petl.status"] == "finished" and tags["petl.fidelity"] == "20"
    assert {"petl.design_key", "petl.replicate", "petl.family"} <= set(tags)
    assert tags["petl.replicate"] == "1/2" and tags["petl.family"] == "MAM"
    assert tags["petl.design"] == get_preset("mam").design.describe()
    assert OLD_METRICS <= set(metrics) and metrics["score"] == pytest.approx(0.81)
    assert client.get_run(parent_id).data.tags[C.ROLE_TAG] == C.ROLE_SEARCH


def test_what_tracking_writes_the_loader_reads_back(tmp_path: Path) -> None:
    configs = [mam_config(42), mam_config(43), mam_config(42, lr=0.002)]
    client, parent_id = record_trials(tmp_path, configs, [steps(0.81), steps(0.83), steps(0.70)])
    df = load_search(parent_run_id=parent_id, client=client)
    assert df["seed"].tolist() == [42, 43, 42] and df["family"].tolist() == ["MAM"] * 3
    # The replicate seeds of one design share its key, written by the searcher and recomputed from the params alike.
    assert df["design_key"].tolist() == [c["replicate"]["key"] for c in configs]
    assert df["design_key"].iat[0] == df["design_key"].iat[1] != df["design_key"].iat[2]
    assert describe_design(df.iloc[0].to_dict()) == get_preset("mam").design.describe().splitlines()
    assert df["full_fidelity"].all() and df["score"].tolist() == pytest.approx([0.81, 0.83, 0.70])
    assert df.attrs["reference"] == C.Reference(0.5, "chance, 1/2 classes; the search recorded no reference")


def test_design_key_ignores_the_seed_and_nothing_else() -> None:
    params = C.config_params(mam_config(42))
    assert C.design_key(params) == C.design_key({**params, "train.seed": 7})
    assert C.design_key(params) != C.design_key({**params, "train.lr": 0.002})
    assert C.design_key(params) != C.design_key({**params, "ffn.dropout": 0.2})
    # As logged (strings) and as read back (numbers, booleans) the key is the same.
    assert C.design_key(params) == C.design_key({k: str(v) for k, v in params.items()})
    assert C.canonical("4.0") == C.canonical(4) == C.canonical(4.0) == "4" and C.canonical("True") == "true"
    assert C.canonical("relu") == "relu" and C.canonical(0.1) == C.canonical("0.1") == "0.1"


def test_task_reference_scores() -> None:
    assert C.task_reference("sst2") == C.Reference(0.5, "chance, 1/2 classes")
    assert C.task_reference("mnli").score == pytest.approx(1 / 3)
    assert C.task_reference("sst2", [1, 0, 1, 1]) == C.Reference(0.75, "majority class of the 4 evaluation examples")
    assert C.task_reference("en-ro") == C.Reference(0.0, "0 (bleu_ro of an empty output)")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        C.task_reference("nope")
