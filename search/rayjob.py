"""`petl-submit ray-job`: a search as a Ray job on an existing cluster, through its job server (needs ray[default]
on the cluster: `pip install 'petl-search[cluster]'`).

The job runs `python -m search.submit run -- <search args> --address auto` on the head (Ray sets RAY_ADDRESS for a
job's driver, so `auto` is the job's own cluster), with this checkout as its working dir unless petl-search is
installed there. The submission id is the search name; a re-submission after the first job ended gets `<name>-2`,
`-3`, ..., and resumes the same search (`run` adds --resume when the search's state exists).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from ray.job_submission import JobSubmissionClient

from search.plan import SearchError
from search.submit import check_batch_args, search_args, shell_join  # rayjob runs where search.plan is loaded

EXCLUDES = [".git", ".venv", "petl_runs", "mlruns", "*.db", "*.db.lock", "report", "__pycache__", "*.egg-info"]


def default_working_dir() -> Path | None:
    """This checkout (what the job imports), or None when petl-search runs from an installed package."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() else None


def job_request(opts: argparse.Namespace, search: list[str], cwd: Path) -> dict[str, Any]:
    """The keyword arguments of JobSubmissionClient.submit_job (without the submission id)."""
    working = Path(opts.working_dir).resolve() if opts.working_dir else default_working_dir()
    argv = check_batch_args(search, cwd, working_dir=working)
    if any(a == "--address" or a.startswith("--address=") for a in argv):
        raise SearchError("leave --address out after `--`: a Ray job's search runs on the job's own cluster")
    env = {"PYTHONUNBUFFERED": "1"}
    for item in opts.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SearchError(f"--env takes KEY=VALUE, got {item!r}")
        env[key] = value
    runtime_env: dict[str, Any] = {"env_vars": env}
    if working is not None:
        runtime_env |= {"working_dir": str(working), "excludes": EXCLUDES}
    entrypoint = f"{shell_join([opts.python])} -m search.submit run -- {shell_join(argv)} --address auto"
    return {"entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": {"petl.search": str(search_args(
        argv).name)}}


def free_submission_id(client: Any, name: str) -> str:
    """The search name, or `<name>-N` for the first N not used by an earlier job (Ray keeps ids unique)."""
    used = {j.submission_id for j in client.list_jobs()}
    if name not in used:
        return name
    for job in client.list_jobs():
        if job.submission_id in used and job.submission_id.startswith(name) and not job.status.is_terminal():
            raise SearchError(f"a Ray job for the search {name!r} is still {job.status.value} "
                              f"({job.submission_id}); wait for it or stop it (ray job stop {job.submission_id})")
    n = 2
    while f"{name}-{n}" in used:
        n += 1
    return f"{name}-{n}"


def submit_ray_job(opts: argparse.Namespace, search: list[str]) -> int:
    request = job_request(opts, search, Path.cwd())
    name = request["metadata"]["petl.search"]
    if opts.dry_run:
        print(f"job server: {opts.address}\nsubmission id: {name} (or {name}-N if taken)\nentrypoint: "
              f"{request['entrypoint']}\nruntime_env: {request['runtime_env']}")
        return 0
    try:
        client = JobSubmissionClient(opts.address)
    except (ImportError, ConnectionError, RuntimeError, ValueError) as err:
        raise SearchError(f"cannot reach the Ray job server at {opts.address!r} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200]}); start the head with its dashboard (ray[default], "
                          "pip install 'petl-search[cluster]') or fix --address") from None
    job_id = client.submit_job(submission_id=free_submission_id(client, name), **request)
    print(f"submitted Ray job {job_id} to {opts.address} (ray job logs {job_id} --address {opts.address})",
          flush=True)
    if not opts.follow:
        return 0
    return follow(client, job_id)


def follow(client: Any, job_id: str) -> int:
    """Stream the job's logs until it ends; its driver's exit code (the search's), or 1 when Ray has none."""
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    asyncio.run(tail())
    info = client.get_job_info(job_id)
    while not info.status.is_terminal():
        time.sleep(1.0)
        info = client.get_job_info(job_id)
    code = info.driver_exit_code
    print(f"Ray job {job_id}: {info.status.value}" + (f" (exit {code})" if code is not None else ""))
    return int(code) if code is not None else (0 if info.status.value == "SUCCEEDED" else 1)
