"""The MLflow tracking store of a search, before and after Ray: probed (and a fresh SQLite store created once,
whole, under a file lock, so searches started together in one folder cannot break it) before anything starts; the
search's experiment and parent run, found again on `--resume`; children a killed driver left running closed as
`interrupted` at the end. The per-trial records are written by `search.tracking.MlflowSearchCallback`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from analysis.mlflow_filter import runs_where
from search import contract as C
from search.outbox import http_policy

PARENT_KEY = C.SEARCH_DIR_TAG  # the parent run is found again by its search folder


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


class UnusableStore(ValueError):
    """A tracking store that cannot be created here, for a reason the message names in full."""


def create_store(uri: str) -> None:
    """Create a SQLite store that does not exist yet, whole: under a file lock, in a temporary file renamed into place.

    MLflow builds its schema on first use through a chain of migrations; two searches starting together in one
    folder ran them at once on one file (`duplicate column name`, `_alembic_tmp_* already exists`) and could leave it
    broken for good. Here a store file either does not exist or holds a complete schema. Other URIs: nothing to do.
    """
    path = _sqlite_path(uri)
    if path is None or path.exists():
        return
    artifacts = Path.cwd() / "mlruns"  # MLflow's default artifact root for a SQLite store
    if "'" in str(artifacts) and '"' in str(artifacts):
        raise UnusableStore(f"MLflow cannot create a SQLite store from a folder whose path holds both ' and \" (it "
                            f"writes the default artifact path {str(artifacts)!r} into raw SQL); start the search "
                            "from another folder, or pass --tracking-uri of an existing store or server")

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.exists():  # another search created it while we waited
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def check_tracking(uri: str) -> MlflowClient:
    """Fail fast (seconds, not after an hour of training) with one line when the tracking store cannot be used."""
    try:
        with http_policy(retries=0, timeout_s=10):
            create_store(uri)
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except UnusableStore:
        raise
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the user
        fix = ("the file is not a usable MLflow store: move it aside (a new one is created) or pass --tracking-uri"
               if _sqlite_path(uri) else "start the server or pass --tracking-uri")
        raise ValueError(f"cannot reach the MLflow tracking store at {uri!r} ({type(err).__name__}: "
                         f"{str(err).strip().splitlines()[0][:200]}); {fix}") from None
    return client


def code_version() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        return sha or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def search_experiment(client: MlflowClient, experiment: str) -> str:
    """The experiment's id, created if missing; marked as model development (`C.EXPERIMENT_KIND`) unless it already
    has a kind, so MLflow 3 opens it on its runs instead of the GenAI traces overview."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client.create_experiment(experiment, tags={C.EXPERIMENT_KIND_TAG: C.EXPERIMENT_KIND})
    if C.EXPERIMENT_KIND_TAG not in exp.tags:  # a kind a user chose stays
        client.set_experiment_tag(exp.experiment_id, C.EXPERIMENT_KIND_TAG, C.EXPERIMENT_KIND)
    return exp.experiment_id


def parent_run(client: MlflowClient, experiment: str, search_dir: str, params: Mapping[str, Any],
               artifacts: Mapping[str, str], resume: bool, description: str = "") -> str:
    """The search's parent run: found again on resume (by its search folder), created otherwise. `description`
    (the space's) becomes the run's MLflow description."""
    exp_id = search_experiment(client, experiment)
    if resume:
        found = runs_where(client, [exp_id], {C.ROLE_TAG: C.ROLE_SEARCH, PARENT_KEY: search_dir})
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
    tags = C.parent_tags(search_dir, code_version())
    if description.strip():
        tags[C.NOTE_TAG] = description.strip()
    run = client.create_run(exp_id, run_name=Path(search_dir).name, tags=tags)
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    for name, text in artifacts.items():
        client.log_text(run_id, text, name)
    return run_id


def close_interrupted(client: Any, parent_id: str) -> list[str]:
    """At the end of a search no trial runs: close children still marked running, as `interrupted`.

    They are trials a killed driver had started (and opened a child run for) in the second before Ray's
    experiment state was saved, so `--resume` does not know them and runs their slot again under a new id.
    Their partial steps are lost; left RUNNING they would look alive forever.
    """
    parent = client.get_run(parent_id)
    runs = runs_where(client, [parent.info.experiment_id], {C.PARENT_RUN_TAG: parent_id}, status="RUNNING")
    for run in runs:
        client.set_tag(run.info.run_id, C.STATUS_TAG, C.INTERRUPTED)
        client.set_terminated(run.info.run_id, C.MLFLOW_STATUS[C.INTERRUPTED])
    # By the name users see (`t003 lora_attn`); a run from before trial numbers by its Ray trial id.
    return [r.info.run_name if C.TRIAL_NUMBER_TAG in r.data.tags else r.data.tags.get(C.TRIAL_ID_TAG, r.info.run_id)
            for r in runs]
