"""The run configuration, resolved once (recipe → space → --set), and the plan `--dry-run` prints for the paper's tasks.

Offline: the paper's backbones come from the bundled configs; local data are small generated files of known size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.runconfig import resolve_run
from finetune.trainconfig import TrainConfig
from search.cli import build_parser
from search.cli import main as search_main
from search.plan import plan
from search.scheduler import ParetoASHA

ROOT = Path(__file__).resolve().parents[1]


def write_local(task: str, folder: Path, rows: int) -> Path:
    """`rows` training rows and 20 dev rows in the task's local file format."""
    folder.mkdir(parents=True, exist_ok=True)

    def jsonl(name: str, n: int, row) -> None:
        (folder / name).write_text("".join(json.dumps(row(i)) + "\n" for i in range(n)))

    if task == "sst2":
        for name, n in (("train.tsv", rows), ("dev.tsv", 20)):
            (folder / name).write_text("sentence\tlabel\n" + "".join(f"a fine film {i} \t{i % 2}\n" for i in range(n)))
    elif task == "mnli":
        row = lambda i: {"premise": f"a man sleeps {i}", "hypothesis": "a man rests", "label": i % 3}  # noqa: E731
        jsonl("train.jsonl", rows, row)
        jsonl("dev_matched.jsonl", 20, row)
    elif task == "en-ro":
        row = lambda i: {"en": f"the house {i} is big", "ro": f"casa {i} este mare"}  # noqa: E731
        jsonl("train.jsonl", rows, row)
        jsonl("validation.jsonl", 20, row)
    else:
        row = lambda i: {"document": f"a long story number {i} about a town", "summary": "a story"}  # noqa: E731
        jsonl("train.jsonl", rows, row)
        jsonl("validation.jsonl", 20, row)
    return folder


