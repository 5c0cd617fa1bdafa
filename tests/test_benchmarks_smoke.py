"""Every benchmark script still runs: each one's `--smoke` mode (tiny, generated or packaged data, no network, no
shared data folder), two at a time, each in a fresh process, as `python benchmarks/<script>.py --smoke`.

One test, so the suite pays the imports once per script and a reader sees the whole list here. A smoke checks that
the code paths run and print what the full run prints; the numbers themselves are measured by the full runs, whose
commands the results files state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smokes(tmp: Path) -> list[tuple[str, list[str], list[str]]]:
    """(script, extra arguments, lines its output must contain), the longest first (so the two-at-a-time runs end
    together): the three whole searches, then the trainings, then the seconds-long ones."""
    return [
        ("bench_orchestration.py", [], ["tiny: 2 trials", "### Per-trial latencies", "| tiny | 2 | "]),
        ("bench_search.py", [], ["| none | 2 |"]),
        ("replay_search.py", [], ["to train", "[1/1] ", "| none | 1 |", "| pareto | 1 |"]),
        ("bench_petl.py", [], ["## target checks", "[bart] our LoRA <= 1.05x PEFT LoRA"]),
        ("gpu_check.py", ["--skip-deepspeed", "--parity-steps", "3", "--out", str(tmp / "gpu")], ["wrote "]),
        ("bench_sst2.py", [], ["- lora (", "- peft_lora (", "our LoRA accuracy within one point of PEFT's"]),
        ("grid_report.py", [], ["8 trials, ", "summary.md"]),
        ("bench_analysis.py", [], ["pareto_mask + hypervolume(1,000)", "load_search(12 runs, sqlite)"]),
        ("budget_draws.py", [], ["tpe   over-budget trials per 50: [", "nsga2 over-budget trials per 50: ["]),
        ("help_time.py", [], ["search.run"]),
    ]


def run_smoke(script: str, extra: list[str], env: dict, log: Path) -> tuple[int, str, float, float]:
    """(exit code, output, wall seconds, CPU seconds of the script's process and the children it waited for; Ray's
    daemons are not waited for, so a search's Ray start is missing) of `python benchmarks/<script> --smoke`."""
    t0 = time.perf_counter()
    with open(log, "w+", encoding="utf-8", errors="replace") as out:
        proc = subprocess.Popen([sys.executable, f"benchmarks/{script}", "--smoke", *extra], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(600, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this process's own rusage, whatever runs beside it
        finally:
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return proc.returncode, text, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_every_benchmark_smoke_runs(tmp_path):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PETL_SST2_DIR": ""}  # no shared data, ever
    env.pop("PETL_SPANS", None)
    runs = smokes(tmp_path)
    # Two at a time: most of a smoke is single-threaded imports and Ray's start, so a second core would sit idle;
    # each script still runs alone in its own process and folder, its output checked as before.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda r: run_smoke(r[0], r[1], env, tmp_path / f"{r[0]}.log"), runs))
    failures, seconds = [], {}
    for (script, _, expected), (code, out, wall, cpu) in zip(runs, done):
        seconds[script] = (round(wall, 1), round(cpu, 1))
        missing = [line for line in expected if line not in out]
        if code or missing:
            failures.append(f"{script}: rc {code}, missing {missing}\n{out[-3000:]}")
    print(f"smoke seconds (wall, CPU of its processes): {seconds}")
    assert not failures, "\n\n".join(failures)
    parity = json.loads((tmp_path / "gpu" / "gpu_check.json").read_text())["parity"]
    assert parity["pass"], parity  # CPU against CPU: the same seed, weights and batches give the same losses
