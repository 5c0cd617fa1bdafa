"""`petl-submit slurm` on a real two-node SLURM (munged, slurmctld, two slurmd on 127.0.0.1): the job's private Ray
cluster spans both nodes, the search ends COMPLETED with every trial finished, and nothing is left running; a job
whose Ray head is killed ends FAILED. The two jobs are queued together, so their Ray starts and searches overlap.
Uses the SLURM that `.ci/run` started (SLURM_CONF), else starts its own with `.ci/slurm_up` and ends it by PID.
Skipped only where sbatch does not exist."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.test_search_e2e import children, the_parent, write_space

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sbatch") is None, reason="no sbatch on this machine")]


def _answers(env: dict) -> bool:
    return subprocess.run(["sinfo", "-h"], capture_output=True, env=env, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def slurm_env():
    env = dict(os.environ)
    if env.get("SLURM_CONF") and _answers(env):
        yield env
        return
    folder = tempfile.mkdtemp(prefix="petl-slurm-", dir="/tmp")
    # 2 CPUs per node, as .ci/run starts it: the test's two jobs (1 CPU per node each) run at the same time
    up = subprocess.run([str(ROOT / ".ci" / "slurm_up"), folder, "2"], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        env["SLURM_CONF"] = f"{folder}/slurm.conf"
        yield env
    finally:
        subprocess.run([str(ROOT / ".ci" / "slurm_down"), folder], timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def submit(tmp_path: Path, env: dict, name: str, *search: str) -> str:
    space = write_space(tmp_path, {"lr": 3.0e-3, "max_steps": 4, "eval_every": 2})
    out = subprocess.run([sys.executable, "-m", "search.submit", "slurm", "--nodes", "2", "--node-timeout", "180",
                          "--", "--space", str(space), "--name", name, "--storage", str(tmp_path / "runs"),
                          "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--scheduler", "none", *search],
                         capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.split("submitted SLURM job ")[1].split(";")[0]


def job_field(env: dict, job: str, key: str) -> str:
    text = subprocess.run(["scontrol", "show", "job", job, "-o"], capture_output=True, text=True, env=env,
                          timeout=30).stdout
    return dict(f.split("=", 1) for f in text.split() if "=" in f).get(key, "")


def wait_state(env: dict, job: str, timeout_s: float, log: Path) -> str:
    deadline = time.time() + timeout_s
    while (state := job_field(env, job, "JobState")) in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", ""):
        if time.time() > deadline:
            subprocess.run(["scancel", job], env=env, timeout=30)
            raise AssertionError(f"job {job} still {state} after {timeout_s:g} s: "
                                 f"{log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(1.0)
    return state


def job_processes(job: str) -> list[int]:
    """PIDs on this machine that belong to the job's Ray nodes or its driver (by their command lines)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"petl-ray-{job}-" in cmd:
            pids.append(int(proc.name))
    return pids


def head_killed(env: dict, job: str, folder: Path) -> bool:
    """Once the job's search has written a trial's first resume point, SIGKILL its head node's GCS and raylet (by
    PID); True once done. Fails if the job ends (or its limit passes) before that."""
    if not list((folder / "runs" / "headless" / "trials").glob("*/resume")):
        return False
    head = f"petl-ray-{job}-0"
    for pid in job_processes(job):  # the head node's GCS and raylet, by PID
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if head in cmd and ("gcs_server" in cmd or "raylet" in cmd.split("\0")[0]):
            os.kill(pid, signal.SIGKILL)
    return True


def test_two_slurm_jobs_at_once_one_completes_every_trial_one_whose_ray_head_is_killed_ends_failed(
        tmp_path_factory: pytest.TempPathFactory, slurm_env) -> None:
    """Both jobs in the queue together (each node has 2 CPUs, each job takes 1 per node), so their Ray starts and
    searches overlap: the two-node job completes every trial and leaves nothing running; the other, whose Ray head is
    killed after its first evaluation, ends FAILED with the cluster-lost exit code."""
    done, dead = tmp_path_factory.mktemp("slurm2"), tmp_path_factory.mktemp("headless")
    job = submit(done, slurm_env, "slurm2", "--num-samples", "4", "--concurrency", "2")
    space_steps = ("--set", "max_steps=400", "--set", "eval_every=5")
    killed_job = submit(dead, slurm_env, "headless", "--num-samples", "2", "--concurrency", "2", *space_steps)
    dead_log = dead / "runs" / "slurm-logs" / f"petl-headless-{killed_job}.out"
    deadline = time.time() + 600  # queued behind the other job where a node has a single CPU
    while not head_killed(slurm_env, killed_job, dead):
        assert time.time() < deadline and job_field(slurm_env, killed_job, "JobState") in ("PENDING", "RUNNING"), \
            dead_log.read_text()[-3000:] if dead_log.exists() else "no log"
        time.sleep(0.5)
    check_completed(done, slurm_env, job)
    assert wait_state(slurm_env, killed_job, 400, dead_log) == "FAILED", dead_log.read_text()[-4000:]
    assert job_field(slurm_env, killed_job, "ExitCode") == "5:0", dead_log.read_text()[-3000:]
    status = json.loads((dead / "runs" / "headless" / "status.json").read_text())
    assert status["state"] == "cluster_lost"
    time.sleep(2)
    assert job_processes(killed_job) == []


def check_completed(tmp_path: Path, slurm_env: dict, job: str) -> None:
    """The two-node job ends COMPLETED with every trial finished, its Ray cluster spanning both nodes, and nothing of
    it left running."""
    log = tmp_path / "runs" / "slurm-logs" / f"petl-slurm2-{job}.out"
    assert wait_state(slurm_env, job, 500, log) == "COMPLETED", log.read_text()[-4000:]
    text = log.read_text()
    assert "Ray cluster at 127.0.0.1:" in text and ": 2 node(s) up" in text
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_id = the_parent(client)
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert [r.data.tags["petl.status"] for r in children(client, parent_id)] == ["finished"] * 4
    assert json.loads((tmp_path / "runs" / "slurm2" / "status.json").read_text())["state"] == "complete"
    time.sleep(2)
    assert job_processes(job) == []  # every Ray node of the job ended
    assert not list(Path("/tmp").glob(f"petl-ray-{job}-*"))  # and removed its temp dir
