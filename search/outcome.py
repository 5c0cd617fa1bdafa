"""How a search ended, told the same way to a shell (exit code), to MLflow (the parent's status) and to a wrapper
(`status.json` in the search folder). A scheduler (SLURM, `ray job`) marks a job by the exit code alone, so 0 means
only one thing: every requested trial reached a final state and at least one finished.

SIGINT (Ctrl-C, SLURM's `--signal=INT` before a time limit) and SIGTERM (`scancel`, a preemption) stop a search
cleanly: Ray Tune saves the experiment one last time (it does so on SIGUSR1, which is what they are turned into),
the running trials keep their last resume point, and `--resume` continues them. A second signal ends at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search import contract as C

# ---- the exit codes: one table, printed in --help and docs/cluster.md --------------------------------------------
COMPLETE, BAD_INPUT, NO_TRIAL_FINISHED, INCOMPLETE, CLUSTER_LOST, TRACKING_QUEUED, INTERRUPTED = (
    0, 2, 3, 4, 5, 6, 130)
# state name (status.json `state`, the parent's petl.search_state tag), exit code, MLflow status of the parent, meaning
STATES = {
    "complete": (COMPLETE, "FINISHED", "every requested trial reached a final state and at least one finished"),
    "bad_input": (BAD_INPUT, None, "bad input, one line before anything starts (nothing created)"),
    "no_trial_finished": (NO_TRIAL_FINISHED, "FAILED", "every trial ended, none finished (all failed or skipped)"),
    "incomplete": (INCOMPLETE, "FAILED", "trials left unfinished for another reason (see the log); --resume"),
    "cluster_lost": (CLUSTER_LOST, "FAILED", "the Ray cluster stopped answering (head lost); restart it, --resume"),
    "tracking_queued": (TRACKING_QUEUED, None, "trials done, MLflow records still queued on disk; --resume logs "
                        "them once the store is back"),
    "interrupted": (INTERRUPTED, "KILLED", "stopped by SIGINT or SIGTERM; --resume continues it"),
}
STATUS_FILE = "status.json"


def exit_code_table() -> str:
    """The table for --help's epilog and docs/cluster.md (1 is Python's own: an unexpected error, a traceback)."""
    rows = [f"  {code:>3}  {name:<18} {meaning}" for name, (code, _, meaning) in STATES.items()]
    rows.insert(1, f"  {1:>3}  {'error':<18} an unexpected error (a traceback)")
    return "exit codes (also `state` in <storage>/<name>/status.json and the parent run's petl.search_state):\n" \
        + "\n".join(rows)


@dataclass
class Outcome:
    """What a finished `tuner.fit()` left: trial counts by state and how many requested trials Ray never created.

    `counts` holds the final states (finished, stopped = early-stopped by the scheduler, failed, skipped) and
    `interrupted`: trials Ray created that did not end (a stop signal, a lost head); `--resume` continues each from
    its last evaluation, and their MLflow runs are closed as `interrupted` (KILLED), never as stopped or failed.
    """

    requested: int
    counts: dict[str, int] = field(default_factory=dict)  # finished, stopped, failed, skipped, interrupted
    not_started: int = 0  # requested trials Ray never created

    @property
    def ended(self) -> int:
        """Trials in a final state (interrupted ones are not)."""
        return sum(v for k, v in self.counts.items() if k != C.INTERRUPTED)

    @property
    def interrupted(self) -> int:
        return self.counts.get(C.INTERRUPTED, 0)

    def state(self, interrupted: bool, cluster_lost: bool, queued: bool) -> str:
        if self.interrupted or self.not_started:
            return "interrupted" if interrupted else "cluster_lost" if cluster_lost else "incomplete"
        if queued:
            return "tracking_queued"
        return "complete" if self.counts.get("finished", 0) else "no_trial_finished"


def tally(results: Iterable[Any], requested: int, max_steps: int) -> Outcome:
    """An `Outcome` from the public parts of a Ray Tune ResultGrid's results: `metrics` (the last result) and `error`.

    A trial ended when it errored, when its last result carries Ray's `done` flag (set when the scheduler stops it
    and when its function returns), or when that last result is one the trial function only reports as it returns
    (full fidelity reached, over the budget, failed). A trial a stop signal (Ctrl-C, SIGTERM, a preemption) caught
    mid-training has none of these, although Ray reports it TERMINATED after its cleanup: it is interrupted.
    The terminal report counts by itself because `done` can be missing from a restored search: when a function
    returns, Ray (2.60) sets `done` in place on the trial's last result, which does not refresh the trial's cached
    JSON, so an experiment snapshot taken just before keeps `done: false` for a TERMINATED trial, and `--resume` of a
    complete search then read its finished trial as interrupted (exit 4).
    """
    from search.searcher import outcome  # deferred on purpose: it imports Ray; --help reads this module

    results = list(results)
    counts = {"finished": 0, "stopped": 0, "failed": 0, "skipped": 0, C.INTERRUPTED: 0}
    for r in results:
        metrics = r.metrics or {}
        kind = outcome(metrics, max_steps, error=r.error is not None)
        ended = kind != "stopped" or bool(metrics.get("done"))  # an error is "failed": ended
        counts[kind if ended else C.INTERRUPTED] += 1
    return Outcome(requested, counts, max(0, requested - len(results)))


def write_status(folder: Path, state: str, /, **extra: Any) -> dict[str, Any]:
    """Write `status.json` atomically (a wrapper polling it never reads half a file); returns what was written."""
    code, mlflow_status, meaning = STATES.get(state, (None, None, state))
    data = {"state": state, "exit_code": code, "meaning": meaning, "mlflow_status": mlflow_status,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname(),
            "pid": os.getpid(), **extra}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATUS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, folder / STATUS_FILE)
    return data


def outcome_fields(o: Outcome) -> dict[str, Any]:
    return {k: v for k, v in asdict(o).items()}


class StopSignals:
    """While active: SIGINT and SIGTERM stop the search cleanly, and are remembered (`received`).

    Ray Tune stops gracefully on SIGUSR1 (it saves the experiment state, leaves running trials resumable and
    returns); its own SIGINT handler is disabled (TUNE_DISABLE_SIGINT_HANDLER, set by the CLI) so that this one
    sees the signal. A second signal, or one before Tune listens, raises KeyboardInterrupt at once.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signal.Signals(signum).name
        tune_listens = signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        if first and tune_listens:
            print(f"\n{self.received}: stopping the search cleanly (state saved, running trials resume with "
                  "--resume); send it again to stop at once", flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        raise KeyboardInterrupt


def describe(o: Outcome, state: str, extra: Mapping[str, Any]) -> str:
    """One line for the end of the log."""
    code, _, meaning = STATES[state]
    counts = ", ".join(f"{v} {k}" for k, v in o.counts.items() if v and k != C.INTERRUPTED) or "none"
    left = [f"{o.interrupted} interrupted (resumable: --resume continues {'it' if o.interrupted == 1 else 'each'} "
            "from its last evaluation)"] if o.interrupted else []
    left += [f"{o.not_started} not started"] if o.not_started else []
    hint = f" ({extra['hint']})" if extra.get("hint") else ""
    return (f"search {state} (exit {code}): {o.ended} of {o.requested} trials ended ({counts})"
            f"{'; ' + ', '.join(left) if left else ''}; {meaning}{hint}")
