"""The study runner end to end on a generated SST-2-shaped folder: real MiniLM runs of 2 steps, a resumable table."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from benchmarks.study import run_study, splits
from benchmarks.study.table import read_rows

WORDS_POS, WORDS_NEG = ("good", "fine", "warm", "bright"), ("bad", "dull", "cold", "ugly")


def _sst2_folder(root: Path, n_train: int = 240, n_dev: int = 24) -> Path:
    rng = random.Random(0)
    folder = root / "sst2"
    folder.mkdir(parents=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        with open(folder / name, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
            w.writerow(["sentence", "label"])
            for i in range(n):
                label = i % 2
                words = rng.choices(WORDS_POS if label else WORDS_NEG, k=rng.randint(1, 6)) + ["film"]
                w.writerow([" ".join(words) + " ", label])
    return root


def _tier(tmp_path: Path) -> dict:
    return {"task": "sst2", "table": "unused", "device": "cpu",
            "data": {"dir": "sst2", "train": "train.tsv", "selection": {"carve_from_train": 40, "seed": 0},
                     "final": "dev.tsv"},
            "train": {"max_steps": 2, "eval_every": 1, "batch_size": 8, "max_length": 16, "group_by_length": True},
            "seeds": [1, 2], "designs": {"head_only": [1e-3, 3e-2]}}


def test_the_selection_split_is_disjoint_from_training_in_rows_and_text(tmp_path: Path) -> None:
    root = _sst2_folder(tmp_path)
    data = splits.prepare(_tier(tmp_path), root, tmp_path / "work")
    _, train = splits._read_tsv(data.train_dir / "train.tsv")
    _, selection = splits._read_tsv(data.train_dir / "validation.tsv")
    assert len(selection) == 40 and not {r[0] for r in train} & {r[0] for r in selection}
    _, source = splits._read_tsv(root / "sst2" / "train.tsv")
    dropped = [r for r in source if r[0] in {s[0] for s in selection}]  # drawn rows and their textual duplicates
    assert len(train) == len(source) - len(dropped) and len(dropped) >= 40
    assert [len(r[0].split()) for r in selection] == sorted(len(r[0].split()) for r in selection)
    assert data.rows == {"train": len(train), "selection": 40, "final": 24}
    again = splits.prepare(_tier(tmp_path), root, tmp_path / "work")  # derived once, found again by its inputs
    assert again == data


@pytest.mark.slow
def test_the_runner_trains_the_protocol_and_resumes_from_its_table(tmp_path: Path) -> None:
    root, work, table = _sst2_folder(tmp_path), tmp_path / "work", tmp_path / "table.jsonl"
    tier = run_study.Tier("t", _tier(tmp_path), smoke=False, only=None)
    data = splits.prepare(tier.spec, root, work)
    assert run_study.run_tier(tier, table, data, work, workers=1, threads=1, max_jobs=None) == 0
    rows = read_rows(table)
    assert [(r["lr"], r["seed"], r["role"]) for r in rows][:2] == [(1e-3, 1, "lr-grid"), (3e-2, 1, "lr-grid")]
    kept = max(rows[:2], key=lambda r: (r["selection"]["score"], -r["selection"]["eval_loss"], -r["lr"]))["lr"]
    assert [(r["lr"], r["seed"], r["role"]) for r in rows[2:]] == [(kept, 2, "replicate")]
    for r in rows:
        assert r["status"] == "finished" and r["fraction"] == 0.0 and r["counts"]["trainable"] == 148_610
        assert list(r["selection"]["curve"]) == ["1", "2"] and r["final"]["rows"] == 24
        assert r["train"]["group_by_length"] is True and r["data"] == data.fingerprint
    assert run_study.run_tier(tier, table, data, work, 1, 1, None) == 0
    assert len(read_rows(table)) == 3  # everything the table holds is skipped
    table.write_text("".join(line + "\n" for line in table.read_text().splitlines()[:2]))  # lose the last row
    assert run_study.run_tier(tier, table, data, work, 1, 1, None) == 0
    again = read_rows(table)
    assert len(again) == 3 and again[2]["key"] == rows[2]["key"]
    assert again[2]["final"]["score"] == rows[2]["final"]["score"]  # same seed, same batches: the same run
    assert not list((work / "runs").rglob("*.safetensors"))  # finished runs leave no checkpoint behind


def test_the_command_refuses_bad_input_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_study.main(["--tier", "sst3"]) == 2
    assert "--tier must be one of ['mnli', 'pilot_sst2', 'sst2'], got 'sst3'" in capsys.readouterr().err
    assert run_study.main(["--tier", "sst2", "--smoke"]) == 2
    assert "--smoke needs --table" in capsys.readouterr().err
    assert run_study.main(["--tier", "sst2", "--data-root", str(tmp_path), "--status"]) == 2
    assert f"tier data file {tmp_path}/sst2/train.tsv is missing; pass --data-root" in capsys.readouterr().err
    assert run_study.main(["--tier", "sst2", "--designs", "nope", "--data-root", str(tmp_path)]) == 2
    assert "tier sst2: unknown design id(s) ['nope']" in capsys.readouterr().err
