"""The Ray cluster a search runs on: reach it in seconds or say why not, and check that a trial fits its nodes.

`--address` is checked with a short TCP connect before anything is created (no MLflow run, no search folder): before,
a wrong address retried for over five minutes after the parent run was already RUNNING. Multi-worker trials are
checked against the nodes' resources once connected: before, a trial that could not be placed waited forever and
printed nothing. While the search runs, `gcs_alive` tells a lost cluster (the head died) from a finished search.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from search.names import SearchError

CONNECT_TIMEOUT_S = 5.0
CLIENT_PORT = 10001  # Ray Client's default port (`ray://host` without one)


def split_address(address: str) -> tuple[str, str, int] | None:
    """('gcs' | 'client', host, port) of `host:port` or `ray://host[:port]`; None for `auto` (Ray resolves it from
    RAY_ADDRESS or the cluster started on this machine). Raises SearchError for anything else."""
    if address == "auto":
        return None
    scheme, rest = ("client", address.removeprefix("ray://")) if address.startswith("ray://") else ("gcs", address)
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep and scheme == "client":
        host, port = rest.rstrip("/"), str(CLIENT_PORT)
    if "://" in address and scheme != "client" or not host or not port.isdigit():
        raise SearchError(f"--address must be host:port (the head's GCS, as `ray start --head` prints it), "
                          f"ray://host[:port] (Ray Client) or auto, got {address!r}")
    return scheme, host.strip("[]"), int(port)


def reachable(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to host:port opens within timeout_s, else the reason (one short phrase)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"


def check_address(address: str | None) -> None:
    """Fail in seconds, with one line, when --address cannot be a Ray cluster we can join (before anything exists)."""
    if address is None:
        return
    parts = split_address(address)
    if parts is None:
        return
    scheme, host, port = parts
    if scheme == "client":
        try:  # what ray:// needs beyond the base install: grpcio (ray[client])
            import grpc  # noqa: F401
            import ray.util.client.ray_client_helpers  # noqa: F401
        except ImportError:
            raise SearchError(f"--address {address!r} uses Ray Client, which needs `pip install "
                              "'petl-search[cluster]'` (ray[client]); or pass the head's GCS address host:port "
                              "when this machine is a node of the cluster") from None
    why = reachable(host, port)
    if why is not None:
        what = "Ray Client server (`ray start --head --ray-client-server-port`)" if scheme == "client" else \
            "Ray head's GCS (`ray start --head --port`)"
        raise SearchError(f"--address {address!r}: nothing answers at {host}:{port} within {CONNECT_TIMEOUT_S:g} s "
                          f"({why}); start the {what} there, or fix the address")


@dataclass(frozen=True)
class Bundle:
    """What one Ray Train worker of a trial asks for."""

    cpu: float
    gpu: float

    def fits(self, resources: Mapping[str, float]) -> int:
        """How many such workers a node with these total resources holds."""
        counts = [int(resources.get(key, 0.0) / need + 1e-9) for key, need in (("CPU", self.cpu), ("GPU", self.gpu))
                  if need > 0]
        return min(counts) if counts else 1 << 30


def worker_bundle(cpus_per_trial: float, gpus_per_trial: float, workers: int) -> Bundle:
    """The per-worker request `search.trainable._run_distributed` makes (CPUs split over workers, GPUs per worker)."""
    return Bundle(cpu=max(cpus_per_trial / workers, 0.01), gpu=gpus_per_trial)


def check_placement(nodes: Iterable[Mapping[str, Any]], cpus_per_trial: float, gpus_per_trial: float,
                    workers: int) -> None:
    """Raise SearchError naming the shortfall when one trial cannot be placed on the cluster's alive nodes.

    `nodes` are `ray.nodes()` records. One trial of `workers` Ray Train workers needs `workers` bundles spread over
    the nodes (Ray packs them where they fit); a single-worker trial needs one node with its CPUs and GPUs.
    """
    alive = [n for n in nodes if n.get("Alive", n.get("alive", True))]
    bundle = worker_bundle(cpus_per_trial, gpus_per_trial, workers) if workers > 1 else \
        Bundle(cpu=cpus_per_trial, gpu=gpus_per_trial)
    held = [bundle.fits(n.get("Resources", {})) for n in alive]
    if sum(held) >= workers:
        return
    sizes = "; ".join(f"{n.get('NodeManagerAddress', '?')}: {_fmt(n.get('Resources', {}))}" for n in alive)
    need = f"{workers} worker{'s' if workers > 1 else ''} of {bundle.cpu:g} CPU" + (
        f" + {bundle.gpu:g} GPU" if bundle.gpu else "") + " each"
    raise SearchError(f"a trial cannot be placed: it needs {need} (--workers-per-trial {workers}, --cpus-per-trial "
                      f"{cpus_per_trial:g}, --gpus-per-trial {gpus_per_trial:g}), and the cluster's {len(alive)} "
                      f"node{'s' if len(alive) != 1 else ''} hold {sum(held)} ({sizes}); lower the per-trial "
                      "resources or add nodes")


def _fmt(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def gcs_alive(gcs_address: str | None) -> bool:
    """Whether the cluster's head still answers (a TCP connect to its GCS); True when there is nothing to ask."""
    if not gcs_address:
        return True
    host, _, port = gcs_address.rpartition(":")
    return reachable(host, int(port), timeout_s=3.0) is None


def watch_cluster(gcs_address: str | None, on_lost: Any, every_s: float = 5.0, misses: int = 3) -> Any:
    """Probe the head every `every_s` seconds from a daemon thread; after `misses` failed probes in a row call
    `on_lost()` (which records the loss and ends the process). Returns a threading.Event that stops the watch.

    Why a thread: when the head dies, Ray's core worker ends the driver process by itself once its GCS reconnect
    timeout passes (before: exit 0 about a minute later, the parent left RUNNING), so no code after `tuner.fit()`
    would run. The CLI sets that timeout (RAY_gcs_rpc_server_reconnect_timeout_s) well above misses x every_s.
    """
    stop = threading.Event()

    def run() -> None:
        missed = 0
        while not stop.wait(every_s):
            missed = 0 if gcs_alive(gcs_address) else missed + 1
            if missed >= misses:
                on_lost()
                return

    if gcs_address:
        threading.Thread(target=run, name="petl-cluster-watch", daemon=True).start()
    return stop
