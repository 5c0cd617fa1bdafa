"""Where the benchmarks' SST-2 sample is, and a generated stand-in for `--smoke` runs.

The real-data scripts (bench_sst2, bench_search, replay_search table, grid_report) read an SST-2 folder holding
`train.tsv` and `dev.tsv` (GLUE's format: a `sentence<TAB>label` header, then rows) from `--data-dir`, defaulting to
the environment variable PETL_SST2_DIR. `--smoke` runs write `smoke_sst2` instead: a few dozen generated sentences
whose label a bag of words decides, so a few steps of training run anywhere in seconds.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

ENV = "PETL_SST2_DIR"
_GOOD = ("charming", "moving", "sharp", "funny", "tender", "brilliant", "warm", "gripping")
_BAD = ("dull", "bleak", "clumsy", "tedious", "hollow", "shrill", "stale", "messy")
_FILLER = ("the film is", "a story that feels", "its cast is", "the script stays", "every scene looks")


def add_data_dir(ap: argparse.ArgumentParser, required_for: str) -> None:
    """`--data-dir`, defaulting to $PETL_SST2_DIR; `required_for` says which runs need it (in --help)."""
    ap.add_argument("--data-dir", default=os.environ.get(ENV) or None,
                    help=f"the SST-2 folder (train.tsv, dev.tsv) {required_for}; default: ${ENV}")


def require_data_dir(data_dir: str | Path | None) -> Path:
    """The folder, or one line naming the rule, the value and the fix."""
    if not data_dir:
        raise SystemExit(f"--data-dir: an SST-2 folder with train.tsv and dev.tsv is required, got none; pass "
                         f"--data-dir DIR or set {ENV}, or run --smoke (generated data)")
    path = Path(data_dir)
    missing = [n for n in ("train.tsv", "dev.tsv") if not (path / n).is_file()]
    if missing:
        raise SystemExit(f"--data-dir: {path} must hold train.tsv and dev.tsv, missing {missing}; pass the folder "
                         "of the GLUE SST-2 files")
    return path


def smoke_sst2(folder: str | Path, train_rows: int = 96, dev_rows: int = 32, seed: int = 0) -> Path:
    """Write a generated SST-2 sample (GLUE format) into `folder`; returns it."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        lines = ["sentence\tlabel"]
        for i in range(rows):
            label = i % 2
            words = rng.sample(_GOOD if label else _BAD, 2)
            lines.append(f"{rng.choice(_FILLER)} {words[0]} and {words[1]} . \t{label}")
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder
