"""Real searches: local Ray, a SQLite MLflow store, MiniLM on the generated task. Slow (tens of seconds each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from search.cli import main as search_main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_shutdown_after_module")]


def children(client: MlflowClient, parent_id: str) -> list:
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def the_parent(client: MlflowClient) -> str:
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`petl.role` = 'search'")
    assert len(runs) == 1
    return runs[0].info.run_id


def write_space(tmp_path: Path, train: dict, sites: dict | None = None, presets: list | None = None) -> Path:
    data = {"task": "toy-cls", "model": "minilm", "sites": sites or {
        "ffn": {"form": ["relu", "identity"], "size": [2, 16], "composition": "scaled", "scale": 2.0, "init": "lora"}},
        "train": {"max_steps": 10, "eval_every": 5, "batch_size": 16, "eval_cap": 32, "max_length": 32, **train}}
    if presets:
        data["presets"] = presets
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(tmp_path: Path, space: Path, *extra: str) -> tuple[int, MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = search_main(["--space", str(space), "--storage", str(tmp_path / "runs"), "--tracking-uri", uri,
                        "--concurrency", "2", *extra])
    client = MlflowClient(tracking_uri=uri)
    return code, client, the_parent(client)


def test_a_small_search_lands_in_mlflow_as_parent_and_children(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    space = write_space(tmp_path, {"lr": {"low": 1e-3, "high": 1e-2, "log": True}},
                        sites={"ffn": {"form": ["none", "relu", "identity"], "size": [2, 16], "composition": "scaled",
                                       "scale": 2.0, "init": "lora", "dropout": 0.1},
                               "query": {"form": ["none", "identity"], "size": [2, 16], "composition": "scaled",
                                         "scale": 2.0, "init": "lora", "dropout": 0.1},
                               "value": {"form": ["none", "identity"], "size": [2, 16], "composition": "scaled",
                                         "scale": 2.0, "init": "lora", "dropout": 0.1}},
                        presets=["lora_attn"])
    code, client, parent_id = run(tmp_path, space, "--num-samples", "4", "--name", "small")
    assert code == 0
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["petl.code_version"]
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"space.yaml", "run_config.json", "analysis"} <= artifacts
    runs = children(client, parent_id)
    assert len(runs) == 4 and len({r.data.tags["petl.trial_id"] for r in runs}) == 4
    for r in runs:
        assert r.data.tags["petl.status"] in ("finished", "stopped")
        assert r.data.params["ffn.form"] in ("none", "relu", "identity") and float(r.data.params["train.lr"]) > 0
        assert 0 < r.data.metrics["fraction"] < 1 and r.data.metrics["params.stored"] > 0
        history = client.get_metric_history(r.info.run_id, "score")
        assert [m.step for m in history] == sorted(m.step for m in history) and history
        if r.data.tags["petl.status"] == "stopped":
            assert r.data.tags["petl.pareto"] == "false"
    assert sum(r.data.tags.get("petl.preset") == "lora_attn" for r in runs) >= 1  # evaluated first
    assert len(client.get_metric_history(parent_id, "hypervolume")) == 4
    out = capsys.readouterr().out
    assert "Pareto-optimal designs" in out and "mlflow ui --backend-store-uri" in out


def test_a_search_whose_every_trial_failed_exits_3_and_a_deterministic_error_is_not_retried(tmp_path: Path) -> None:
    # lr 1e12 makes the loss explode within 3 steps (a TrialFailure); a token budget of 1 makes the trial raise a
    # ValueError when it builds its batches (a value the plan cannot reject, as it depends on the token lengths: it
    # will raise again on every retry). With seed 2 the sampler draws max_tokens [None, 1, 1, None]: two of each.
    # Before (issue 12 item 9): exit 0, parent FINISHED, and the ValueError trials retried --max-failures times.
    space = write_space(tmp_path, {"lr": 1.0e12, "max_tokens": [None, 1]})
    code, client, parent_id = run(tmp_path, space, "--num-samples", "4", "--name", "failing", "--scheduler",
                                  "none", "--max-failures", "3", "--seed", "2")
    assert code == 3
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED" and parent.data.tags["petl.search_state"] == "no_trial_finished"
    status = json.loads((tmp_path / "runs" / "failing" / "status.json").read_text())
    assert (status["state"], status["exit_code"], status["counts"]["failed"]) == ("no_trial_finished", 3, 4)
    # Not retried: Ray never saw an error (it writes error.txt per failed attempt); each trial ran once.
    assert not list((tmp_path / "runs" / "failing").glob("*/error.txt"))
    runs = children(client, parent_id)
    assert len(runs) == 4
    for r in runs:
        assert r.data.tags["petl.status"] == "failed" and r.info.status == "FAILED"
        reason = r.data.tags["petl.failure"]
        if r.data.params["train.max_tokens"] == "1":
            assert reason.startswith("ValueError: every example must fit max_tokens=1, got length"), reason
        else:  # whichever the loop sees first: a non-finite loss or a smoothed loss 10x above its best
            assert reason.startswith(("loss is nan", "loss is inf", "loss diverged")), reason
    assert {r.data.params["train.max_tokens"] for r in runs} == {"None", "1"}


def test_a_search_killed_with_sigkill_resumes_with_no_trial_lost_or_repeated(tmp_path: Path) -> None:
    space = write_space(tmp_path, {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "max_steps": 20})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(space), "--storage",
           str(tmp_path / "runs"), "--tracking-uri", uri, "--num-samples", "6", "--concurrency", "1",
           "--name", "killed", "--scheduler", "none"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    seen, deadline = [], time.time() + 300
    for line in proc.stdout:  # kill right after the second trial is recorded
        seen.append(line)
        if line.startswith("[2/6]") or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    assert any(line.startswith("[2/6]") for line in seen), "".join(seen[-30:])
    client = MlflowClient(tracking_uri=uri)
    parent_id = the_parent(client)
    before = {r.data.tags["petl.trial_id"]: r.data.tags["petl.status"] for r in children(client, parent_id)}
    assert 2 <= len(before) < 6
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # The counter continues from the trials already recorded (before: it restarted at [1/6]) and ends at [6/6].
    progress = [int(line[1:].split("/")[0]) for line in resumed.stdout.splitlines() if line.startswith("[")]
    recorded = sum(status in ("finished", "stopped", "failed", "skipped") for status in before.values())
    assert progress[0] >= recorded >= 2 and progress[-1] == 6, (recorded, progress)
    after = {r.data.tags["petl.trial_id"]: r.data.tags["petl.status"] for r in children(client, parent_id)}
    finished = {tid for tid, status in after.items() if status == "finished"}
    assert len(finished) == 6  # exactly the requested number: none lost, none duplicated
    # A trial started in the second before the killed driver's last saved state is unknown to --resume: its
    # slot runs again under a new id and its child run is closed as interrupted, never left running.
    others = {tid: status for tid, status in after.items() if tid not in finished}
    assert set(others.values()) <= {"interrupted"} and len(others) <= 1, others
    assert set(before) <= set(after)
    for tid, status in before.items():
        if status == "finished":  # a completed trial is not run again: its run was not reopened
            assert after[tid] == "finished"
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_a_trial_can_be_a_two_worker_deepspeed_job_under_ray_train(tmp_path: Path) -> None:
    # Ray Train V2's driver pattern: the Tune trial launches a TorchTrainer whose 2 workers run the loop under
    # DeepSpeed (gloo on CPU), each on half of every global batch; rank 0's metrics reach Tune and MLflow.
    space = write_space(tmp_path, {"lr": 3.0e-3, "max_steps": 4, "eval_every": 2, "batch_size": 8})
    code, client, parent_id = run(tmp_path, space, "--num-samples", "1", "--name", "ddp", "--scheduler", "none",
                                  "--workers-per-trial", "2")
    assert code == 0
    (child,) = children(client, parent_id)
    assert child.data.tags["petl.status"] == "finished" and child.data.tags["petl.fidelity"] == "4"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "score")] == [2, 4]
    # Ray Train's own run folder lives inside the search's folder (before: <storage>/<trial_id>, beside searches).
    trial_id = child.data.tags["petl.trial_id"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]
    assert (tmp_path / "runs" / "ddp" / "ray_train" / trial_id).is_dir()


def test_a_config_already_trained_to_full_fidelity_is_reused_not_retrained(tmp_path: Path) -> None:
    # One design and one lr: every suggestion after the first is a duplicate of a seeded, finished run.
    space = write_space(tmp_path, {"lr": 3.0e-3, "max_steps": 4, "eval_every": 2},
                        sites={"ffn": {"form": ["relu"], "size": [2], "composition": "scaled", "scale": 2.0,
                                       "init": "lora"}})
    code, client, parent_id = run(tmp_path, space, "--num-samples", "3", "--name", "dup", "--scheduler", "none",
                                  "--concurrency", "1")
    assert code == 0
    runs = sorted(children(client, parent_id), key=lambda r: r.info.start_time)
    assert [r.data.tags["petl.status"] for r in runs] == ["finished"] * 3
    first = runs[0].data.tags["petl.trial_id"]
    assert "petl.reused_from" not in runs[0].data.tags
    # named by the trial id users see, as the run names are
    assert [r.info.run_name for r in runs] == ["t001 scaled PA r=2", "t002 scaled PA r=2", "t003 scaled PA r=2"]
    assert [r.data.tags.get("petl.reused_from") for r in runs[1:]] == ["t001", "t001"]
    assert {r.data.metrics["score"] for r in runs} == {runs[0].data.metrics["score"]}
    trained = sorted(p.parent.name for p in (tmp_path / "runs" / "dup" / "trials").glob("*/petl.safetensors"))
    assert trained == [first]  # trained once
    from analysis.load import load_search

    assert load_search(parent_run_id=parent_id, client=client)["reused_from"].notna().sum() == 2


def test_designs_over_the_parameter_budget_are_never_trained(tmp_path: Path) -> None:
    space = write_space(tmp_path, {"lr": 3.0e-3, "max_steps": 4, "eval_every": 2},
                        sites={"ffn": {"form": ["relu"], "size": [2, 16], "composition": "scaled", "scale": 2.0,
                                       "init": "lora"}})  # stored fractions 0.051% (r=2) and 0.337% (r=16)
    code, client, parent_id = run(tmp_path, space, "--num-samples", "4", "--name", "budget", "--scheduler", "none",
                                  "--max-param-fraction", "0.002", "--rerun-duplicates", "--seed", "1")
    assert code == 0
    runs = children(client, parent_id)
    status = {r.data.tags["petl.trial_id"]: (r.data.tags["petl.status"], r.data.metrics["fraction"]) for r in runs}
    # Every slot trains a design within the budget: the r=16 draws went back to the sampler, not to Ray.
    assert len(status) == 4 and all(s == "finished" and f <= 0.002 for s, f in status.values()), status
    trained = {p.parent.name for p in (tmp_path / "runs" / "budget" / "trials").glob("*/petl.safetensors")}
    assert trained == set(status)