def dry_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> dict:
    code = search_main(["--space", "spaces/full.yaml", "--dry-run", "--json", "--storage", str(tmp_path / "runs"),
                        *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.fixture(autouse=True)
def _in_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_en_ro_plan_is_the_recipe(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = dry_plan(capsys, tmp_path, "--dataset", "en-ro")
    assert {"task", "model", "max_steps", "eval_every", "rungs", "trials", "train", "cost"} <= set(p)
    assert (p["task"], p["model"], p["max_steps"], p["eval_every"]) == ("en-ro", "facebook/mbart-large-cc25", 50_000,
                                                                        5_000)
    assert p["rungs"] == [5_000, 15_000, 45_000] and min(p["rungs"]) >= 5_000  # grace = the resolved interval
    t = p["train"]
    assert (t["max_tokens"], t["batch_size"], t["batch_multiple"], t["grad_accum"]) == (4096, None, 64, 4)
    assert (t["dropout"], t["attention_dropout"], t["select_metric"], t["select_mode"]) == (0.1, 0.0, "loss", "min")
    assert (t["lr"], t["label_smoothing"], t["weight_decay"], t["schedule"]) == (5e-5, 0.1, 0.01, "polynomial")
    assert p["data"] == {"source": "hub", "where": "wmt16/ro-en", "train_rows": 610_320, "eval_rows": 1_600,
                         "basis": "recorded size: HF dataset card wmt16, config ro-en"}
    assert p["sampled"] == ["lr"] and p["origin"]["lr"] == "space (sampled)" and p["trials"] == 8
    mam = next(c for c in p["cost"]["per_trial"] if c["design"] == "mam")
    # Bound basis: 4 full micro-batches of 4,096 source + 4,096 target tokens per step, 50,000 steps.
    assert mam["tokens"] == 4 * 2 * 4096 * 50_000 and p["cost"]["basis"].startswith("bound")
    assert mam["gpu_hours"] == pytest.approx(mam["flops"] / (312e12 * 0.2) / 3600)


def test_xsum_plan_is_the_recipe(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = dry_plan(capsys, tmp_path, "--dataset", "xsum")
    assert (p["model"], p["max_steps"], p["eval_every"], p["rungs"]) == ("facebook/bart-large", 100_000, 3_000,
                                                                         [3_000, 9_000, 27_000, 81_000])
    t = p["train"]
    assert (t["batch_size"], t["max_tokens"], t["grad_accum"], t["max_grad_norm"]) == (16, None, 4, 0.1)
    assert (t["select_metric"], t["select_mode"], t["max_length"], t["max_target_length"]) == ("rouge2", "max", 512,
                                                                                               128)
    assert p["data"]["train_rows"] == 204_045


@pytest.mark.parametrize(("task", "rows", "per_epoch"), [("sst2", 1000, 31), ("mnli", 2000, 62)])
def test_glue_plans_turn_ten_epochs_into_steps_from_the_local_file(task: str, rows: int, per_epoch: int,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    data = write_local(task, tmp_path / task, rows)
    p = dry_plan(capsys, tmp_path, "--dataset", task, "--data-dir", str(data))
    assert per_epoch == rows // 32  # batch 32, one worker, no accumulation: the sampler drops the tail
    assert (p["max_steps"], p["eval_every"]) == (10 * per_epoch, per_epoch)
    assert p["rungs"] == [per_epoch, 3 * per_epoch, 9 * per_epoch]
    assert p["data"]["source"] == "local" and p["data"]["train_rows"] == rows and p["data"]["eval_rows"] == 20
    assert p["length"].startswith(f"10 epochs (recipe) × {per_epoch} steps/epoch")
    assert p["train"]["batch_size"] == 32 and p["model"] == "roberta-base"
    assert "no tokenizer for roberta-base offline" in p["cost"]["not_measured"]


@pytest.mark.parametrize(("task", "rows"), [("sst2", 67_349), ("mnli", 392_702)])
def test_glue_plans_on_the_hub_use_the_recorded_sizes(task: str, rows: int, capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    p = dry_plan(capsys, tmp_path, "--dataset", task)
    per_epoch = rows // 32  # sst2: 2,104; mnli: 12,271
    assert (p["max_steps"], p["eval_every"], p["rungs"]) == (10 * per_epoch, per_epoch,
                                                             [per_epoch, 3 * per_epoch, 9 * per_epoch])
    assert p["data"]["train_rows"] == rows and "nyu-mll/glue" in p["data"]["basis"]
    assert p["cost"]["basis"].startswith("bound") and p["cost"]["not_measured"] == "hub data is not read before a run"


@pytest.mark.parametrize("task", ["en-ro", "xsum"])
def test_seq2seq_plans_from_local_files(task: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = write_local(task, tmp_path / task, 50)
    p = dry_plan(capsys, tmp_path, "--dataset", task, "--data-dir", str(data), "--set", "max_steps=40",
                 "--set", "eval_every=10")
    assert (p["max_steps"], p["eval_every"], p["rungs"]) == (40, 10, [10, 30])
    assert p["data"]["train_rows"] == 50 and p["data"]["where"].endswith("train.jsonl")


def test_a_dry_run_with_a_measurable_setup_measures_its_batches(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    data = write_local("sst2", tmp_path / "sst2", 300)
    p = dry_plan(capsys, tmp_path, "--dataset", "sst2", "--data-dir", str(data), "--model", "minilm")
    assert p["cost"]["basis"].startswith("measured: 300 sampled training rows") and p["cost"]["not_measured"] is None
    # "a fine film 12 " is [CLS] a fine film 12 [SEP] in MiniLM's WordPiece: 6 tokens, 32 rows per batch.
    assert p["cost"]["tokens_per_step"] == pytest.approx(32 * 6, rel=0.05)


def test_set_overrides_win_over_the_space_and_the_recipe(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("task: en-ro\nsites: {ffn: {form: relu, size: 8}}\n"
                     "train: {lr: {low: 1.0e-5, high: 1.0e-3}, weight_decay: 0.05, max_steps: 2000, eval_every: 500}\n")
    code = search_main(["--space", str(space), "--dry-run", "--json", "--storage", str(tmp_path / "runs"),
                        "--set", "lr=0.002", "--set", "weight_decay=0.0", "--set", "eval_every=250"])
    p = json.loads(capsys.readouterr().out)
    assert code == 0
    t, o = p["train"], p["origin"]
    assert (t["lr"], o["lr"], p["sampled"]) == (0.002, "--set", [])  # a --set value is no longer sampled
    assert (t["weight_decay"], o["weight_decay"]) == (0.0, "--set")
    assert (t["max_steps"], o["max_steps"], t["eval_every"], o["eval_every"]) == (2000, "space", 250, "--set")
    assert (t["label_smoothing"], o["label_smoothing"]) == (0.1, "recipe")
    assert p["rungs"] == [250, 750]  # the grace period follows the interval --set gave


def test_a_later_layer_replaces_epochs_with_steps_and_back() -> None:
    run = resolve_run("sst2", overrides={"max_steps": 500})
    assert (run.train.max_steps, run.origin["max_steps"], run.train.eval_every) == (500, "--set", 2_104)
    run = resolve_run("toy-cls", space={"max_steps": 7}, overrides={"epochs": 2, "eval_epochs": 0.5})
    assert (run.train.max_steps, run.train.eval_every) == (2 * (2048 // 32), 32)  # the recipe's batch 32
    assert run.origin["max_steps"] == "--set" and run.length.startswith("2 epochs (--set) × 64 steps/epoch")


def test_the_grace_period_follows_the_resolved_interval(tmp_path: Path) -> None:
    def planned(*extra: str):
        return plan(build_parser().parse_args(["--space", "spaces/full.yaml", "--storage", str(tmp_path), "--dry-run",
                                               *extra]))

    en_ro = planned("--dataset", "en-ro")
    assert (en_ro.schedule.grace_period, en_ro.schedule.rungs) == (5_000, (5_000, 15_000, 45_000))
    # The scheduler Ray gets is built from the same numbers: its milestones are the rungs shown.
    sched = ParetoASHA(max_t=en_ro.schedule.max_t, grace_period=en_ro.schedule.grace_period,
                       reduction_factor=en_ro.schedule.reduction_factor)
    assert sched.rungs == [5_000.0, 15_000.0, 45_000.0]
    sst2 = planned("--dataset", "sst2", "--data-dir", str(write_local("sst2", tmp_path / "d", 640)))
    assert (sst2.schedule.grace_period, sst2.schedule.rungs) == (20, (20, 60, 180))  # one epoch = 640 // 32
    assert planned("--dataset", "en-ro", "--grace-period", "10000").schedule.rungs == (10_000, 30_000)
    with pytest.raises(ValueError, match=r"--grace-period must be a positive multiple of the evaluation interval "
                                         r"\(5,000 steps: every 5,000 steps \(recipe\)\).*got 7000"):
        planned("--dataset", "en-ro", "--grace-period", "7000")


def test_a_search_builds_one_train_config_and_each_trial_one_more(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from search.trainable import _train_config

    built = []
    original = TrainConfig.__post_init__
    monkeypatch.setattr(TrainConfig, "__post_init__", lambda self: (built.append(self), original(self))[1])
    # --dry-run: the plan is resolved without mBART's weights, which this machine does not have
    p = plan(build_parser().parse_args(["--space", "spaces/full.yaml", "--dataset", "en-ro", "--storage",
                                        str(tmp_path), "--dry-run"]))
    assert len(built) == 1 and built[0].lr == 5e-5  # resolved once; the sampled lr is only range-checked
    cfg = _train_config({"train": {"lr": 3e-4}}, p.trial, "trial_0001")
    assert len(built) == 2
    assert (cfg.lr, cfg.max_steps, cfg.eval_every, cfg.out_dir) == (3e-4, 50_000, 5_000,
                                                                     str(Path(p.trial.trials_dir) / "trial_0001"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(overrides={"max_steps": 10, "epochs": 2}), r"--set: set max_steps or epochs, not both"),
        (dict(overrides={"epochs": 2}), r"epochs need sentence batches, but max_tokens=4096 batches by tokens"),
        (dict(overrides={"max_stepz": 2}), r"--set: unknown training setting\(s\) \['max_stepz'\]"),
        (dict(space={"model": "x"}), r"space: unknown training setting\(s\) \['model'\] \(\['model'\] are given by "
                                     r"their own flags"),
        (dict(sampled={"max_steps": (10, 20)}), r"train.max_steps cannot be sampled: every trial of a search must"),
        (dict(sampled={"lr": (0.0, 1e-3)}), r"lr must be > 0, got 0.0"),
        (dict(overrides={"dropout": 1.5}), r"dropout must be in \[0, 1\), got 1.5"),
        (dict(overrides={"select_metric": "bleu"}), r"select_metric must be one of \['loss', 'bleu_ro'\] for task "
                                                     r"'en-ro', got 'bleu'"),
        (dict(overrides={"max_tokens": None}), r"batches need batch_size \(sentences\) or max_tokens"),
    ],
)
def test_bad_settings_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_run("en-ro", **kwargs)


def test_sampling_the_batch_while_epochs_set_the_length_is_refused() -> None:
    with pytest.raises(ValueError, match=r"train.batch_size cannot be sampled while the length or evaluation "
                                         r"interval is in epochs"):
        resolve_run("sst2", sampled={"batch_size": (16, 32)})
    with pytest.raises(ValueError, match=r"an epoch must hold at least one optimizer step, but the training set has "
                                         r"2,048 rows and a step reads 4,096"):
        resolve_run("toy-cls", overrides={"epochs": 1, "batch_size": 4096})


def test_a_dry_run_starts_nothing_and_writes_nothing(tmp_path: Path) -> None:
    code = ("import sys; from search.cli import main; "
            f"rc = main(['--space', 'full', '--dataset', 'xsum', '--dry-run', '--storage', {str(tmp_path / 'runs')!r}, "
            f"'--tracking-uri', 'sqlite:///{tmp_path / 'mlflow.db'}']); "
            "print('IMPORTED', [m for m in ('ray', 'mlflow', 'deepspeed') if m in sys.modules]); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "IMPORTED []" in out.stdout  # no Ray, no MLflow, no DeepSpeed: nothing was even imported
    assert list(tmp_path.iterdir()) == []  # no storage folder, no tracking store
    for line in ("task      xsum    model facebook/bart-large", "length    max_steps 100,000 (recipe)",
                 "scheduler pareto: grace period 3,000 steps, reduction factor 3, rungs decide at steps 3,000, 9,000, "
                 "27,000, 81,000", "nothing was started (--dry-run)"):
        assert line in out.stdout


def test_a_dry_run_says_what_a_run_on_this_machine_would_stop_on(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The plan is readable anywhere (exit 0), but the user who checks it before spending GPU hours is told, first
    # and last, that this machine has neither mBART's weights nor the en-ro data (issue 16: --dry-run said nothing).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    code = search_main(["--space", "spaces/full.yaml", "--dataset", "en-ro", "--dry-run", "--storage",
                        str(tmp_path / "runs")])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[1] == lines[-1]
    assert lines[1].startswith("warning: a run on this machine would stop before Ray: model "
                               "'facebook/mbart-large-cc25' is not in the Hugging Face cache")
    assert "--model DIR" in lines[1] and "--data-dir DIR" in lines[1] and "HF_HUB_OFFLINE" in lines[1]
    unavailable = dry_plan(capsys, tmp_path, "--dataset", "en-ro", "--name", "j")["unavailable"]
    assert unavailable == lines[1].split("Ray: ", 1)[1]
