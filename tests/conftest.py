"""Shared test set-up: offline, quiet, deterministic; `gpu` tests skip without CUDA."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# Ray re-nices its worker processes (the trials) by +15: on a machine shared with low-priority work (a nice-19 study)
# the suite's trials would compete with it as equals instead of running at the suite's own priority. Asserted nowhere.
os.environ.setdefault("RAY_worker_niceness", "0")
# One intra-op thread, here and in every subprocess the tests start: the models are tiny (d = 32..64), so a step is
# hundreds of microsecond-long ops, and with a second OpenMP thread each op waits at a barrier for a thread that
# another process (a Ray trial, a second benchmark script, a shared machine's load) holds: test_loop's en-ro test
# took 446 s with torch's default 2 threads on a loaded 2-core machine and 6.8 s with one. Trials set their own
# (search/trainable.py: one per CPU of the trial).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def ray_shutdown_after_module():
    """One local Ray for a module's real searches (the first starts it), shut down when the module is done so the
    next module's searches start their own."""
    yield
    import ray

    ray.shutdown()
