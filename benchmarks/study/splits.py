"""The data a tier trains, selects and scores on, as local folders the product's loader reads (`data_dir`).

The training loop reads a task's "train" and "validation" files from one folder and evaluates on "validation" every
`eval_every` steps. A tier therefore gets a derived folder holding its training rows and its *selection* split as the
loop's validation file; the final split (the task's real dev set) stays in the source folder and is scored once per
run, after training, by the product's `evaluate`.

SST-2 has no held-out training sample, so the selection split is carved out of train.tsv: `carve_from_train` rows
drawn with a fixed seed, and every training row whose sentence is textually identical to a drawn one is dropped from
training (train.tsv holds 248 repeated sentences), so no selection sentence is trained on. SST-2's train rows are
phrases of the same movie reviews, so a selection phrase can still be part of a longer training phrase: the split is
disjoint in rows and in exact text, not in reviews, and it only picks learning rates. MNLI ships a disjoint held-out
sample of its train split, used as is. The selection file is sorted by length (its score does not depend on order,
and length-sorted evaluation batches pad little). Derived folders are named by a hash of their inputs and written
atomically, so tiers and reruns share them and a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TierData:
    train_dir: Path  # the loop's data_dir: train + selection (as the task's validation file)
    final_dir: Path  # the source folder: the task's validation file there is the final split
    fingerprint: dict[str, str]  # sha256 of the training, selection and final files
    rows: dict[str, int]  # row counts of the three


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        return header, [r for r in reader if r]


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _words(text: str) -> int:
    return len(text.split())


def carve_tsv(src: Path, out: Path, n: int, seed: int, train_name: str, selection_name: str) -> None:
    """Write `train_name` (src minus the drawn rows and their textual duplicates) and `selection_name` under out."""
    header, rows = _read_tsv(src)
    if not 0 < n < len(rows):
        raise ValueError(f"carve_from_train must be between 1 and {len(rows) - 1} rows of {src}, got {n}")
    drawn = sorted(np.random.default_rng(seed).choice(len(rows), size=n, replace=False).tolist())
    texts = {rows[i][0] for i in drawn}
    selection = sorted((rows[i] for i in drawn), key=lambda r: _words(r[0]))  # stable: ties keep file order
    train = [r for r in rows if r[0] not in texts]
    _write_tsv(out / train_name, header, train)
    _write_tsv(out / selection_name, header, selection)


def copy_jsonl(train: Path, selection: Path, out: Path, train_name: str, selection_name: str) -> None:
    shutil.copyfile(train, out / train_name)
    rows = [json.loads(line) for line in selection.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows.sort(key=lambda r: sum(_words(str(v)) for k, v in r.items() if k != "label"))
    (out / selection_name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                      encoding="utf-8")


def _count_rows(path: Path) -> int:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return len(lines) - (1 if path.suffix == ".tsv" else 0)


def prepare(tier: dict[str, Any], data_root: Path, work: Path) -> TierData:
    """The tier's derived training folder under `work/data/` (made once) and the fingerprints of its three files."""
    spec = tier["data"]
    src_dir = data_root / spec["dir"]
    train_src, final = src_dir / spec["train"], src_dir / spec["final"]
    for path in (train_src, final):
        if not path.is_file():
            raise FileNotFoundError(f"tier data file {path} is missing; pass --data-root with the folder that "
                                    f"holds {spec['dir']}/ (here: /work/shared/data)")
    sel = spec["selection"]
    carve = isinstance(sel, dict)
    inputs = {"train": sha256(train_src), "selection": sel if carve else sha256(src_dir / sel)}
    tag = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    out = work / "data" / f"{spec['dir']}-{tag}"
    suffix = train_src.suffix
    train_name, selection_name = f"train{suffix}", f"validation{suffix}"  # the loop's generic file names
    if not (out / selection_name).is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".tmp"))
        if carve:
            carve_tsv(train_src, tmp, int(sel["carve_from_train"]), int(sel["seed"]), train_name, selection_name)
        else:
            copy_jsonl(train_src, src_dir / sel, tmp, train_name, selection_name)
        try:
            os.rename(tmp, out)
        except OSError:  # another runner made it first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    files = {"train": out / train_name, "selection": out / selection_name, "final": final}
    return TierData(out, src_dir, {k: sha256(p) for k, p in files.items()}, {k: _count_rows(p) for k, p in files.items()})
