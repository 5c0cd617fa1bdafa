"""Every benchmark script still runs: each one's `--smoke` mode (tiny, generated or packaged data, no network, no
shared data folder), one after the other in fresh processes, as `python benchmarks/<script>.py --smoke`.

One test, so the suite pays the imports once per script and a reader sees the whole list here. A smoke checks that
the code paths run and print what the full run prints; the numbers themselves are measured by the full runs, whose
commands the results files state.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smokes(tmp: Path) -> list[tuple[str, list[str], list[str]]]:
    """(script, extra arguments, lines its output must contain)."""
    return [
        ("bench_analysis.py", [], ["pareto_mask + hypervolume(1,000)", "load_search(12 runs, sqlite)"]),
        ("budget_draws.py", [], ["tpe   over-budget trials per 50: [", "nsga2 over-budget trials per 50: ["]),
        ("help_time.py", [], ["search.run"]),
        ("bench_petl.py", [], ["## target checks", "[bart] our LoRA <= 1.05x PEFT LoRA"]),
        ("gpu_check.py", ["--skip-deepspeed", "--parity-steps", "3", "--out", str(tmp / "gpu")], ["wrote "]),
        ("bench_sst2.py", [], ["- lora (", "- peft_lora (", "our LoRA accuracy within one point of PEFT's"]),
        ("replay_search.py", [], ["to train", "[1/1] ", "| none | 1 |", "| pareto | 1 |"]),
        ("grid_report.py", [], ["8 trials, ", "summary.md"]),
        ("bench_search.py", [], ["| none | 2 |"]),
        ("bench_orchestration.py", [], ["tiny: 2 trials", "### Per-trial latencies", "| tiny | 2 | "]),
    ]


def _children_cpu() -> float:
    """CPU seconds of finished child processes (the smoke and whatever it waited for; Ray's daemons are not waited
    for, so a search's Ray start is missing): what a smoke costs whatever else runs on the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_every_benchmark_smoke_runs(tmp_path):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PETL_SST2_DIR": ""}  # no shared data, ever
    env.pop("PETL_SPANS", None)
    failures, seconds = [], {}
    for script, extra, expected in smokes(tmp_path):
        t0, cpu0 = time.perf_counter(), _children_cpu()
        proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--smoke", *extra], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        seconds[script] = (round(time.perf_counter() - t0, 1), round(_children_cpu() - cpu0, 1))
        out = proc.stdout + proc.stderr
        missing = [line for line in expected if line not in out]
        if proc.returncode or missing:
            failures.append(f"{script}: rc {proc.returncode}, missing {missing}\n{out[-3000:]}")
    print(f"smoke seconds (wall, CPU of its processes): {seconds}")
    assert not failures, "\n\n".join(failures)
    parity = json.loads((tmp_path / "gpu" / "gpu_check.json").read_text())["parity"]
    assert parity["pass"], parity  # CPU against CPU: the same seed, weights and batches give the same losses
