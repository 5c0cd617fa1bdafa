"""A search on a real multi-node Ray cluster (ray.cluster_utils.Cluster: two nodes on 127.0.0.1, own temp dir,
explicit address), a SIGINT'd and resumed search, and a `ray job submit` against a local head with its job server.
Every process a test starts is ended by PID (never `ray stop`). Slow: tens of seconds each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.test_search_e2e import children, the_parent, write_space

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def driver(tmp_path: Path, space: Path, name: str, *extra: str) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--storage", str(tmp_path / "runs"),
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--name", name, "--scheduler", "none", *extra]
    return cmd, {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended (exit {proc.returncode}) before {what}: "
                                 f"{proc.stdout.read()[-3000:] if proc.stdout else ''}")
        if time.time() > deadline:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"timed out waiting for {what}: "
                                 f"{proc.stdout.read()[-3000:] if proc and proc.stdout else ''}")
        time.sleep(0.2)


def act_when(steps: list[tuple[Any, str, subprocess.Popen, Any]], timeout_s: float) -> None:
    """For each (predicate, what, driver, action): run `action` once `predicate` holds, polling all of them together;
    fails as `wait_for` does when a driver ends before its `what`, or the time runs out."""
    pending, deadline = list(steps), time.time() + timeout_s
    while pending:
        for step in list(pending):
            ready, what, proc, action = step
            if ready():
                action()
                pending.remove(step)
            elif proc.poll() is not None or time.time() > deadline:
                wait_for(lambda: False, 0, what, proc)  # raises, with the driver's output
        time.sleep(0.2)


def resume_points(tmp_path: Path, name: str) -> list[Path]:
    return list((tmp_path / "runs" / name / "trials").glob("*/resume"))


def steps_of(client: MlflowClient, parent_id: str) -> dict[str, list[int]]:
    return {r.data.tags["petl.trial_id"]: sorted(m.step for m in client.get_metric_history(r.info.run_id, "score"))
            for r in children(client, parent_id)}


@contextmanager
def two_node_cluster() -> Iterator[Any]:
    """Two 1-CPU Ray nodes on this machine in a private temp dir; every node's processes ended at the end. Not bound
    to 127.0.0.1: Ray rewrites a loopback address to the host's own IP when a driver connects, so a GCS listening on
    loopback only is never reached. The head's dashboard agent gets a free port, so two such clusters can run at once
    (Ray's default, 52365, would collide)."""
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="petl-rc-", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    c = Cluster()
    try:
        c.add_node(num_cpus=1, temp_dir=temp, include_dashboard=False, dashboard_agent_listen_port=free_port())
        c.add_node(num_cpus=1, temp_dir=temp)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()  # kills each node's processes by PID
        shutil.rmtree(temp, ignore_errors=True)


def start_driver(tmp_path: Path, name: str, max_steps: int, eval_every: int, *extra: str) -> subprocess.Popen:
    space = write_space(tmp_path, {"lr": 3.0e-3, "max_steps": max_steps, "eval_every": eval_every})
    cmd, env = driver(tmp_path, space, name, "--num-samples", "2", "--concurrency", "2", *extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def test_two_clusters_at_once_a_killed_worker_node_loses_no_evaluation_and_a_lost_head_ends_the_search(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two searches, each on its own two-node cluster, at the same time (their Ray starts and failure detection
    overlap): on the first, trials run on both nodes and killing the worker node loses no evaluation; on the second,
    losing the head ends the search non-zero with the parent not finished."""
    multi, headless = tmp_path_factory.mktemp("multi"), tmp_path_factory.mktemp("headless")
    with two_node_cluster() as cluster, two_node_cluster() as other:
        proc = start_driver(multi, "multi", 60, 15, "--address", cluster.address, "--max-failures", "2",
                            "--rerun-duplicates")
        lost = start_driver(headless, "headless", 400, 5, "--address", other.address)
        try:
            worker = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)
            act_when([  # whichever search gets there first: each kill comes while its trials train
                # 1 CPU per node, 1 per trial: two trials with a resume point at once means one ran on each node.
                (lambda: len(resume_points(multi, "multi")) == 2, "both trials' first evaluation", proc,
                 lambda: cluster.remove_node(worker, allow_graceful=False)),  # its raylet and workers killed
                (lambda: len(resume_points(headless, "headless")) >= 1, "a first evaluation", lost,
                 lambda: other.remove_node(other.head_node, allow_graceful=False)),  # GCS and raylet killed
            ], 240)
            lost_out, _ = lost.communicate(timeout=300)
            other.shutdown()  # its headless worker node would train on until its own GCS timeout, slowing the first
            out, _ = proc.communicate(timeout=400)
        finally:
            for p in (proc, lost):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
    check_no_evaluation_lost(multi, proc.returncode, out)
    assert lost.returncode == 5, lost_out[-4000:]  # before: 0 about a minute later, parent left RUNNING
    client = MlflowClient(tracking_uri=f"sqlite:///{headless / 'mlflow.db'}")
    parent = client.get_run(the_parent(client))
    assert parent.info.status == "FAILED" and parent.data.tags["petl.search_state"] == "cluster_lost"
    status = json.loads((headless / "runs" / "headless" / "status.json").read_text())
    assert (status["state"], status["exit_code"]) == ("cluster_lost", 5)


def check_no_evaluation_lost(tmp_path: Path, code: int, out: str) -> None:
    assert code == 0, out[-4000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_id = the_parent(client)
    runs = children(client, parent_id)
    assert sorted(r.data.tags["petl.status"] for r in runs) == ["finished", "finished"]
    # Every evaluation step present exactly once, also for the trial whose node died (retried on the head from its
    # last resume point: Ray recorded its failure).
    assert list(steps_of(client, parent_id).values()) == [[15, 30, 45, 60]] * 2
    assert len(list((tmp_path / "runs" / "multi").glob("*/error.txt"))) == 1, out[-3000:]
    assert json.loads((tmp_path / "runs" / "multi" / "status.json").read_text())["state"] == "complete"


def test_sigint_stops_with_130_an_interrupted_parent_and_resume_loses_no_evaluation(tmp_path: Path) -> None:
    space = write_space(tmp_path, {"lr": 3.0e-3, "max_steps": 30, "eval_every": 5})
    cmd, env = driver(tmp_path, space, "sigint", "--num-samples", "2", "--concurrency", "2", "--rerun-duplicates")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        wait_for(lambda: len(resume_points(tmp_path, "sigint")) >= 1, 240, "a first evaluation", proc)
        os.kill(proc.pid, signal.SIGINT)  # the driver only, as SLURM's --signal=INT or a Ctrl-C would
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-4000:]  # before: 0, parent FINISHED, "their slots were run again"
    assert "slots were run again" not in out
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_id = the_parent(client)
    parent = client.get_run(parent_id)
    assert parent.info.status == "KILLED" and parent.data.tags["petl.search_state"] == "interrupted"
    status = json.loads((tmp_path / "runs" / "sigint" / "status.json").read_text())
    assert (status["state"], status["exit_code"], status["signal"]) == ("interrupted", 130, "SIGINT")
    # Both trials were caught mid-training: interrupted (resumable), not "stopped" (early-stopped), in status.json,
    # in the last line and in MLflow alike (before: 2 stopped in status.json, 2 interrupted in MLflow)
    assert status["counts"] == {"finished": 0, "stopped": 0, "failed": 0, "skipped": 0, "interrupted": 2}, out[-3000:]
    assert "0 of 2 trials ended (none); 2 interrupted (resumable" in out
    assert sorted((r.data.tags["petl.status"], r.info.status) for r in children(client, parent_id)) == [
        ("interrupted", "KILLED")] * 2
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert list(steps_of(client, parent_id).values()) == [[5, 10, 15, 20, 25, 30]] * 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_job_submitted_to_a_local_head_completes_and_its_results_outlive_the_job(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp_cors", reason="the job server needs ray[default] (petl-search[cluster])")
    temp = tempfile.mkdtemp(prefix="petl-rj-", dir="/tmp")
    gcs, dash, client_port = free_port(), free_port(), free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", "--disable-usage-stats", f"--temp-dir={temp}",
                             f"--port={gcs}", "--num-cpus=2",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                             f"--ray-client-server-port={client_port}",
                             f"--dashboard-agent-listen-port={free_port()}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled",  # the job is over when it stops:
                                 "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})  # nothing to drain, no 30 s wait
    try:
        space = write_space(tmp_path, {"lr": 3.0e-3, "max_steps": 4, "eval_every": 2})
        argv = ["ray-job", "--address", f"http://127.0.0.1:{dash}", "--python", sys.executable, "--follow", "--",
                "--space", str(space), "--name", "rj", "--storage", str(tmp_path / "runs"), "--tracking-uri",
                f"sqlite:///{tmp_path / 'mlflow.db'}", "--num-samples", "2", "--scheduler", "none",
                "--concurrency", "2"]
        from search.cluster import reachable

        wait_for(lambda: reachable("127.0.0.1", dash, 1.0) is None, 120, "the job server")
        proc = subprocess.run([sys.executable, "-m", "search.submit", *argv], capture_output=True, text=True,
                              cwd=tmp_path, timeout=500, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
        assert "Ray job rj: SUCCEEDED (exit 0)" in proc.stdout
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` ends the node it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    # The job's working dir is gone with the job; the search's folder and tracking store are where we said.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_id = the_parent(client)
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert sorted(r.data.tags["petl.status"] for r in children(client, parent_id)) == ["finished", "finished"]
    assert json.loads((tmp_path / "runs" / "rj" / "status.json").read_text())["state"] == "complete"
