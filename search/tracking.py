"""MLflow records of a search: one parent run per search, one nested child run per trial, written from the driver.

Logging from the driver (a Ray Tune callback) means workers never need to reach the tracking server, and one place
decides each trial's final status: finished, stopped early at step N, failed with its reason, or skipped (over the
parameter budget). Child runs are keyed by Ray's trial id, so a resumed search continues its runs instead of
duplicating them. After every completed trial the parent's Pareto plots and hypervolume history are refreshed.

Transport: every write goes through `search.outbox.Outbox`, so a tracking server that is away for a while (a restart,
a network blip) delays records instead of killing the search. On `--resume` the callback rebuilds its counts and
step points from the store, so the progress counter continues and no step is logged twice. Searches are looked up
by exact tag values (`analysis.mlflow_filter`), never by filter strings pasted from paths or names.

The store itself (probing and creating it, the experiment, the parent run, closing interrupted children) is
`search/store.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from analysis.mlflow_filter import runs_where
from analysis.pareto import pareto_mask
from finetune.designpoint import DesignPoint
from search import contract as C
from search.outbox import Outbox, http_policy, is_transient
from search.searcher import outcome


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
    """Ray Tune callback that writes the search's child runs; writes are queued through an `Outbox`."""

    def __init__(self, tracking_uri: str, parent_id: str, max_steps: int, report_dir: str,
                 refresh_every_s: float = 0.0, num_samples: int = 0, outbox: str | None = None,
                 wait_at_end_s: float = 900.0, metric: str | None = None) -> None:
        self.tracking_uri, self.parent_id, self.max_steps = tracking_uri, parent_id, max_steps
        self.score = C.score_name(metric)  # console lines name the task's score (BLEU, ROUGE-2, accuracy)
        self.num_samples, self.wait_at_end_s = num_samples, wait_at_end_s
        self.report_dir, self.refresh_every_s = report_dir, refresh_every_s
        self.outbox = Outbox(outbox, f"the MLflow tracking store at {tracking_uri}")
        self._reset()

    def _reset(self) -> None:
        self._front: list[tuple[float, float]] = []
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._steps: dict[str, set[int]] = {}  # trial id -> evaluation steps already in its run
        self._last: dict[str, dict] = {}
        self._done: set[str] = set()  # trials whose final status is recorded
        self._refreshed = 0.0
        self._running: set[str] = set()
        self._numbers: dict[str, int] = {}  # trial id -> trial number (C.trial_label), in start order
        self.counts = {C.FINISHED: 0, C.STOPPED: 0, C.FAILED: 0, C.SKIPPED: 0}
        self._started, self._done_at_start = time.monotonic(), 0  # this driver's clock, for elapsed time and ETA

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks into tuner.pkl when the search starts
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def setup(self, **info: Any) -> None:
        """At the start of a search and of every `--resume` (whose callback is the one pickled at the start):
        continue from what the store already holds, then send what a killed driver left queued."""
        self._reset()
        left = self.outbox.load()
        try:
            with http_policy(retries=0, timeout_s=10):
                self._resync()
        except Exception as err:  # noqa: BLE001 - progress counts are cosmetic; records are not at stake here
            print(f"tracking: could not read earlier trials back ({type(err).__name__}); counting from 0", flush=True)
        if left:
            print(f"tracking: {left} record(s) queued by an earlier driver; logging them first", flush=True)
            self.outbox.flush(self._send)

    def _resync(self) -> None:
        parent = self.client.get_run(self.parent_id)
        for run in runs_where(self.client, [parent.info.experiment_id], {C.PARENT_RUN_TAG: self.parent_id}):
            trial_id, state = run.data.tags.get(C.TRIAL_ID_TAG), run.data.tags.get(C.STATUS_TAG)
            if trial_id is None:
                continue
            self._runs[trial_id] = run.info.run_id
            number = run.data.tags.get(C.TRIAL_NUMBER_TAG)
            self._numbers[trial_id] = int(number) if number and number.isdigit() else len(self._numbers) + 1
            if state in self.counts:
                self.counts[state] += 1
                self._done.add(trial_id)
                if state == C.FINISHED and C.SCORE in run.data.metrics:
                    self._front.append((C.objective(run.data.metrics), run.data.metrics[C.FRACTION]))
        self._done_at_start = sum(self.counts.values())

    # -- writes: each one a JSON-able record, sent (or queued) in order ------------------------------------------

    def _write(self, op: dict[str, Any]) -> None:
        self.outbox.put(op)
        if self.outbox.due() or len(self.outbox.ops) == 1:
            self.outbox.flush(self._send)

    def _send(self, op: dict[str, Any]) -> None:
        {"open": self._open_run, "metrics": self._log_metrics, "close": self._close_run}[op["op"]](op)

    def _find_run(self, trial_id: str) -> str | None:
        if trial_id not in self._runs:
            parent = self.client.get_run(self.parent_id)
            found = runs_where(self.client, [parent.info.experiment_id],
                               {C.PARENT_RUN_TAG: self.parent_id, C.TRIAL_ID_TAG: trial_id})
            if found:
                self._runs[trial_id] = found[0].info.run_id
        return self._runs.get(trial_id)

    def _open_run(self, op: dict[str, Any]) -> None:
        trial_id, cfg = op["trial"], op["config"]
        run_id = self._find_run(trial_id)
        if run_id is not None:  # a restarted trial, or a resumed search: continue its run
            self.client.update_run(run_id, status="RUNNING")
            return
        parent = self.client.get_run(self.parent_id)
        design = DesignPoint.from_dict(cfg["design"])
        number = int(op.get("number") or self.number(trial_id))
        tags = C.trial_tags(parent_id=self.parent_id, trial_id=trial_id, max_steps=self.max_steps, design=design,
                            preset=cfg.get("preset"), replicate=cfg.get("replicate"), number=number)
        name = C.run_name(number, design, cfg.get("preset"), cfg.get("replicate"))
        run = self.client.create_run(parent.info.experiment_id, run_name=name, tags=tags)
        run_id = self._runs[trial_id] = run.info.run_id
        self._steps[trial_id] = set()
        params = C.trial_params(design, cfg.get("train", {}))
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()], metrics=[
            Metric(k, v, op["time"], 0) for k, v in C.count_metrics(cfg["fraction"], cfg.get("counts", {})).items()])

    def _log_metrics(self, op: dict[str, Any]) -> None:
        trial_id, step = op["trial"], op["step"]
        run_id = self._find_run(trial_id)
        if run_id is None:
            raise _missing_run(trial_id)
        if trial_id not in self._steps:  # a run from before a restart: its steps are in the store
            self._steps[trial_id] = {m.step for m in self.client.get_metric_history(run_id, C.SCORE)}
        if step in self._steps[trial_id]:
            return  # a step reported again (a trial answered from its own result after a driver kill)
        self.client.log_batch(run_id, metrics=[Metric(k, v, op["time"], step) for k, v in op["metrics"].items()])
        self._steps[trial_id].add(step)

    def _close_run(self, op: dict[str, Any]) -> None:
        run_id = self._find_run(op["trial"])
        if run_id is None:
            raise _missing_run(op["trial"])
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
        self.client.set_terminated(run_id, C.MLFLOW_STATUS[op["state"]], end_time=op["time"])

    # -- Ray Tune events -------------------------------------------------------------------------------------------

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.outbox.due():  # retry queued records (with backoff) while the search runs
            self.outbox.flush(self._send)

    def number(self, trial_id: str) -> int:
        """The trial's number in this search (1, 2, ... in start order; kept across --resume through its tag)."""
        if trial_id not in self._numbers:
            self._numbers[trial_id] = max(self._numbers.values(), default=0) + 1
        return self._numbers[trial_id]

    def label(self, trial: Any) -> str:
        """`t003 lora_attn`: the trial's number and its design in short, as its MLflow run is named."""
        cfg = trial.config
        try:
            return C.run_name(self.number(trial.trial_id), DesignPoint.from_dict(cfg["design"]), cfg.get("preset"),
                              cfg.get("replicate"))
        except (KeyError, TypeError, ValueError):  # a config without a design (never from our searchers)
            return C.trial_label(self.number(trial.trial_id))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._running.add(trial.trial_id)
        self._write({"op": "open", "trial": trial.trial_id, "config": trial.config, "time": _now_ms(),
                     "number": self.number(trial.trial_id)})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._last[trial.trial_id] = result
        if C.SCORE not in result:
            return
        self._write({"op": "metrics", "trial": trial.trial_id, "step": int(result["step"]), "time": _now_ms(),
                     "metrics": C.step_metrics(result)})

    def _finish(self, trial: Any, state: str, result: Mapping[str, Any] | None, reason: str | None) -> None:
        fidelity = int((result or {}).get("step", 0))
        # reused_from: an identical config's result, not trained again; named by that trial's id (t001)
        reused = (result or {}).get("reused_from")
        tags = C.final_tags(state, fidelity, reason, self._reused_label(reused) if reused else None)
        # Closed before the report refresh: the report orders trials by end time.
        self._write({"op": "close", "trial": trial.trial_id, "state": state, "tags": tags, "time": _now_ms()})
        again = trial.trial_id in self._done  # recorded before a driver kill, then run again by --resume
        if not again:
            self.counts[state] += 1
            self._done.add(trial.trial_id)
            if state == C.FINISHED and result is not None:
                self._front.append((C.objective(result), float(trial.config["fraction"])))
        self._running.discard(trial.trial_id)
        self._refresh()
        self._progress(trial, state, result, again, reason)

    def _outcome_words(self, state: str, result: Mapping[str, Any] | None, reason: str | None) -> str:
        """What became of the trial: its score, or where it stopped and what it scored there, or why it failed."""
        name, r = self.score.label, result or {}
        if state == C.FINISHED and result:
            words = f"{name} {C.objective(result):.4f}"
            if r.get(C.SELECTED_STEP) is not None and int(r[C.SELECTED_STEP]) != int(r.get("step", -1)):
                words += f" (selected step {int(r[C.SELECTED_STEP])})"
            return words
        if state == C.STOPPED:
            words = f"at step {int(r.get('step', 0))}/{self.max_steps}"
            return words + (f", last {name} {float(r[C.SCORE]):.4f}" if isinstance(r.get(C.SCORE), (int, float))
                            else ", before its first evaluation")
        if state == C.FAILED and reason:
            return f"at step {int(r.get('step', 0))}: {reason[:120]}"
        return ""

    def _timing(self, done: int) -> str:
        """Elapsed time of this driver and the time left at the pace of the trials it has ended so far."""
        elapsed = time.monotonic() - self._started
        here, left = done - self._done_at_start, max(self.num_samples - done, 0)
        words = f"elapsed {_duration(elapsed)}"
        if left == 0:
            return words
        if here <= 0:
            return words + ", time left: not estimable before a trial ends"
        pace = elapsed / here  # wall time per ended trial, concurrency included
        return words + (f", about {_duration(pace * left)} left ({left} trials at this run's pace, one per "
                        f"{_duration(pace)})")

    def _progress(self, trial: Any, state: str, result: Mapping[str, Any] | None, again: bool = False,
                  reason: str | None = None) -> None:
        done = sum(self.counts.values())
        outcome_words = self._outcome_words(state, result, reason)
        line = (f"[{done}/{self.num_samples}] {self.label(trial)} {state}"
                + (f" {outcome_words}" if outcome_words else "")
                + (" (already recorded before the restart)" if again else "")
                + (f" (reused from {self._reused_label(result['reused_from'])})"
                   if result and result.get("reused_from") else "")
                + f" @ {100 * float(trial.config['fraction']):.3f}% | {len(self._running)} running, "
                + ", ".join(f"{v} {k}" for k, v in self.counts.items() if v))
        if self.outbox.ops:
            line += f" | {len(self.outbox.ops)} record(s) queued for tracking"
        if self._front:
            scores, fractions = np.array(self._front).T
            best = scores.max()
            line += (f" | front: {int(pareto_mask(scores, fractions).sum())} designs, best {self.score.label} "
                     f"{best:.4f}")
        print(line + f" | {self._timing(done)}", flush=True)

    def _reused_label(self, trial_id: str) -> str:
        number = self._numbers.get(str(trial_id))
        return C.trial_label(number) if number is not None else str(trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = self._last.get(trial.trial_id) or trial.last_result
        state = outcome(result, self.max_steps)
        self._finish(trial, state, result, (result or {}).get("failure") or
                     ("over the parameter budget" if state == "skipped" else None))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", self._last.get(trial.trial_id), _error_reason(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Log what is still queued, waiting out an outage for up to `wait_at_end_s`; what is left stays on disk."""
        if not self.outbox.drain(self._send, self.wait_at_end_s):
            print(f"tracking: {len(self.outbox.ops)} record(s) could not be logged; they are kept in "
                  f"{self.outbox.path} and logged by the same command with --resume once the store is back",
                  flush=True)

    def _refresh(self) -> None:
        if time.time() - self._refreshed < self.refresh_every_s or self.outbox.ops:
            return  # the store is away (records queued): refresh once they are in
        # deferred on purpose: matplotlib and Optuna load at the first report refresh, not with the callback
        from analysis.report import update_search_report

        try:
            with http_policy(retries=0, timeout_s=10):
                update_search_report(self.client, self.parent_id, self.report_dir, importance=False)
        except ValueError:
            pass  # too few finished trials for a plot yet
        except Exception as err:  # noqa: BLE001 - a report refresh is redone at the end; never worth the search
            if not is_transient(err):
                raise
        self._refreshed = time.time()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _duration(seconds: float) -> str:
    """45s, 3m12s, 2h05m, 3d04h."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _missing_run(trial_id: str) -> Exception:
    return MlflowException(f"no run for trial {trial_id} (its opening record was refused)",
                           error_code=RESOURCE_DOES_NOT_EXIST)
