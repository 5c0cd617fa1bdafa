"""Seconds until `--help` prints, for each command, in this checkout and in another commit side by side.

    python benchmarks/help_time.py --before main --repeats 5
    python benchmarks/help_time.py --smoke    # petl-search --help once, HEAD vs this checkout: does it still run?

The other commit is exported with `git archive` into a temporary folder (no worktree is created); each command runs as
`python -m MODULE --help` with that tree first on PYTHONPATH, alternating the two trees run by run so machine noise
hits both alike. Median wall seconds, process start included (what a user waits).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("search.run", "finetune.count", "finetune.trial", "analysis.report", "search.reevaluate")


def export(ref: str, into: Path) -> Path:
    archive = into / "tree.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", ref], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def seconds(tree: Path, module: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, "--help"], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="main", help="commit or branch to compare with (default: main)")
    p.add_argument("--repeats", type=int, default=5, help="runs per command and tree (default: 5)")
    p.add_argument("--smoke", action="store_true", help="one command, once, against HEAD")
    args = p.parse_args()
    commands = COMMANDS
    if args.smoke:
        args.before, args.repeats, commands = "HEAD", 1, COMMANDS[:1]
    with tempfile.TemporaryDirectory() as tmp:
        before = export(args.before, Path(tmp))
        print(f"{'command --help':<22}{args.before + ' (s)':>14}{'this checkout (s)':>20}{'ratio':>8}")
        for module in commands:
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.repeats):
                times["before"].append(seconds(before, module))
                times["after"].append(seconds(ROOT, module))
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"{module:<22}{b:>14.2f}{a:>20.2f}{b / a:>8.1f}x")


if __name__ == "__main__":
    main()
