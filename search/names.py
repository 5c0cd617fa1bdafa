"""A search's name and folder, checked first: before the heavy imports and the planning, in well under a second.

Re-running a finished demo, or `--resume` with a name that never ran, is the commonest mistake after the first run;
it is answered from the file system alone (`<storage>/<name>`), before planning reads data or builds a model, and
before the tracking store is touched (so `--resume --name never-ran` creates nothing).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finetune.tasks import get_task
from search.spacefile import space_file
from search.yamlsafe import load_yaml


class SearchError(ValueError):
    """Bad input to a search, reported as one line before any compute is spent."""


def storage_folder(storage: str) -> Path:
    """A folder every node can reach (local disk for one machine, NFS or a mounted bucket for a cluster).

    Trials write their PETL checkpoints and resume state with plain file I/O next to Ray's experiment state, so
    object-store URIs are refused rather than half-supported: mount the bucket and pass the mount point.
    """
    if storage.startswith("file://"):
        storage = storage.removeprefix("file://")
    elif "://" in storage:
        raise SearchError(f"--storage must be a folder reachable by every node (e.g. an NFS mount), got the URI "
                          f"{storage!r}; mount the bucket (s3fs, gcsfuse) and pass the mount point")
    return Path(storage).expanduser().resolve()


def search_name(name: str) -> str:
    """A search is one folder directly inside --storage: a name that is a path is refused (`../x` would write beside
    the storage folder, an absolute name would replace it)."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise SearchError(f"--name must be a single folder name inside --storage (no '/', '\\', or '..'), got "
                          f"{name!r}; choose the folder with --storage and the search with --name")
    return name


def default_name(space: str, task: str) -> str:
    """`<space>-<task>` (e.g. smoke-toy-cls): what a search is called without --name."""
    return f"{Path(space).stem}-{task}"


def task_of(args: argparse.Namespace) -> str:
    """The task's canonical name from --dataset, else the space's `task:` (read without loading the space: a bad
    space is reported by the planning that follows), else toy-cls."""
    name = args.dataset
    if name is None:
        try:
            raw, _ = load_yaml(space_file(args.space))
        except ValueError:
            raw = None
        name = raw.get("task") if isinstance(raw, dict) and isinstance(raw.get("task"), str) else None
    try:
        return get_task(name or "toy-cls").name
    except ValueError as err:
        raise SearchError(str(err)) from None


def check_name(args: argparse.Namespace) -> tuple[str, Path]:
    """(name, storage folder) after the collision checks: a new search must not reuse a folder, --resume needs one."""
    name = search_name(args.name or default_name(args.space, task_of(args)))
    storage = storage_folder(args.storage)
    folder = storage / name
    if args.resume and not (folder / "tuner.pkl").exists():
        raise SearchError(f"--resume: no interrupted search named {name!r} under {storage}; check --name and "
                          "--storage, or drop --resume to start it")
    if not args.resume and folder.exists() and any(folder.iterdir()):
        raise SearchError(f"a search named {name!r} already exists under {storage}; pass --resume to continue "
                          "it or --name to start another")
    return name, storage




ARGS_FILE = "search_args.json"  # in the search's folder: the arguments it was started with (what --resume continues)
RESUME_FREE = ("resume", "dry_run", "json", "address", "concurrency", "tracking_uri", "max_failures", "gpu",
               "utilization", "given_flags")  # may change on --resume: where and how fast it runs, not what it trains


def save_args(folder: Path, args: argparse.Namespace) -> None:
    """Record what the search was started with, so that `--resume` continues that search and not a re-plan."""
    keep = {k: v for k, v in vars(args).items() if k not in RESUME_FREE and k != "front"}
    (folder / ARGS_FILE).write_text(json.dumps(keep, indent=2, default=str))


def restore_args(args: argparse.Namespace, given: set[str], folder: Path) -> None:
    """On --resume, take every setting the search was started with; a flag given now must agree with it.

    `given`: the destinations of the flags on this command line. Raises SearchError naming the first disagreement.
    A search started before this record existed is resumed with the flags as given (the old behaviour).
    """
    path = folder / ARGS_FILE
    if not path.is_file():
        return
    stored = json.loads(path.read_text())
    for key, value in stored.items():
        if key in RESUME_FREE or not hasattr(args, key):
            continue
        now = getattr(args, key)
        if key in given and json.dumps(now, default=str) != json.dumps(value, default=str):
            flag = "--" + key.replace("_", "-")
            raise SearchError(f"--resume continues search {folder.name!r} as it was started, but {flag} is {now!r} "
                              f"now and was {value!r}; drop the flag, or start a new search with --name")
        setattr(args, key, value)


__all__ = ["SearchError", "check_name", "default_name", "restore_args", "save_args", "search_name", "storage_folder",
           "task_of"]
