"""The study's results table: one JSON object per finished run, one per line, committed under benchmarks/study/.

Written by one runner at a time (an exclusive lock beside the file) and always atomically: the new table is written
to a temporary file in the same folder, flushed to disk, then renamed over the old one, so a crash at any moment
leaves either the old table or the new one, never a torn line. A run is identified by its `key` (design, learning
rate, seed) and its `fingerprint` (everything that determines what it computes: design, training settings, data
files, model); a row whose fingerprint no longer matches the study's is stale and is neither skipped nor reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def run_key(design_id: str, lr: float, seed: int) -> str:
    return f"{design_id}|lr={lr:g}|seed={seed}"


def fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of the table (none if it does not exist yet); a line that is not one JSON object is an error."""
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: each line must be one JSON object, got invalid JSON ({err}); the table "
                             "is only ever replaced whole, so this file was edited by hand: fix or remove the line")
        if not isinstance(row, dict) or "key" not in row:
            raise ValueError(f"{path}:{n}: each line must be a run object with a 'key', got {line[:80]!r}")
        rows.append(row)
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Add one row: the whole table is rewritten to a temporary file and renamed over the old one."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    text += json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the table's lock for a runner's lifetime; a second runner on the same table stops with one line."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another runner holds {lock}: one runner per table (it resumes from the table, so "
                               "wait for it or stop it first)") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def current(rows: list[dict[str, Any]], fingerprints: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The rows that count, by key: those whose fingerprint is the study's current one for that key (last wins)."""
    out = {}
    for row in rows:
        if fingerprints.get(row["key"]) == row.get("fingerprint"):
            out[row["key"]] = row
    return out
