"""Batch submission and a driver a scheduler can trust, without a cluster: the sbatch script line by line, what a
batch job refuses, the --address probe, placement against nodes, exit codes, status.json, stop signals, and which
trial errors are retried. The real SLURM / Ray cluster runs are in test_cluster_e2e.py and test_cluster_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from finetune.reporter import TrialFailure
from search import outcome as O
from search.cluster import Bundle, check_address, check_placement, split_address
from search.plan import SearchError
from search.slurm import base_port, ports, render
from search.submit import check_batch_args
from search.submit import main as submit_main
from search.trainable import deterministic, failure_reason

ROOT = Path(__file__).resolve().parents[1]
SBATCH_GOLDEN = Path(__file__).parent / "data" / "sbatch_two_nodes.sh"


def slurm_opts(**kw):
    base = dict(nodes=2, cpus_per_node=8, gpus_per_node=4, time="12:00:00", partition="gpu", account="lab",
                job_name=None, sbatch=["--mem=64G", "--exclusive"], stop_before=300, python="/opt/venv/bin/python",
                node_timeout=300, dry_run=True)
    return SimpleNamespace(**{**base, **kw})


def test_the_sbatch_script_is_rendered_line_by_line(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    script = render(slurm_opts(), ["--space", "full", "--dataset", "en-ro", "--name", "enro 1", "--storage",
                                   str(storage), "--gpus-per-trial", "1"], tmp_path)
    # The whole script, compared with the reviewed copy in tests/data (paths of this run folded to placeholders);
    # PETL_REGEN_GOLDEN=1 rewrites the copy after an intended change, for review in the diff.
    text = script.replace(str(tmp_path), "{TMP}").replace(str(ROOT), "{ROOT}")
    if os.environ.get("PETL_REGEN_GOLDEN"):
        SBATCH_GOLDEN.write_text(text)
    assert text == SBATCH_GOLDEN.read_text()
    # The script's port formula is the one the Ray nodes use; each node of a job has its own ports.
    assert base_port(1234) == 20000 + (1234 % 800) * 50
    assert set(ports(base_port(1), 0).values()).isdisjoint(ports(base_port(1), 1).values())
    assert max(ports(base_port(799), 3).values()) < 65536
    proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr  # valid bash


def test_one_node_renders_no_worker_step_and_dry_run_prints_the_script(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = submit_main(["slurm", "--nodes", "1", "--dry-run", "--", "--name", "x", "--storage", str(tmp_path),
                        "--tracking-uri", "http://mlflow:5000"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("#!/bin/bash\n") and "--head-address" not in out
    assert "--nodes 1 --timeout 300" in out and "--tracking-uri http://mlflow:5000 --address" in out


@pytest.mark.parametrize("argv, message", [
    (["--name", "x"], "error: --storage must be an absolute folder every node reaches (shared storage), got "
     "'petl_runs': a batch job starts on another node, in another folder"),
    (["--storage", "/s"], "error: a batch job needs --name after `--`: a requeued or re-submitted job resumes the "
     "search of that name"),
    (["--name", "x", "--storage", "/s", "--resume"], "error: leave --resume out after `--`: the job adds it when "
     "the search's state exists"),
    (["--name", "x", "--storage", "/tmp/ray/runs"], "error: --storage '/tmp/ray/runs' lies inside /tmp/ray, a "
     "temporary folder: it would vanish with the job; put it on storage that outlives the job (a shared folder, "
     "a tracking server)"),
    (["--name", "x", "--storage", "/s", "--tracking-uri", "sqlite:///mlflow.db"], "error: --tracking-uri must "
     "name an absolute SQLite path (sqlite:////abs/mlflow.db) or a server, got 'sqlite:///mlflow.db': a relative "
     "one lands in the job's working folder"),
    (["--name", "x", "--storage", "/s", "--address", "10.0.0.1:6379"], "error: leave --address out after `--`: "
     "the job starts its own Ray cluster over its nodes"),
    (["--name", "x", "--storage", "/s", "--dry-run"], "error: --dry-run after `--` plans without submitting: run "
     "petl-search --dry-run ... directly"),
])
def test_a_batch_job_refuses_what_it_would_lose_in_one_line(argv: list[str], message: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert submit_main(["slurm", "--dry-run", "--", *argv]) == 2
    assert capsys.readouterr().out.strip() == message


def test_a_ray_job_refuses_storage_inside_the_working_dir_it_uploads(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match=r"^--storage '.*/code/runs' lies inside the job's working dir, which Ray "
                                          r"copies to a temporary folder: it would vanish with the job"):
        check_batch_args(["--name", "x", "--storage", str(tmp_path / "code" / "runs")], tmp_path,
                         working_dir=tmp_path / "code")
    with pytest.raises(SearchError, match=r"^--tracking-uri '.*/code/m.db' lies inside the job's working dir"):
        check_batch_args(["--name", "x", "--storage", str(tmp_path / "runs"), "--tracking-uri",
                          f"sqlite:///{tmp_path / 'code' / 'm.db'}"], tmp_path, working_dir=tmp_path / "code")


def test_address_forms_and_a_wrong_address_fails_in_seconds_with_one_line() -> None:
    assert split_address("10.0.0.1:6379") == ("gcs", "10.0.0.1", 6379)
    assert split_address("ray://head") == ("client", "head", 10001)
    assert split_address("ray://head:10002") == ("client", "head", 10002)
    assert split_address("auto") is None
    with pytest.raises(SearchError, match=r"^--address must be host:port .* got 'http://head:8265'$"):
        split_address("http://head:8265")
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        start = time.time()
        with pytest.raises(SearchError) as err:
            check_address(f"127.0.0.1:{port}")
    assert time.time() - start < 6
    assert str(err.value) == (f"--address '127.0.0.1:{port}': nothing answers at 127.0.0.1:{port} within 5 s "
                              "(ConnectionRefusedError: Connection refused); start the Ray head's GCS (`ray start "
                              "--head --port`) there, or fix the address")


def test_a_wrong_address_creates_nothing_before_failing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "search.run", "--address", f"127.0.0.1:{port}", "--storage",
                               str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout.strip().startswith(f"error: --address '127.0.0.1:{port}': nothing answers")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no search folder: nothing was created


def test_placement_is_checked_against_the_nodes_and_names_the_shortfall() -> None:
    nodes = [{"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 1.0}},
             {"Alive": True, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 1.0}},
             {"Alive": False, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 64.0}}]
    check_placement(nodes, cpus_per_trial=2, gpus_per_trial=0, workers=2)  # 1 CPU per worker, one per node
    with pytest.raises(SearchError) as err:
        check_placement(nodes, cpus_per_trial=4, gpus_per_trial=0, workers=2)
    assert str(err.value) == ("a trial cannot be placed: it needs 2 workers of 2 CPU each (--workers-per-trial 2, "
                              "--cpus-per-trial 4, --gpus-per-trial 0), and the cluster's 2 nodes hold 0 "
                              "(10.0.0.1: 1 CPU, 0 GPU; 10.0.0.2: 1 CPU, 0 GPU); lower the per-trial resources or "
                              "add nodes")
    with pytest.raises(SearchError, match=r"needs 1 worker of 1 CPU \+ 1 GPU each .* hold 0"):
        check_placement(nodes, cpus_per_trial=1, gpus_per_trial=1, workers=1)
    assert Bundle(cpu=2, gpu=1).fits({"CPU": 8, "GPU": 3}) == 3 and Bundle(cpu=0.5, gpu=0).fits({"CPU": 2}) == 4


def test_the_exit_code_table_is_one_table_in_help_and_docs() -> None:
    codes = [code for code, _, _ in O.STATES.values()]
    assert len(set(codes)) == len(codes) and 1 not in codes and O.STATES["complete"][0] == 0
    assert (O.STATES["bad_input"][0], O.STATES["interrupted"][0]) == (2, 130)
    from search.cli import build_parser

    help_text = build_parser().format_help()
    docs = (ROOT / "docs" / "cluster.md").read_text()
    for line in O.exit_code_table().splitlines()[1:]:
        assert line in help_text
        code, name = line.split()[:2]
        assert f"| {code} | `{name}` |" in docs, line


def grid(*results):
    return [SimpleNamespace(metrics=m, error=e) for m, e in results]


# The last results Ray hands back (Result.metrics): `done` is Ray's flag, set when the trial's function returned or
# the scheduler stopped it; a trial a stop signal caught mid-training has no `done` (Ray still reports it TERMINATED).
DONE = ({"step": 10, "score": 0.8, "done": True}, None)
EARLY_STOPPED = ({"step": 5, "score": 0.4, "done": True}, None)
FAILED = ({"failed": 1, "step": 3, "done": True}, None)
CRASHED = ({"step": 5, "score": 0.1}, RuntimeError("x"))
CAUGHT_BY_A_SIGNAL = ({"step": 5, "score": 0.5}, None)
NEVER_REPORTED = ({}, None)
# What a restored search can read for trials that ended: Ray sets `done` in place when a function returns, and an
# experiment snapshot taken just before keeps `done: false` (seen twice in test_reliability_e2e's resume here).
RETURNED_SNAPSHOT_WITHOUT_DONE = ({"step": 10, "score": 0.8, "done": False}, None)
SKIPPED_SNAPSHOT_WITHOUT_DONE = ({"over_budget": 1, "step": 0, "done": False}, None)
FAILED_SNAPSHOT_WITHOUT_DONE = ({"failed": 1, "step": 3, "done": False}, None)


def test_the_state_of_a_search_from_its_trials() -> None:
    o = O.tally(grid(DONE, FAILED, CRASHED, EARLY_STOPPED), requested=4, max_steps=10)
    assert (o.counts, o.not_started, o.ended) == (
        {"finished": 1, "stopped": 1, "failed": 2, "skipped": 0, "interrupted": 0}, 0, 4)
    assert o.state(interrupted=False, cluster_lost=False, queued=False) == "complete"
    assert o.state(interrupted=False, cluster_lost=False, queued=True) == "tracking_queued"
    assert o.state(interrupted=True, cluster_lost=False, queued=False) == "complete"  # a signal after the end
    o = O.tally(grid(FAILED, CRASHED), requested=2, max_steps=10)
    assert o.state(False, False, False) == "no_trial_finished"
    o = O.tally(grid(DONE, CAUGHT_BY_A_SIGNAL), requested=4, max_steps=10)
    assert (o.counts["stopped"], o.interrupted, o.not_started) == (0, 1, 2)
    assert o.state(interrupted=True, cluster_lost=True, queued=True) == "interrupted"
    assert o.state(interrupted=False, cluster_lost=True, queued=False) == "cluster_lost"
    assert o.state(interrupted=False, cluster_lost=False, queued=False) == "incomplete"


def test_a_restored_trial_whose_last_report_was_terminal_has_ended_without_rays_done_flag() -> None:
    """--resume of a complete search exited 4 ("1 interrupted") when the snapshot Ray restored lacked `done`."""
    o = O.tally(grid(RETURNED_SNAPSHOT_WITHOUT_DONE, SKIPPED_SNAPSHOT_WITHOUT_DONE, FAILED_SNAPSHOT_WITHOUT_DONE,
                     CAUGHT_BY_A_SIGNAL), requested=4, max_steps=10)
    assert o.counts == {"finished": 1, "stopped": 0, "failed": 1, "skipped": 1, "interrupted": 1}
    assert O.tally(grid(RETURNED_SNAPSHOT_WITHOUT_DONE), requested=1, max_steps=10).state(
        interrupted=False, cluster_lost=False, queued=False) == "complete"


def test_a_trial_caught_by_ctrl_c_is_interrupted_not_early_stopped(tmp_path: Path) -> None:
    """Ctrl-C (or a preemption's SIGTERM) during two trials, after one was early-stopped and one finished: before,
    status.json and the last line counted the two caught trials as "stopped" (early-stopped by the scheduler)."""
    o = O.tally(grid(DONE, EARLY_STOPPED, CAUGHT_BY_A_SIGNAL, NEVER_REPORTED), requested=4, max_steps=10)
    assert o.counts == {"finished": 1, "stopped": 1, "failed": 0, "skipped": 0, "interrupted": 2}
    assert (o.ended, o.interrupted, o.state(interrupted=True, cluster_lost=False, queued=False)) == (
        2, 2, "interrupted")
    extra = {"hint": "SIGINT; rerun the same command with --resume"}
    assert O.describe(o, "interrupted", extra) == (
        "search interrupted (exit 130): 2 of 4 trials ended (1 finished, 1 stopped); 2 interrupted (resumable: "
        "--resume continues each from its last evaluation); stopped by SIGINT or SIGTERM; --resume continues it "
        "(SIGINT; rerun the same command with --resume)")
    data = O.write_status(tmp_path, "interrupted", **O.outcome_fields(o))
    assert json.loads((tmp_path / "status.json").read_text())["counts"] == data["counts"] == o.counts
    # the trial's MLflow status agrees: a trial in this state is closed as interrupted, KILLED (not FINISHED)
    from search.contract import INTERRUPTED, MLFLOW_STATUS, STOPPED

    assert (MLFLOW_STATUS[INTERRUPTED], MLFLOW_STATUS[STOPPED]) == ("KILLED", "FINISHED")


def test_status_json_is_written_whole(tmp_path: Path) -> None:
    O.write_status(tmp_path, "interrupted", name="s", requested=4, counts={"finished": 1}, signal="SIGTERM")
    data = json.loads((tmp_path / "status.json").read_text())
    assert (data["state"], data["exit_code"], data["mlflow_status"], data["signal"]) == ("interrupted", 130,
                                                                                         "KILLED", "SIGTERM")
    assert data["pid"] == os.getpid() and data["counts"] == {"finished": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # the temporary file was renamed away


def test_a_stop_signal_asks_tune_to_stop_through_sigusr1_and_a_second_one_stops_at_once() -> None:
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda *a: seen.append("usr1"))  # Ray Tune listens on SIGUSR1
    # Whatever handled SIGTERM before is restored (Ray installs its own once ray.init ran in this process)
    sigterm_before = signal.getsignal(signal.SIGTERM)
    try:
        with O.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert (stop.received, seen) == ("SIGTERM", ["usr1"])
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
        assert signal.getsignal(signal.SIGTERM) == sigterm_before
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_errors_that_will_repeat_fail_the_trial_and_others_are_retried() -> None:
    import torch

    for err in (ValueError("every example must fit max_tokens=1"), TypeError("x"), KeyError("ffn"),
                TrialFailure("loss is nan (not finite)", 3), NotImplementedError("x")):
        assert deterministic(err), err
    try:
        torch.ones(2, 3) @ torch.ones(2, 3)
    except RuntimeError as shape_error:
        assert deterministic(shape_error)
    for err in (OSError("disk"), ConnectionError("x"), MemoryError(), RuntimeError("CUDA out of memory"),
                RuntimeError("NCCL error: unhandled system error"), torch.OutOfMemoryError("x")):
        assert not deterministic(err), err
    assert failure_reason(ValueError("bad value\nmore")) == "ValueError: bad value"
    assert failure_reason(TrialFailure("loss diverged", 5)) == "loss diverged"


def test_without_address_the_search_starts_a_private_ray_and_never_joins_one_on_the_machine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 16 item 2: a cluster a `ray start` left on this machine (or RAY_ADDRESS naming it) must not be joined:
    # plain ray.init() connects to it and the search dies with someone else's cluster. address="local" always
    # starts a new instance; --address is the only way to join one.
    import search.tuner as T

    calls: list[dict] = []
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setattr(T.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(T.ray, "init", lambda **kw: calls.append(kw))
    T._init_ray(None, 2)
    T._init_ray("10.0.0.5:6379", None)
    assert [c["address"] for c in calls] == ["local", "10.0.0.5:6379"]
    assert (calls[0]["num_cpus"], calls[0]["include_dashboard"]) == (2, False)
