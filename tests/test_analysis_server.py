"""End to end against a real `mlflow server`: fabricate over HTTP, report, then check through the REST API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from mlflow import MlflowClient

from analysis.report import main
from analysis.synthetic import fabricate_search

STATUSES = ["finished", "finished", "finished", "stopped", "failed", "finished", "stopped", "finished"]
HEALTH_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
           "--default-artifact-root", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    # Own process group: uvicorn and the job runner are children; killing the group leaves nothing behind.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited early:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {HEALTH_TIMEOUT_S} s")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def _get(url: str, endpoint: str, **query: str) -> dict:
    with urllib.request.urlopen(f"{url}{endpoint}?{urllib.parse.urlencode(query)}", timeout=10) as r:
        return json.load(r)


def _post(url: str, endpoint: str, body: dict) -> dict:
    req = urllib.request.Request(f"{url}{endpoint}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.mark.slow
def test_report_against_real_server(mlflow_server: str, tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=mlflow_server)
    s = fabricate_search(client, "petl-server", len(STATUSES), seed=4, statuses=STATUSES)
    out = tmp_path / "report"
    assert main(["--experiment", "petl-server", "--tracking-uri", mlflow_server, "--out", str(out)]) == 0

    files = _get(mlflow_server, "/api/2.0/mlflow/artifacts/list", run_id=s.parent_run_id, path="analysis")["files"]
    sizes = {Path(f["path"]).name: int(f.get("file_size", 0)) for f in files}
    for name in ("front.png", "front.html", "importance.png", "trials.csv", "summary.md"):
        assert sizes.get(name, 0) > 0, (name, sizes)

    hist = _get(mlflow_server, "/api/2.0/mlflow/metrics/get-history", run_id=s.parent_run_id,
                metric_key="hypervolume")["metrics"]
    assert sorted(int(m.get("step", 0)) for m in hist) == list(range(len(STATUSES)))
    values = [m["value"] for m in sorted(hist, key=lambda m: int(m.get("step", 0)))]
    assert values == sorted(values) and values[-1] > 0

    runs = _post(mlflow_server, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [s.experiment_id], "filter": f"tags.mlflow.parentRunId = '{s.parent_run_id}'",
        "max_results": 100,
    })["runs"]
    assert len(runs) == len(STATUSES)
    tagged = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        tagged[run["info"]["run_id"]] = (tags["petl.status"], tags.get("petl.pareto"))
    assert all(p in {"true", "false"} for _, p in tagged.values())
    assert any(p == "true" for _, p in tagged.values())
    assert all(p == "false" for st, p in tagged.values() if st != "finished")
