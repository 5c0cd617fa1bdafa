"""`petl-submit slurm|ray-job [options] -- <petl-search arguments>`: a search as a cluster batch job.

- `slurm` renders an sbatch script (`--dry-run` prints it) that starts a private Ray cluster inside the allocation (a
  head on the first node, one worker node per other node, per-job ports, temp dirs and auth token), waits for every
  node, runs the search on it, and ends its own Ray steps (never `ray stop`, which kills every Ray on a host). It is
  requeue-safe: a requeued or re-submitted job resumes the same search (`run` below adds `--resume` when the search's
  state exists), and SLURM signals the driver `--stop-before` seconds before the time limit so it stops cleanly.
- `ray-job` submits the search to an existing Ray cluster through Ray's job submission client (its dashboard
  address, `http://head:8265`): the code as the job's working dir, the environment, the search name as submission
  id; `--follow` streams the logs and exits with the search's own exit code.
- `run` (what both jobs execute) starts the search, or resumes it when `<storage>/<name>/tuner.pkl` exists.

Both refuse, before submitting, what a batch job would lose: a relative `--storage` (each node and each requeue
starts in its own folder), and a storage folder or SQLite tracking store inside the job's temporary folders (Ray's
session folder, or the working dir Ray copies for a job); the default tracking store becomes an absolute path.
Exit codes: those of petl-search (`search.outcome.STATES`), and 2 for bad input here.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from search.cli import build_parser as search_parser
from search.cli import main as search_main
from search.names import SearchError

TEMP_ROOTS = ("/tmp/ray", "/dev/shm")  # Ray's session folders and RAM disks: gone with the job or the node


def search_args(argv: list[str]) -> argparse.Namespace:
    parser = search_parser()
    parser.exit_on_error = False
    try:
        return parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as err:
        raise SearchError(f"the search's arguments after `--` do not parse ({err}); see petl-search --help") from None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_batch_args(argv: list[str], cwd: Path, working_dir: Path | None = None) -> list[str]:
    """The search's arguments for a batch job, checked; the default tracking store made absolute (a SQLite file in
    `cwd`). Raises SearchError with one line naming the rule, the value and the fix."""
    args = search_args(argv)
    if args.dry_run:
        raise SearchError("--dry-run after `--` plans without submitting: run petl-search --dry-run ... directly")
    if not args.name:
        raise SearchError("a batch job needs --name after `--`: a requeued or re-submitted job resumes the search of "
                          "that name")
    if args.resume:
        raise SearchError("leave --resume out after `--`: the job adds it when the search's state exists")
    storage = args.storage.removeprefix("file://")
    if "://" not in storage and not os.path.isabs(os.path.expanduser(storage)):
        raise SearchError(f"--storage must be an absolute folder every node reaches (shared storage), got "
                          f"{args.storage!r}: a batch job starts on another node, in another folder")
    out = list(argv)
    uri = args.tracking_uri
    if uri is None:
        uri = f"sqlite:///{cwd / 'mlflow.db'}"
        out += ["--tracking-uri", uri]
    elif uri.startswith("sqlite:") and not uri.startswith("sqlite:////"):
        raise SearchError(f"--tracking-uri must name an absolute SQLite path (sqlite:////abs/mlflow.db) or a "
                          f"server, got {uri!r}: a relative one lands in the job's working folder")
    folders = {"--storage": Path(os.path.expanduser(storage)).resolve()}
    if uri.startswith("sqlite:"):
        folders["--tracking-uri"] = Path(uri.removeprefix("sqlite:///")).resolve()
    temp = [Path(t) for t in TEMP_ROOTS] + ([working_dir.resolve()] if working_dir else [])
    for flag, path in folders.items():
        for root in temp:
            if _inside(path, root):
                what = "the job's working dir, which Ray copies to a temporary folder" if root == temp[-1] and \
                    working_dir else f"{root}, a temporary folder"
                raise SearchError(f"{flag} {str(path)!r} lies inside {what}: it would vanish with the job; put it "
                                  "on storage that outlives the job (a shared folder, a tracking server)")
    return out


def run(argv: list[str]) -> int:
    """Start the search, or resume it when its state exists (a requeued or re-submitted batch job)."""
    # deferred on purpose: search.plan loads torch and transformers; petl-submit's in-job helpers start without them
    from search.plan import storage_folder

    args = search_args(argv)
    if (storage_folder(args.storage) / str(args.name) / "tuner.pkl").exists():
        print(f"petl-submit: resuming the search {args.name!r}", flush=True)
        argv = [*argv, "--resume"]
    return search_main(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petl-submit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("slurm", help="an sbatch job: a private Ray cluster over the allocation runs the search")
    s.add_argument("--nodes", type=int, default=1, help="nodes (one Ray node each; the first is the head)")
    s.add_argument("--cpus-per-node", type=int, default=None, help="CPUs per node (sbatch --cpus-per-task)")
    s.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (sbatch --gpus-per-node)")
    s.add_argument("--time", default=None, help="time limit (sbatch --time, e.g. 12:00:00)")
    s.add_argument("--partition", default=None)
    s.add_argument("--account", default=None)
    s.add_argument("--job-name", default=None, help="default: petl-<search name>")
    s.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="an extra #SBATCH line, e.g. --sbatch=--mem=64G (repeatable)")
    s.add_argument("--stop-before", type=int, default=300, help="seconds before the time limit at which SLURM "
                   "sends SIGINT, so the search saves its state and stops cleanly (default 300)")
    s.add_argument("--python", default=sys.executable, help="the Python with petl-search installed on the nodes "
                   "(default: this one)")
    s.add_argument("--node-timeout", type=int, default=300, help="seconds to wait for every Ray node to join")
    s.add_argument("--dry-run", action="store_true", help="print the sbatch script, submit nothing")
    j = sub.add_parser("ray-job", help="a Ray job on an existing cluster, through its job server (ray[default])")
    j.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
                   help="the cluster's dashboard / job server (default: $RAY_API_SERVER_ADDRESS or "
                   "http://127.0.0.1:8265)")
    j.add_argument("--working-dir", default=None, help="code folder Ray copies to the cluster (default: this "
                   "checkout; none when petl-search is installed there)")
    j.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for the job")
    j.add_argument("--python", default="python", help="the Python of the cluster's nodes that has petl-search's "
                   "dependencies (default: python on the head's PATH)")
    j.add_argument("--follow", action="store_true", help="stream the job's logs; exit with the search's code")
    j.add_argument("--dry-run", action="store_true", help="print what would be submitted, submit nothing")
    sub.add_parser("run", help="(what the jobs run) start the search, or resume it when its state exists")
    n = sub.add_parser("ray-node", help="(inside an sbatch job) run this node's Ray node until SIGTERM")
    n.add_argument("--head", action="store_true")
    n.add_argument("--head-address", default=None)
    n.add_argument("--first-index", type=int, default=0)
    ip = sub.add_parser("node-ip", help="(inside an sbatch job) the IPv4 address of a SLURM node")
    ip.add_argument("node")
    w = sub.add_parser("wait-nodes", help="(inside an sbatch job) wait until a Ray cluster has N alive nodes")
    w.add_argument("--address", required=True)
    w.add_argument("--nodes", type=int, required=True)
    w.add_argument("--timeout", type=float, default=300)
    return p


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def main(argv: list[str] | None = None) -> int:
    own, search = split_argv(list(sys.argv[1:] if argv is None else argv))
    opts = build_parser().parse_args(own)
    if opts.kind in ("wait-nodes", "ray-node", "node-ip"):  # inside a job: light imports, started in ~1 s
        # deferred on purpose: search.slurm imports this module
        from search import slurm

        if opts.kind == "node-ip":
            print(slurm.node_ip(opts.node))
            return 0
        if opts.kind == "ray-node":
            return slurm.ray_node(opts.head, opts.head_address, opts.first_index)
        return slurm.wait_nodes(opts.address, opts.nodes, opts.timeout)
    try:
        if opts.kind == "run":
            return run(search)
        if opts.kind == "slurm":
            from search.slurm import submit_slurm  # deferred on purpose: search.slurm imports this module

            return submit_slurm(opts, search)
        from search.rayjob import submit_ray_job  # deferred on purpose: it loads the planner (torch) and Ray

        return submit_ray_job(opts, search)
    except SearchError as err:
        print(f"error: {err}")
        return 2


def shell_join(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


if __name__ == "__main__":
    raise SystemExit(main())

