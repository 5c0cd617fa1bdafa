"""`petl-submit slurm`: the sbatch script of a search, and the helpers it runs inside the allocation.

The script (`render`) starts a private Ray cluster over the job's nodes: `ray-node --head` on the first node, one
`ray-node --head-address` per other node (one srun step each, `--overlap` so the driver shares the allocation),
waits for every node (`wait-nodes`), runs the search on it (`run`: start, or resume when its state exists), and at
the end signals its own srun steps. Every Ray node has its own temp dir and ports derived from the job id
(`ports`), and the job its own auth token, so two jobs on one host never meet; nothing calls `ray stop`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from search.cluster import reachable
from search.names import SearchError
from search.outcome import CLUSTER_LOST
from search.submit import check_batch_args, search_args, shell_join

PORT_BLOCK = 50  # ports per job: the head's 3, then 10 per node (nodes of one job may share a host, as in tests)


def base_port(job_id: int) -> int:
    """The job's first port (the head's GCS): 20000-59950, one block of PORT_BLOCK per job id modulo 800."""
    return 20000 + (job_id % 800) * PORT_BLOCK


def ports(base: int, node_index: int) -> dict[str, int]:
    """The fixed ports of Ray node `node_index` of a job (Ray's defaults, 52365 and 10001, would collide)."""
    first = base + 10 * (node_index + 1)
    return {"dashboard-agent-listen-port": first, "dashboard-agent-grpc-port": first + 1,
            "metrics-export-port": first + 2, "runtime-env-agent-port": first + 3, "node-manager-port": first + 4,
            "object-manager-port": first + 5}


def render(opts: argparse.Namespace, search: list[str], cwd: Path) -> str:
    """The sbatch script for `petl-submit slurm` options and the search's own (checked) arguments."""
    if opts.nodes < 1 or opts.stop_before < 0:
        raise SearchError(f"--nodes must be >= 1 and --stop-before >= 0, got {opts.nodes} and {opts.stop_before}")
    argv = check_batch_args(search, cwd)
    if any(a == "--address" or a.startswith("--address=") for a in argv):
        raise SearchError("leave --address out after `--`: the job starts its own Ray cluster over its nodes")
    name = argv[argv.index("--name") + 1] if "--name" in argv else next(a.split("=", 1)[1] for a in argv
                                                                         if a.startswith("--name="))
    logs = Path(os.path.expanduser(_storage(argv))).resolve() / "slurm-logs"
    sbatch = [f"--job-name={opts.job_name or 'petl-' + name}", f"--nodes={opts.nodes}", "--ntasks-per-node=1",
              *([f"--cpus-per-task={opts.cpus_per_node}"] if opts.cpus_per_node else []),
              *([f"--gpus-per-node={opts.gpus_per_node}"] if opts.gpus_per_node else []),
              *([f"--time={opts.time}"] if opts.time else []),
              *([f"--partition={opts.partition}"] if opts.partition else []),
              *([f"--account={opts.account}"] if opts.account else []),
              "--requeue", "--open-mode=append", f"--output={logs}/%x-%j.out", f"--chdir={cwd}",
              f"--signal=B:INT@{opts.stop_before}", *opts.sbatch]
    root = Path(__file__).resolve().parents[1]
    py, nodes = shlex_q(opts.python), opts.nodes
    lines = ["#!/bin/bash", *(f"#SBATCH {s}" for s in sbatch),
             f"# petl-submit slurm: the search {name!r} on a private Ray cluster over {nodes} node(s); a requeued or",
             "# re-submitted job resumes it. Exit code: petl-search's (petl-search --help).",
             "set -uo pipefail",
             f"PY={py}",
             *([f"export PYTHONPATH={shlex_q(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}"]
               if (root / "pyproject.toml").exists() else []),
             "export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0",
             "export RAY_AUTH_TOKEN=\"$(\"$PY\" -c 'import secrets; print(secrets.token_hex(32))')\"",
             "export PETL_RAY_BASE=$(( 20000 + (SLURM_JOB_ID % 800) * 50 ))",
             "mapfile -t NODES < <(scontrol show hostnames \"$SLURM_JOB_NODELIST\")",
             "HEAD=\"$(\"$PY\" -m search.submit node-ip \"${NODES[0]}\"):$PETL_RAY_BASE\"",
             "[ \"${HEAD%%:*}\" ] || { echo \"error: no address for node ${NODES[0]}\"; exit 5; }",
             "STEPS=()",
             "srun --overlap --nodes=1 --ntasks=1 -w \"${NODES[0]}\" \"$PY\" -m search.submit ray-node --head &",
             "STEPS+=($!)",
             *([f"srun --overlap --nodes={nodes - 1} --ntasks={nodes - 1} --ntasks-per-node=1 -x \"${{NODES[0]}}\" "
                "\"$PY\" -m search.submit ray-node --head-address \"$HEAD\" --first-index 1 &", "STEPS+=($!)"]
               if nodes > 1 else []),
             "# SIGTERM to the Ray steps' tasks (a signal to srun itself would SIGKILL them): each ends its node and",
             "# removes its temp dir.",
             "stop_ray() {",
             "  for step in $(squeue -h -s -j \"$SLURM_JOB_ID\" -o %i | grep -v -e '\\.batch$' -e '\\.extern$'); do",
             "    scancel --signal=TERM \"$step\"",
             "  done",
             "  wait \"${STEPS[@]}\" 2>/dev/null",
             "}",
             f"\"$PY\" -m search.submit wait-nodes --address \"$HEAD\" --nodes {nodes} --timeout {opts.node_timeout}"
             " || { code=$?; stop_ray; exit $code; }",
             f"\"$PY\" -m search.submit run -- {shell_join(argv)} --address \"$HEAD\" &",
             "DRIVER=$!",
             "# SLURM's --signal=B:INT reaches this shell only: pass it on; the driver saves its state and stops.",
             "trap 'kill -INT \"$DRIVER\" 2>/dev/null' INT TERM",
             "while true; do wait \"$DRIVER\"; code=$?; kill -0 \"$DRIVER\" 2>/dev/null || break; done",
             "stop_ray",
             "exit $code", ""]
    return "\n".join(lines)


def shlex_q(word: str) -> str:
    return shell_join([word])


def _storage(argv: list[str]) -> str:
    return search_args(argv).storage.removeprefix("file://")


def submit_slurm(opts: argparse.Namespace, search: list[str]) -> int:
    script = render(opts, search, Path.cwd())
    if opts.dry_run:
        print(script, end="")
        return 0
    logs = next(line.split("=", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH --output="))
    Path(logs).parent.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SearchError("sbatch not found: run petl-submit slurm on a SLURM login node (or --dry-run to see the "
                          "script)") from None
    if out.returncode:
        raise SearchError(f"sbatch refused the job: {out.stderr.strip().splitlines()[-1] if out.stderr else out}")
    job = out.stdout.strip().split(";")[0]
    name = next(line.split("=", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH --job-name="))
    print(f"submitted SLURM job {job}; log: {logs.replace('%x', name).replace('%j', job)}")
    return 0


def node_ip(name: str) -> str:
    """The IPv4 address of SLURM node `name`: its NodeAddr (what slurmd listens on), else its host name resolved."""
    addr = name
    try:
        out = subprocess.run(["scontrol", "show", "node", name, "-o"], capture_output=True, text=True, timeout=30)
        fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
        addr = fields.get("NodeAddr", name)
    except (OSError, subprocess.SubprocessError):
        pass
    return socket.gethostbyname(addr)


def ray_node(head: bool, head_address: str | None, first_index: int = 0) -> int:
    """Run one Ray node of the job (inside an srun step) until SIGTERM; then end it and remove its temp dir.
    Its index in the job is `first_index` + its node's index in the step (SLURM_NODEID counts within a step)."""
    job, index = int(os.environ["SLURM_JOB_ID"]), first_index + int(os.environ.get("SLURM_NODEID", "0"))
    base = int(os.environ.get("PETL_RAY_BASE", base_port(job)))
    ip = node_ip(os.environ.get("SLURMD_NODENAME", socket.gethostname()))
    temp = Path(f"/tmp/petl-ray-{job}-{index}")  # short: Ray's socket paths must fit 107 characters
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats", f"--temp-dir={temp}",
           f"--node-ip-address={ip}", *(f"--{k}={v}" for k, v in ports(base, index).items())]
    if os.environ.get("SLURM_CPUS_ON_NODE"):
        cmd.append(f"--num-cpus={os.environ['SLURM_CPUS_ON_NODE']}")
    if os.environ.get("SLURM_GPUS_ON_NODE"):
        cmd.append(f"--num-gpus={os.environ['SLURM_GPUS_ON_NODE']}")
    cmd += ["--head", f"--port={base}", f"--ray-client-server-port={base + 1}", "--include-dashboard=false"] \
        if head else [f"--address={head_address}"]
    # The job script stops its Ray steps only once the search has ended, and `scancel --signal=TERM` reaches every
    # process of the step, the head's GCS included: Ray's drain on SIGTERM would then wait its whole timeout (30 s by
    # default) for a GCS that is gone, holding the allocation for nothing. A value the user exported still wins.
    proc = subprocess.Popen(cmd, env={"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **os.environ})
    stop = lambda signum, frame: proc.send_signal(signal.SIGTERM)  # `ray start --block` then ends its node
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = proc.wait()
    shutil.rmtree(temp, ignore_errors=True)
    return code


def wait_nodes(address: str, nodes: int, timeout_s: float) -> int:
    """Wait until the Ray cluster at `address` has `nodes` alive nodes; 0, or 5 (cluster lost) after timeout_s."""
    host, _, port = address.rpartition(":")
    deadline = time.time() + timeout_s
    while reachable(host, int(port), 2.0) is not None:
        if time.time() > deadline:
            print(f"error: the Ray head at {address} did not start within {timeout_s:g} s")
            return CLUSTER_LOST
        time.sleep(1.0)
    # deferred on purpose: wait-nodes runs in the job script before Ray is needed; only the final check asks Ray
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        while (alive := sum(n["Alive"] for n in ray.nodes())) < nodes:
            if time.time() > deadline:
                print(f"error: {alive} of {nodes} Ray nodes joined {address} within {timeout_s:g} s")
                return CLUSTER_LOST
            time.sleep(1.0)
    finally:
        ray.shutdown()
    print(f"Ray cluster at {address}: {nodes} node(s) up", flush=True)
    return 0
