"""Load one search (a parent MLflow run and its trial children) into a pandas DataFrame.

Reads what the search writes, by the names of ``search/contract.py`` (the one definition tracking writes by): the
parent tagged ``petl.role=search`` with the task's reference score; children with their status, fidelity, preset,
failure and reuse tags, the design as flat dotted params, ``train.*`` settings (the replicate seed ``train.seed``
included) and the ``score``/``fraction``/``params.trainable``/``params.stored`` metrics. Each row also gets its
``design_key`` (replicate seeds of one design share it), ``family`` and ``seed``, computed from its params.

Only ``search_runs`` pages are fetched (1000 runs each): a run's ``data.metrics`` already holds the latest
value of each metric, so per-run metric histories are never requested and 1,000+ trials load in seconds.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException

from analysis.design import BASE_COLUMNS, DESIGN_LINE_SEPARATOR, SITE_NAMES
from analysis.mlflow_filter import PAGE_SIZE, tag_filter
from finetune.spans import timed
from search import contract as C

_PANDAS3 = int(pd.__version__.split(".")[0]) >= 3
_INT_RE = re.compile(r"^[+-]?\d+$")
# Values that mean "not set" when deciding whether a param column is numeric (str(None) from Python).
_NULL_STRINGS = frozenset({"None", "nan", "NaN", ""})
SQLITE = "sqlite:///"


class TrackingUnreachableError(ConnectionError):
    """The tracking URI could not be queried at all (server down, wrong URI, unreadable database)."""


class SearchNotFoundError(LookupError):
    """The experiment, the parent run or a search parent inside the experiment does not exist."""


def _client_uri(client: MlflowClient) -> str:
    return str(client.tracking_uri)  # a public attribute of MlflowClient (MLflow 3.17), never its private client


def make_client(tracking_uri: str | None = None) -> MlflowClient:
    """MlflowClient for ``tracking_uri`` (default: $MLFLOW_TRACKING_URI, else MLflow's sqlite:///mlflow.db); a URI that
    cannot be opened (bad sqlite path) is "unreachable", and so is a SQLite file that does not exist: MLflow would
    create an empty store there and answer "unknown experiment" (a report run from another folder than the search)."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith(SQLITE) and uri[len(SQLITE):] != ":memory:" and not Path(uri[len(SQLITE):]).is_file():
        raise TrackingUnreachableError(
            f"No MLflow store at {uri!r} (no such file). A search writes "
            "sqlite:///mlflow.db in the folder it ran from unless given --tracking-uri: run from that folder, or pass "
            "the search's --tracking-uri.")
    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as exc:  # noqa: BLE001 - the store constructor raises many kinds of errors
        raise TrackingUnreachableError(
            f"Cannot open the MLflow tracking store at {tracking_uri!r} ({type(exc).__name__}: {str(exc)[:300]}). "
            "Check the URI, or pass the right --tracking-uri."
        ) from exc


def _probe(client: MlflowClient) -> list[str]:
    """First contact with the store; any failure here means the store itself is unreachable.

    Doing it with a call that takes no user input keeps "cannot connect" separate from "not found".
    Returns up to 11 experiment names for the not-found message.
    """
    uri = _client_uri(client)
    try:
        return [e.name for e in client.search_experiments(max_results=11)]
    except Exception as exc:  # noqa: BLE001 - requests, sqlalchemy and MlflowException all mean "unreachable" here
        raise TrackingUnreachableError(
            f"Cannot reach the MLflow tracking store at {uri!r} ({type(exc).__name__}: {str(exc)[:300]}). "
            "Check that the MLflow server is running and reachable, or pass the right --tracking-uri."
        ) from exc


def _experiment_id(client: MlflowClient, experiment: str, names: list[str]) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None and experiment.isdigit():  # allow an experiment id as well as a name
        try:
            exp = client.get_experiment(experiment)
        except MlflowException:
            exp = None
    if exp is None:
        shown = ", ".join(repr(n) for n in names[:10]) or "none"
        more = " (and more)" if len(names) > 10 else ""
        raise SearchNotFoundError(
            f"Unknown experiment {experiment!r} at tracking URI {_client_uri(client)!r}. "
            f"Existing experiments: {shown}{more}."
        )
    return str(exp.experiment_id)


def _find_parent(client: MlflowClient, experiment: str | None, parent_run_id: str | None, names: list[str]) -> Run:
    if parent_run_id:
        try:
            parent = client.get_run(parent_run_id)
        except MlflowException as exc:
            raise SearchNotFoundError(f"No MLflow run with id {parent_run_id!r} at {_client_uri(client)!r}.") from exc
        role = parent.data.tags.get(C.ROLE_TAG)
        if role != C.ROLE_SEARCH:
            raise SearchNotFoundError(
                f"Run {parent_run_id!r} is not a search parent (tag {C.ROLE_TAG}={role!r}, expected 'search')."
            )
        return parent
    if not experiment:
        raise ValueError("Give an experiment name or a parent run id to load a search.")
    exp_id = _experiment_id(client, experiment, names)
    # Newest search wins when one experiment holds several searches (re-runs, resumed studies).
    found = client.search_runs(
        [exp_id], filter_string=tag_filter({C.ROLE_TAG: C.ROLE_SEARCH}), run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1, order_by=["attributes.start_time DESC"],
    )
    if not found:
        raise SearchNotFoundError(
            f"No search parent run (tag {C.ROLE_TAG}='search') in experiment {experiment!r}; "
            "was the search started with MLflow logging enabled?"
        )
    return found[0]


def _child_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=tag_filter({C.PARENT_RUN_TAG: parent_id}),
            run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE_SIZE, page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(float(v)) if v is not None else None
    except ValueError:
        return None


def _row(run: Run) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    status = tags.get(C.STATUS_TAG) or C.STATUS_FROM_MLFLOW.get(run.info.status, C.RUNNING)
    number = tags.get(C.TRIAL_NUMBER_TAG)
    row: dict[str, Any] = {
        # the one id users see (console, run name, summary.md); runs from before trial numbers show their run name
        "trial": C.trial_label(int(number)) if number and number.isdigit() else run.info.run_name or run.info.run_id,
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": status,
        "fidelity": _int_or_none(tags.get(C.FIDELITY_TAG)),
        "max_fidelity": _int_or_none(tags.get(C.MAX_FIDELITY_TAG)),
        # The front is built on the selected checkpoint's score (the run's select_metric / select_mode, as the paper
        # reported); `last_score` is the score at the trial's last step. Runs from before selection have only score.
        "score": metrics.get(C.OBJECTIVE, metrics.get(C.SCORE, math.nan)),
        "last_score": metrics.get(C.SCORE, math.nan),
        "fraction": metrics.get(C.FRACTION, math.nan),
        "params.trainable": metrics.get(C.PARAMS_TRAINABLE),
        "params.stored": metrics.get(C.PARAMS_STORED),
        "preset": tags.get(C.PRESET_TAG),
        "failure": tags.get(C.FAILURE_TAG),
        "pareto_tag": tags.get(C.PARETO_TAG),
        "reused_from": tags.get(C.REUSED_TAG),
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "family": tags.get(C.FAMILY_TAG),
    }
    row.update(run.data.params)
    return row


def _coerce(col: pd.Series) -> pd.Series:
    """MLflow params are strings; turn numeric-looking and true/false columns back into numbers/booleans."""
    vals = col.dropna().astype(str)
    real = vals[~vals.isin(_NULL_STRINGS)]
    if real.empty:
        return col
    lowered = real.str.lower()
    if lowered.isin(("true", "false")).all():
        return col.map(lambda v: None if v is None or str(v) in _NULL_STRINGS else str(v).lower() == "true").astype(
            "boolean"
        )
    numeric = pd.to_numeric(real, errors="coerce")
    if numeric.notna().all() and np.isfinite(numeric.to_numpy(dtype=float)).all():
        full = pd.to_numeric(col.where(~col.astype(str).isin(_NULL_STRINGS)), errors="coerce")
        if real.str.match(_INT_RE).all():
            return full.astype("Int64")
        return full.astype("float64")
    return col


def _strings(col: pd.Series) -> pd.Series:
    """Text column with missing values as NaN/None; astype(str) would turn them into 'None' on pandas 2."""
    vals = [v if isinstance(v, str) else None for v in col]
    return pd.Series(vals, index=col.index, dtype="str" if _PANDAS3 else object)


def _column_order(params: list[str]) -> list[str]:
    """Design params grouped by site in paper order, then the rest, then train.* last."""
    site_rank = {s: i for i, s in enumerate(SITE_NAMES)}

    def key(c: str) -> tuple[int, int, str]:
        head = c.split(".", 1)[0]
        if c.startswith(C.TRAIN_PREFIX):
            return (2, 0, c)
        return (0, site_rank[head], c) if head in site_rank else (1, 0, c)

    return sorted(params, key=key)


def _add_identity(df: pd.DataFrame, params: list[str]) -> None:
    """Columns computed from a row's params: design_key (replicates share it), family, the design's own description
    (its lines joined by "; "), seed."""
    records = df[params].to_dict("records") if len(df) else []
    df["design_key"] = [C.design_key(r) for r in records]
    designs = [C.design_from_params(r) for r in records]
    tagged = df["family"] if "family" in df else pd.Series([None] * len(df), index=df.index)
    df["family"] = [d.family() if d is not None else t if isinstance(t, str) else None
                    for t, d in zip(tagged, designs)]
    df["design"] = [DESIGN_LINE_SEPARATOR.join(d.describe().splitlines()) if d is not None else None
                    for d in designs]  # parsed once here: describing a row again costs ~1 ms
    df["seed"] = pd.to_numeric(df[C.SEED_PARAM], errors="coerce") if C.SEED_PARAM in df else np.nan


def runs_to_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per trial run with the fixed columns of ``BASE_COLUMNS`` then every param column."""
    rows = [_row(r) for r in runs if r.data.tags.get(C.ROLE_TAG, C.ROLE_TRIAL) == C.ROLE_TRIAL]
    df = pd.DataFrame.from_records(rows)
    if df.empty:
        df = pd.DataFrame(columns=[c for c in BASE_COLUMNS])
    params = _column_order([c for c in df.columns if c not in BASE_COLUMNS])
    for c in params:
        df[c] = _coerce(df[c])
    for c in ("fidelity", "max_fidelity", "params.trainable", "params.stored", "start_time", "end_time"):
        df[c] = pd.to_numeric(df[c], errors="coerce").round().astype("Int64")
    for c in ("score", "last_score", "fraction"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    _add_identity(df, params)
    for c in ("trial", "run_id", "run_name", "status", "preset", "failure", "pareto_tag", "design_key", "family",
              "design"):
        df[c] = _strings(df[c])
    # No max_fidelity tag -> fidelity cannot be judged; a finished trial then counts as full fidelity.
    reached = (df["fidelity"] >= df["max_fidelity"]).fillna(df["max_fidelity"].isna())
    df["full_fidelity"] = ((df["status"] == C.FINISHED) & reached).astype(bool)
    df = df[list(BASE_COLUMNS) + params]
    return df.sort_values(["start_time", "run_id"], kind="stable").reset_index(drop=True)


@timed("report.load")
def load_search(
    experiment: str | None = None,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    *,
    client: MlflowClient | None = None,
) -> pd.DataFrame:
    """Load the trials of one search: one row per trial, design params as dotted columns.

    Picks the newest search parent in ``experiment`` unless ``parent_run_id`` is given. The frame's
    ``attrs`` carry ``parent_run_id``, ``experiment_id``, ``experiment``, ``tracking_uri``, ``reference`` (the
    hypervolume reference score and its basis, ``search_reference``) and ``metric`` (the task metric's name).
    Raises TrackingUnreachableError (store unreachable) or SearchNotFoundError (unknown experiment/parent).
    """
    client = client or make_client(tracking_uri)
    names = _probe(client)
    parent = _find_parent(client, experiment, parent_run_id, names)
    exp_id = parent.info.experiment_id
    df = runs_to_frame(_child_runs(client, exp_id, parent.info.run_id))
    df.attrs.update(
        parent_run_id=parent.info.run_id,
        experiment_id=exp_id,
        experiment=experiment or client.get_experiment(exp_id).name,
        tracking_uri=_client_uri(client),
        reference=search_reference(parent),
        metric=parent.data.tags.get(C.METRIC_TAG),
    )
    return df


def search_reference(parent: Run) -> C.Reference:
    """The hypervolume reference score a search recorded; for older searches, its task's chance score (or 0)."""
    tags, params = parent.data.tags, parent.data.params
    try:
        return C.Reference(float(tags[C.REFERENCE_SCORE_TAG]), tags.get(C.REFERENCE_BASIS_TAG, "recorded"))
    except (KeyError, ValueError):
        pass
    task = params.get(C.TASK_PARAM)
    try:
        ref = C.task_reference(task) if task else None
    except ValueError:  # a task this version does not know
        ref = None
    if ref is None:
        return C.Reference(0.0, "0: the search recorded no task")
    return C.Reference(ref.score, f"{ref.basis}; the search recorded no reference")
