"""MLflow records of a search: one parent run per search, one nested child run per trial, written from the driver.

Logging from the driver (a Ray Tune callback) means workers never need to reach the tracking server, and one place
decides each trial's final status: finished, stopped early at step N, failed with its reason, or skipped (over the
parameter budget). Child runs are keyed by Ray's trial id, so a resumed search continues its runs instead of
duplicating them. After every completed trial the parent's Pareto plots and hypervolume history are refreshed.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from search import contract as C
from search.searcher import outcome
from trainables.design import DesignPoint

PARENT_KEY = C.SEARCH_DIR_TAG


def check_tracking(uri: str) -> MlflowClient:
    """Fail fast (seconds, not after an hour of training) when the tracking store cannot be reached."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the user
        raise ValueError(f"cannot reach the MLflow tracking store at {uri!r} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); start the server or pass --tracking-uri") from None
    return client


def code_version() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        return sha or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parent_run(client: MlflowClient, experiment: str, search_dir: str, params: Mapping[str, Any],
               artifacts: Mapping[str, str], resume: bool) -> str:
    """The search's parent run: found again on resume (by its search folder), created otherwise."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    if resume:
        found = client.search_runs([exp_id], f"tags.`{PARENT_KEY}` = '{search_dir}'", max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
    run = client.create_run(exp_id, run_name=Path(search_dir).name, tags=C.parent_tags(search_dir, code_version()))
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    for name, text in artifacts.items():
        client.log_text(run_id, text, name)
    return run_id


def _error_reason(trial: Any) -> str:
    """The exception's last line (e.g. `ValueError: batch_size must be >= 1, got 0`), from Ray's error record."""
    text = ""
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            text = Path(path).read_text(errors="replace")
        else:
            err = trial.get_pickled_error() or trial.get_error()
            text = str(getattr(err, "cause", None) or err or "")
    except Exception:  # noqa: BLE001 - a missing error record must not break the search
        pass
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"the trial raised; see {getattr(trial, 'error_file', None) or 'its error file'}"


class MlflowSearchCallback(Callback):
    def __init__(self, tracking_uri: str, parent_id: str, max_steps: int, report_dir: str,
                 refresh_every_s: float = 0.0, num_samples: int = 0) -> None:
        self.tracking_uri, self.parent_id, self.max_steps = tracking_uri, parent_id, max_steps
        self.num_samples = num_samples
        self._front: list[tuple[float, float]] = []
        self.report_dir, self.refresh_every_s = report_dir, refresh_every_s
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._last: dict[str, dict] = {}
        self._refreshed = 0.0
        self._running: set[str] = set()
        self.counts = {C.FINISHED: 0, C.STOPPED: 0, C.FAILED: 0, C.SKIPPED: 0}

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment state
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _run_for(self, trial: Any) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        parent = self.client.get_run(self.parent_id)
        found = self.client.search_runs(
            [parent.info.experiment_id],
            f"tags.`{C.PARENT_RUN_TAG}` = '{self.parent_id}' and tags.`{C.TRIAL_ID_TAG}` = '{trial.trial_id}'")
        if found:
            self._runs[trial.trial_id] = found[0].info.run_id
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        cfg = trial.config
        design = DesignPoint.from_dict(cfg["design"])
        tags = C.trial_tags(parent_id=self.parent_id, trial_id=trial.trial_id, max_steps=self.max_steps, design=design,
                            preset=cfg.get("preset"), replicate=cfg.get("replicate"))
        run = self.client.create_run(parent.info.experiment_id, run_name=trial.trial_id, tags=tags)
        run_id = self._runs[trial.trial_id] = run.info.run_id
        now, params = int(time.time() * 1000), C.trial_params(design, cfg.get("train", {}))
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()], metrics=[
            Metric(k, v, now, 0) for k, v in C.count_metrics(cfg["fraction"], cfg.get("counts", {})).items()])
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_for(trial)
        self._running.add(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._last[trial.trial_id] = result
        if C.SCORE not in result:
            return
        now, step = int(time.time() * 1000), int(result["step"])
        metrics = [Metric(k, v, now, step) for k, v in C.step_metrics(result).items()]
        self.client.log_batch(self._run_for(trial), metrics=metrics)

    def _finish(self, trial: Any, state: str, result: Mapping[str, Any] | None, reason: str | None) -> None:
        run_id = self._run_for(trial)
        fidelity = int((result or {}).get("step", 0))
        # reused_from: an identical config's result, not trained again
        tags = C.final_tags(state, fidelity, reason, (result or {}).get("reused_from"))
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, C.MLFLOW_STATUS[state])  # before the report: it orders trials by end time
        self.counts[state] += 1
        self._running.discard(trial.trial_id)
        if state == C.FINISHED and result is not None:
            self._front.append((float(result["score"]), float(trial.config["fraction"])))
        self._refresh()
        self._progress(trial, state, result)

    def _progress(self, trial: Any, state: str, result: Mapping[str, Any] | None) -> None:
        import numpy as np

        from analysis.pareto import pareto_mask

        done = sum(self.counts.values())
        line = (f"[{done}/{self.num_samples}] {trial.trial_id} {state}"
                + (f" score {result['score']:.4f}" if state == "finished" and result else "")
                + (f" (reused from {result['reused_from']})" if result and result.get("reused_from") else "")
                + f" @ {100 * float(trial.config['fraction']):.3f}% | {len(self._running)} running, "
                + ", ".join(f"{v} {k}" for k, v in self.counts.items() if v))
        if self._front:
            scores, fractions = np.array(self._front).T
            best = scores.max()
            line += f" | front: {int(pareto_mask(scores, fractions).sum())} designs, best score {best:.4f}"
        print(line, flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = self._last.get(trial.trial_id) or trial.last_result
        state = outcome(result, self.max_steps)
        self._finish(trial, state, result, (result or {}).get("failure") or
                     ("over the parameter budget" if state == "skipped" else None))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", self._last.get(trial.trial_id), _error_reason(trial))

    def _refresh(self) -> None:
        if time.time() - self._refreshed < self.refresh_every_s:
            return
        from analysis.report import update_search_report

        try:
            update_search_report(self.client, self.parent_id, self.report_dir, importance=False)
        except ValueError:
            pass  # too few finished trials for a plot yet
        self._refreshed = time.time()


def close_interrupted(client: Any, parent_id: str) -> list[str]:
    """At the end of a search no trial runs: close children still marked running, as `interrupted`.

    They are trials a killed driver had started (and opened a child run for) in the second before Ray's
    experiment state was saved, so `--resume` does not know them and runs their slot again under a new id.
    Their partial steps are lost; left RUNNING they would look alive forever.
    """
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.`{C.PARENT_RUN_TAG}` = '{parent_id}' and "
                              "attributes.status = 'RUNNING'")
    for run in runs:
        client.set_tag(run.info.run_id, C.STATUS_TAG, C.INTERRUPTED)
        client.set_terminated(run.info.run_id, C.MLFLOW_STATUS[C.INTERRUPTED])
    return [r.data.tags.get(C.TRIAL_ID_TAG, r.info.run_id) for r in runs]
