"""Other work on this machine, which skews a timing: detect it, wait it out, or re-run what it disturbed.

Two grains, for two kinds of benchmark:
- `ContentionGuard` (in-process, per step): from /proc/stat, the CPU time other processes used during one timed
  step; a disturbed step is re-run (bench_petl.py, whose steps last milliseconds).
- `wait_for_quiet` (between whole runs): wait until no other benchmark runs and no other process is busy
  (bench_sst2.py, whose runs last minutes and start in a fresh process each).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable


class ContentionGuard:
    """Keeps steps that other processes slowed down out of the timings.

    On this 2-core machine one competing process costs 2-thread OpenMP kernels 10-20x (measured: an elementwise op on
    1 MB took 41 us quiet, 1.2 ms next to one busy process), so a contended step is not noise around the truth but a
    different measurement. From /proc/stat, the CPU time that *other* processes used during a step is the machine's
    busy time minus this process's own CPU time (os.times). A step during which others used more than
    `allow_s` + `allow_frac` x its wall time is re-run (at most `retries` times); before a step the guard waits,
    sleeping, until a 0.2 s window is quiet. Waiting and re-runs draw on one time budget; once it is spent, steps are
    kept as measured and counted as contended. Without /proc/stat (not Linux) the guard does nothing.
    """

    def __init__(self, budget_s: float, retries: int = 3, allow_s: float = 0.03, allow_frac: float = 0.05) -> None:
        self.enabled = os.path.exists("/proc/stat")
        self.hz = os.sysconf("SC_CLK_TCK") if self.enabled else 100
        self.budget, self.retries, self.allow_s, self.allow_frac = budget_s, retries, allow_s, allow_frac
        self.rerun = self.kept_busy = 0
        self.waited = 0.0

    def snapshot(self) -> tuple[float, float, float]:
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        t = os.times()
        return time.perf_counter(), (sum(v) - v[3] - v[4]) / self.hz, t.user + t.system

    def foreign(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float]:
        """(wall seconds, CPU seconds used by other processes) between two snapshots."""
        return b[0] - a[0], (b[1] - a[1]) - (b[2] - a[2])

    def contended(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
        wall, other = self.foreign(a, b)
        return other > self.allow_s + self.allow_frac * wall

    def wait_quiet(self) -> None:
        while self.enabled and self.budget > 0:
            a = self.snapshot()
            time.sleep(0.2)
            b = self.snapshot()
            if self.foreign(a, b)[1] <= 0.04:  # under 10 % of the two cores
                return
            self.budget -= b[0] - a[0]
            self.waited += b[0] - a[0]

    def step(self, run: Callable[[], None]) -> tuple[float, bool]:
        """(seconds, contended) of one step, re-run while contended and the budget lasts."""
        for attempt in range(self.retries + 1):
            self.wait_quiet()
            a = self.snapshot() if self.enabled else None
            t0 = time.perf_counter()
            run()
            dt = time.perf_counter() - t0
            if a is None or not self.contended(a, self.snapshot()):
                return dt, False
            if attempt == self.retries or self.budget <= 0:
                break
            self.rerun += 1
            self.budget -= dt
        self.kept_busy += 1
        return dt, True

    def summary(self, min_clean: int) -> str:
        if not self.enabled:
            return "contention guard: off (no /proc/stat)"
        return (f"contention guard: {self.rerun} steps re-run, waited {self.waited:.0f}s for quiet, "
                f"{self.kept_busy} timed steps flagged contended (left out of the statistics when a candidate has "
                f">= {min_clean} clean ones)")


def others_running(me: str) -> list[str]:
    """Other benchmarks/bench_* processes than the script named `me`."""
    out = subprocess.run(["pgrep", "-af", "benchmarks/bench_"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip() and me not in line]


def busy_processes(me: str, threshold: float = 20.0) -> list[str]:
    """Processes outside this benchmark using more than `threshold`% CPU right now (ps: lifetime average, so a
    second sample 4 s apart decides, at 1 s resolution)."""
    def sample() -> dict[str, tuple[float, str]]:
        out = subprocess.run(["ps", "-eo", "pid=,ppid=,times=,args="], capture_output=True, text=True,
                             check=False).stdout
        rows = {}
        for line in out.splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[2].isdigit():
                rows[parts[0]] = (float(parts[2]), parts[3])
        return rows

    mine = {str(os.getpid())}
    a = sample()
    time.sleep(4.0)
    b = sample()
    busy = []
    for pid, (cpu_s, cmd) in b.items():
        if pid in mine or me in cmd or pid not in a:
            continue
        if 100 * (cpu_s - a[pid][0]) / 4.0 > threshold:
            busy.append(f"{pid} {cmd[:80]}")
    return busy


def wait_for_quiet(me: str, poll: float = 20.0, settle_max: float = 600.0) -> float:
    """Wait until no other benchmarks/bench_* process runs, then (at most `settle_max` s more) until no other process
    is busy: what a benchmark leaves behind (Ray workers, subprocesses) can keep the cores busy after it exits."""
    waited, t0 = False, time.time()
    while others := others_running(me):
        if not waited:
            print(f"  waiting for other benchmarks: {others}", flush=True)
            waited = True
        time.sleep(poll)
    t1 = time.time()
    while (busy := busy_processes(me)) and time.time() - t1 < settle_max:
        print(f"  waiting for busy processes to settle: {busy}", flush=True)
        time.sleep(poll)
    return time.time() - t0
