"""Whole searches under the failures users meet (issue 12): a tracking server that goes away for a minute mid-search,
two searches started together in one fresh folder whose path and names hold quotes, and the local Ray instance's
authentication. Real `search/run.py` processes, real Ray, real MLflow (a SQLite store, or a real `mlflow server`);
slow. What each guarantees is written up in docs/reliability.md."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from analysis.mlflow_filter import runs_where

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def write_space(folder: Path, max_steps: int, eval_every: int) -> Path:
    data = {"task": "toy-cls", "model": "minilm",
            "sites": {"ffn": {"form": ["relu", "identity"], "size": [2, 4, 8, 16], "composition": "scaled",
                              "scale": 2.0, "init": "lora"}},
            "train": {"max_steps": max_steps, "eval_every": eval_every, "batch_size": 16, "eval_cap": 32,
                      "max_length": 32, "lr": {"low": 1e-3, "high": 1e-2, "log": True}}}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def product_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives the CLI: none of the test suite's Ray settings (auth stays on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def search_cmd(space: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(space), "--scheduler", "none", *args]


def children(client: MlflowClient, parent_id: str) -> dict[str, object]:
    exp = client.get_run(parent_id).info.experiment_id
    return {r.data.tags["petl.trial_id"]: r for r in runs_where(client, [exp], {"mlflow.parentRunId": parent_id})}


def parents(client: MlflowClient) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return runs_where(client, exps, {"petl.role": "search"})


# -- a tracking server outage of a minute, mid-search ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
           f"sqlite:///{folder / 'server.db'}", "--default-artifact-root", str(folder / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "ab"),
                            start_new_session=True)


def wait_healthy(port: int, server: subprocess.Popen, limit_s: float = 300) -> float:
    """Poll the server's /health until it answers OK (a generous limit: a loaded 2-core machine is slow to start it)."""
    t0 = time.time()
    while time.time() - t0 < limit_s:
        assert server.poll() is None, "the mlflow server exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                if answer.status == 200:
                    return time.time() - t0
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server on port {port} not healthy after {limit_s} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_tracking_server_outage_of_a_minute_mid_search_loses_nothing(tmp_path: Path) -> None:
    port, outage_s = free_port(), 60.0
    server = start_server(tmp_path, port)
    driver = None
    try:
        wait_healthy(port, server)
        space = write_space(tmp_path, max_steps=12, eval_every=4)
        uri = f"http://127.0.0.1:{port}"
        driver = subprocess.Popen(search_cmd(space, "--num-samples", "4", "--concurrency", "1", "--tracking-uri",
                                             uri, "--storage", str(tmp_path / "runs"), "--name", "blip",
                                             "--rerun-duplicates"),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=product_env(),
                                  start_new_session=True)
        seen = []
        for line in driver.stdout:  # the first trial is recorded: take the server away for a minute
            seen.append(line)
            if line.startswith("[1/4]"):
                break
        assert any(line.startswith("[1/4]") for line in seen), "".join(seen[-40:])
        stop(server)
        gone = time.time()
        while time.time() - gone < outage_s and driver.poll() is None:
            time.sleep(1)  # the outage itself lasts a fixed minute; the driver keeps training meanwhile
        assert driver.poll() is None, "the driver died during the outage:\n" + "".join(seen[-40:])
        server = start_server(tmp_path, port)
        wait_healthy(port, server)
        rest, _ = driver.communicate(timeout=900)
        out = "".join(seen) + rest
        assert driver.returncode == 0, out[-4000:]
        assert "unreachable" in out and "is back after" in out, out[-4000:]
        client = MlflowClient(tracking_uri=uri)
        (parent,) = parents(client)
        assert parent.info.status == "RUNNING" or client.get_run(parent.info.run_id).info.status == "FINISHED"
        runs = children(client, parent.info.run_id)
        assert len(runs) == 4  # none lost: also the trials that started while the server was away
        for run in runs.values():
            assert run.data.tags["petl.status"] == "finished" and run.info.status == "FINISHED"
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "score")]
            assert steps == [4, 8, 12], steps  # every evaluation, once
        assert not (tmp_path / "runs" / "blip" / "tracking_outbox.json").exists()
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        stop(server)


# -- two searches at once in one fresh folder, quotes in every user-given name and path ---------------------------

def test_two_searches_started_together_in_a_fresh_folder_both_finish_and_resume_despite_quotes(
        tmp_path: Path) -> None:
    folder = tmp_path / "o'neil"  # the cwd (a home folder): the default SQLite store and storage folder land here
    folder.mkdir()
    space = write_space(folder, max_steps=4, eval_every=2)
    names = ["it's", 'say "hi"']
    procs = [subprocess.Popen(search_cmd(space, "--num-samples", "1", "--name", name, "--experiment", f"exp {name}"),
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=product_env(), start_new_session=True) for name in names]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    resumed = subprocess.run(search_cmd(space, "--num-samples", "1", "--name", names[0], "--experiment",
                                        f"exp {names[0]}", "--resume"),
                             cwd=folder, capture_output=True, text=True, env=product_env(), timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    found = {p.data.tags["petl.search_dir"]: p for p in parents(client)}
    assert sorted(found) == sorted(str(folder / "petl_runs" / n) for n in names)  # the resume made no new parent
    for parent in found.values():
        (child,) = children(client, parent.info.run_id).values()
        assert child.data.tags["petl.status"] == "finished"
        assert client.get_run(parent.info.run_id).info.status == "FINISHED"


# -- the local Ray instance keeps authentication on --------------------------------------------------------------

RAY_HOST = """
import sys
from search.cli import private_ray_token
private_ray_token()
from search.tuner import _init_ray
import os, ray
_init_ray(None, 1)
print(ray.get_runtime_context().gcs_address, os.environ["RAY_AUTH_TOKEN"], flush=True)
sys.stdin.read()  # hold the instance until the test closes stdin
ray.shutdown()
"""
CLIENT = "import ray; ray.init(address={!r}); print('CONNECTED', flush=True); ray.shutdown()"


def test_the_local_ray_instance_refuses_a_client_without_its_token(tmp_path: Path) -> None:
    # Ray binds its servers to every interface; before, the CLI set RAY_AUTH_MODE=disabled for local instances.
    host = subprocess.Popen([sys.executable, "-c", RAY_HOST], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=product_env(HOME=str(tmp_path)), start_new_session=True)
    try:
        gcs, token = host.stdout.readline().split()
        assert len(token) == 64
        outsider = {**product_env(HOME=str(tmp_path / "elsewhere")), "RAY_AUTH_MODE": "disabled"}
        refused = subprocess.run([sys.executable, "-c", CLIENT.format(gcs)], env=outsider, capture_output=True,
                                 text=True, timeout=300)
        assert refused.returncode != 0 and "CONNECTED" not in refused.stdout
        assert "InvalidAuthToken: Authentication token is missing or incorrect" in refused.stderr
        insider = {**outsider, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        allowed = subprocess.run([sys.executable, "-c", CLIENT.format(gcs)], env=insider, capture_output=True,
                                 text=True, timeout=300)
        assert "CONNECTED" in allowed.stdout, allowed.stderr[-2000:]
        assert not (tmp_path / ".ray").exists()  # the token was never written to the user's home
    finally:
        host.stdin.close()
        try:
            host.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()
