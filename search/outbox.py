"""The driver's MLflow writes, queued and sent in order, so a tracking store that is briefly away costs no record.

Every write (open a trial's run, log an evaluation, close a run) is put here and sent at once when the store
answers. A transport error (connection refused, timeout, a 5xx answer, SQLite busy) ends the pass and keeps that
write and everything after it queued; the next pass comes after an exponential backoff (1 s doubling to 60 s), from
the driver's event loop, so trials keep running and reporting meanwhile. While anything is queued the queue is also
on disk (`<search>/tracking_outbox.json`, replaced atomically), so a driver killed during an outage loses nothing:
`--resume` sends it first. A write the store refuses as invalid (a permanent error) is reported on one line and
dropped, so it cannot block the others. Every write is idempotent (runs are found by trial id, step points are not
logged twice), so a write sent again after a crash does no harm.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# MLflow error codes that mean "this write is invalid", not "the store is away": retrying cannot help.
PERMANENT = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST",
             "INVALID_STATE", "MALFORMED_REQUEST", "ENDPOINT_NOT_FOUND"}
BACKOFF_S = (1.0, 60.0)  # first retry, longest wait


def is_transient(err: BaseException) -> bool:
    """True for errors of reaching the store (worth retrying), False for writes the store rejects and for bugs."""
    # deferred on purpose: the outbox queues and retries without MLflow; only classifying an error needs it
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code not in PERMANENT
    return isinstance(err, (OSError, requests.RequestException, TimeoutError))


@contextmanager
def http_policy(retries: int, timeout_s: int) -> Iterator[None]:
    """MLflow's HTTP retries and timeout for the calls inside, restored after: MLflow reads them per request.

    Its default (7 retries with exponential backoff) would block the driver's event loop for minutes per write
    during an outage; the outbox retries instead, without blocking.
    """
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Outbox:
    """FIFO of JSON-able write records; `flush(send)` sends them in order until the first transport error."""

    def __init__(self, path: str | None, describe: str = "the tracking store",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.describe, self.clock = path, describe, clock
        self.ops: list[dict[str, Any]] = []
        self.failures, self.next_try, self.down_since = 0, 0.0, None
        self.sent_late = 0

    def __getstate__(self) -> dict[str, Any]:  # pickled with Ray's experiment state: only where it lives
        return {"path": self.path, "describe": self.describe}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["describe"])

    def load(self) -> int:
        """Queue what a killed driver left on disk (before anything new); returns how many records."""
        if not self.path or not Path(self.path).is_file():
            return 0
        left = json.loads(Path(self.path).read_text())
        self.ops = left + self.ops
        return len(left)

    def put(self, op: dict[str, Any]) -> None:
        self.ops.append(op)

    def due(self) -> bool:
        return bool(self.ops) and self.clock() >= self.next_try

    def flush(self, send: Callable[[dict[str, Any]], None]) -> bool:
        """Send queued records in order; True when none is left. Never raises."""
        with http_policy(retries=0, timeout_s=10):
            while self.ops:
                try:
                    send(self.ops[0])
                except Exception as err:  # noqa: BLE001 - classified below; the search must go on either way
                    if is_transient(err):
                        self._went_down(err)
                        return False
                    print(f"tracking: {self.describe} refused a record, dropped ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200]}): {json.dumps(self.ops[0], default=str)[:300]}",
                          flush=True)
                self.ops.pop(0)
                if self.down_since is not None:
                    self.sent_late += 1
                self._save()
        if self.down_since is not None:
            print(f"tracking: {self.describe} is back after {self.clock() - self.down_since:.0f} s; "
                  f"{self.sent_late} queued record(s) logged", flush=True)
        self.failures, self.next_try, self.down_since, self.sent_late = 0, 0.0, None, 0
        return True

    def drain(self, send: Callable[[dict[str, Any]], None], timeout_s: float) -> bool:
        """Flush, waiting out an outage for up to `timeout_s`; True when everything was sent."""
        deadline = self.clock() + timeout_s
        if self.ops and not self.flush(send):
            print(f"tracking: waiting up to {timeout_s:.0f} s for {self.describe} to log {len(self.ops)} "
                  "queued record(s)", flush=True)
        while self.ops and self.clock() < deadline:
            time.sleep(max(0.0, min(self.next_try, deadline) - self.clock()))
            self.flush(send)
        return not self.ops

    def _went_down(self, err: BaseException) -> None:
        self.failures += 1
        first, longest = BACKOFF_S
        self.next_try = self.clock() + min(longest, first * 2 ** (self.failures - 1))
        if self.down_since is None:
            self.down_since = self.clock()
            print(f"tracking: {self.describe} unreachable ({type(err).__name__}: "
                  f"{str(err).splitlines()[0][:160]}); queueing records and retrying with backoff", flush=True)
        self._save()

    def _save(self) -> None:
        """Mirror the queue on disk while it is not empty (atomic replace); remove the file once it is."""
        if not self.path:
            return
        path = Path(self.path)
        if not self.ops:
            path.unlink(missing_ok=True)
            return
        if self.down_since is None and not path.exists():
            return  # sending normally: no file until the store is away
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.ops, default=str))
        os.replace(tmp, path)
