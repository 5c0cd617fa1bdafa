"""Bad command-line input (issue 12 item 8, issue 16 items 1, 3, 4): each kind ends in one line with exit code 2
before Ray would start, and before the tracking store is touched. `search.tuner.fit` is replaced by a tripwire."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from search.cli import main

SST2 = ["--dataset", "sst2", "--model", "minilm", "--set", "max_steps=4", "--set", "eval_every=2"]
GOOD_TSV = "sentence\tlabel\na fine film\t1\na dull film\t0\n"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    import search.tuner

    def ray_started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray would have started")

    monkeypatch.setattr(search.tuner, "fit", ray_started)
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> str:
        rc = main([*args, "--storage", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
        out = capsys.readouterr().out
        assert rc == 2, out
        assert out.count("\n") == 1 and out.startswith("error: "), out
        assert not (tmp_path / "m.db").exists()  # nothing was tracked
        return out.strip()

    return call


def data_dir(tmp_path: Path, train: bytes | str | None, dev: bytes | str | None = GOOD_TSV) -> str:
    folder = tmp_path / "data"
    folder.mkdir()
    for name, content in (("train.tsv", train), ("dev.tsv", dev)):
        if content is not None:
            (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return str(folder)


def test_a_data_dir_that_does_not_exist_says_what_it_must_hold(run: Any, tmp_path: Path) -> None:
    out = run(*SST2, "--data-dir", str(tmp_path / "nope"))
    assert out == (f"error: --data-dir '{tmp_path / 'nope'}' is not a folder; it must hold train.tsv (or train.jsonl) "
                   "and dev.tsv (or validation.jsonl, validation.tsv): .jsonl one JSON object per line, .tsv a header "
                   "row then tab-separated rows, UTF-8; columns sentence, label; label is an id or a name: "
                   "0=negative, 1=positive")


@pytest.mark.parametrize(("train", "dev", "message"), [
    ("text\tlabel\nhi\t1\n", GOOD_TSV, "train.tsv:2: task 'sst2' requires columns ['sentence', 'label'], missing "
                                       "['sentence']"),
    ("sentence\tlabel\nhi\t7\n", GOOD_TSV, "train.tsv:2: label must be one of ['0=negative', '1=positive'] (id or "
                                           "name), got '7'"),
    ("", GOOD_TSV, "split 'train' of task 'sst2' must not be empty, got 0 examples from"),
    ("sentence\tlabel\n", GOOD_TSV, "split 'train' of task 'sst2' must not be empty, got 0 examples from"),
    (GOOD_TSV, None, "task 'sst2' split 'validation' needs a data file, none found; tried"),
    (b"sentence\tlabel\nhi \xff there\t1\n", GOOD_TSV, "train.tsv: not UTF-8 text (byte 0xff: invalid start byte); "
                                                       "save the file as UTF-8"),
])
def test_bad_data_is_one_line_naming_the_file(run: Any, tmp_path: Path, train: Any, dev: Any, message: str) -> None:
    assert message in run(*SST2, "--data-dir", data_dir(tmp_path, train, dev))


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--max-param-fraction", "0", "--max-param-fraction must be > 0 (a fraction of the backbone's parameters, e.g. "
                                  "0.01 for 1%), got 0.0"),
    ("--grace-period", "0", "--grace-period must be a positive multiple of the evaluation interval (10 steps"),
    ("--reduction-factor", "1", "--reduction-factor must be > 1 (ASHA keeps 1/this), got 1.0"),
    ("--seeds", "0", "--seeds must be >= 1 (replicates per design), got 0"),
    ("--cpus-per-trial", "100000", "a trial needs 100000 CPUs (--cpus-per-trial × --workers-per-trial) but this "
                                   "machine has"),
])
def test_flags_out_of_range(run: Any, flag: str, value: str, message: str) -> None:
    assert message in run(flag, value)


def test_gpus_this_machine_lacks_do_not_wait_forever(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert run("--gpus-per-trial", "1") == (
        "error: a trial needs 1 GPU(s) (--gpus-per-trial × --workers-per-trial) but this machine has 0, so no trial "
        "could ever start; pass --gpus-per-trial 0 to train on CPU, or --address to use a cluster with GPUs")


def test_a_model_type_with_no_site_map(run: Any, tmp_path: Path) -> None:
    from transformers import T5Config

    T5Config(num_layers=1, d_model=16, num_heads=2, d_kv=8, d_ff=32).save_pretrained(tmp_path / "t5")
    out = run("--model", str(tmp_path / "t5"))
    assert out.startswith(f"error: --model '{tmp_path / 't5'}': model type 't5' has no site map, so PETL modules "
                          "cannot be placed in it")


@pytest.mark.parametrize(("dataset", "own"), [
    ("en-ro", "--model facebook/mbart-large-cc25 (the task's checkpoint)"),
    ("xsum", "--model facebook/bart-large (the task's checkpoint)"),
    ("toy-s2s", "a space without `model:` (task 'toy-s2s' then trains its tiny random BART)"),
])
def test_a_seq2seq_task_with_the_default_encoder_space_names_the_fix(run: Any, dataset: str, own: str) -> None:
    from search.spacefile import space_file

    out = run("--dataset", dataset)
    assert out == (f"error: task '{dataset}' is sequence-to-sequence, but the model 'minilm' of space "
                   f"{space_file('smoke')} is model type 'bert', which has no decoder; pass {own}, or --model with an "
                   "encoder-decoder checkpoint (BART, mBART); the shipped spaces full and paper use each task's own "
                   "checkpoint")


def test_resume_of_a_search_that_never_ran_creates_nothing(run: Any, tmp_path: Path) -> None:
    out = run("--resume", "--name", "never-ran")
    assert out.startswith("error: --resume: no interrupted search named 'never-ran'")
    assert not (tmp_path / "runs" / "never-ran").exists()


def test_a_name_collision_is_answered_before_planning(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    import search.driver

    def planned(*args: Any) -> None:
        raise AssertionError("planning ran before the name check")

    monkeypatch.setattr(search.driver, "plan", planned)
    (tmp_path / "runs" / "smoke-toy-cls").mkdir(parents=True)
    (tmp_path / "runs" / "smoke-toy-cls" / "tuner.pkl").write_bytes(b"")
    start = time.perf_counter()
    out = run()
    assert time.perf_counter() - start < 1.0
    assert out == (f"error: a search named 'smoke-toy-cls' already exists under {tmp_path / 'runs'}; pass --resume "
                   "to continue it or --name to start another")


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hub cache with nothing in it, offline: the machine's own cache cannot matter."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    (cache / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(constants, "HF_HOME", str(cache))
    return cache / "hub"


def test_offline_a_missing_model_and_missing_data_are_named_in_one_line(run: Any, empty_hf_cache: Path) -> None:
    """The headline command offline: the model AND the data are checked before failing, so one run names both
    fixes (before: only --model DIR; the user learned of --data-dir after fixing the model)."""
    from finetune.tasks import data_help, get_task

    assert run("--space", "full", "--dataset", "en-ro") == (
        "error: model 'facebook/mbart-large-cc25' is not in the Hugging Face cache of this machine (missing "
        "['config.json', 'weights', 'tokenizer']), and dataset 'wmt16/ro-en' (task 'en-ro') is not in the Hugging "
        "Face cache of this machine, and HF_HUB_OFFLINE is set, so neither can be downloaded; pass --model DIR with a "
        "saved copy (save_pretrained, its tokenizer included) and --data-dir DIR with the task's files, or download "
        "them where the hub is reachable (huggingface-cli download) into a shared HF_HOME; --data-dir DIR for task "
        "'en-ro' holds train.jsonl (or train_sample.jsonl, train.tsv) and validation.jsonl (or dev.jsonl, "
        "validation.tsv): .jsonl one JSON object per line, .tsv a header row then tab-separated rows, UTF-8; columns "
        "en, ro, or rows {'translation': {...}}")
    for args, model, task in ((["--space", "paper", "--dataset", "xsum"], "facebook/bart-large", "xsum"),
                              (["--space", "full", "--dataset", "sst2"], "roberta-base", "sst2")):
        out = run(*args)
        assert out.startswith(f"error: model '{model}' is not in the Hugging Face cache"), out
        assert "neither can be downloaded; pass --model DIR" in out and "and --data-dir DIR" in out
        assert out.endswith(f"; --data-dir DIR for task '{task}' holds {data_help(get_task(task))}")
        assert "\n" not in out


def test_a_hub_that_does_not_answer_names_both_flags_and_hf_hub_offline() -> None:
    """Online but the hub unreachable (a cluster without outbound network, HF_HUB_OFFLINE not set): both things in
    one line, with HF_HUB_OFFLINE as the way to stop asking."""
    from finetune.tasks import data_help, get_task
    from search.hub import Missing, one_line

    task = get_task("xsum")
    line = one_line([Missing("model 'facebook/bart-large' is not cached on this machine and the Hugging Face hub did "
                             "not answer (ConnectError)", "pass --model DIR with a local copy", hub_silent=True),
                     Missing("dataset 'EdinburghNLP/xsum' is not cached on this machine and the Hugging Face hub did "
                             "not answer (ConnectError)", "pass --data-dir DIR with a local copy", hub_silent=True)],
                    task)
    assert line == (
        "model 'facebook/bart-large' is not cached on this machine and the Hugging Face hub did not answer "
        "(ConnectError), and dataset 'EdinburghNLP/xsum' is not cached on this machine and the Hugging Face hub did "
        "not answer (ConnectError); pass --model DIR with a local copy and --data-dir DIR with a local copy, or set "
        f"HF_HUB_OFFLINE=1 with a pre-filled HF_HOME cache; --data-dir DIR for task 'xsum' holds {data_help(task)}")


def test_offline_a_missing_model_alone_names_model_dir(run: Any, empty_hf_cache: Path, tmp_path: Path) -> None:
    assert run("--space", "full", "--dataset", "sst2", "--data-dir", data_dir(tmp_path, GOOD_TSV), "--set",
               "batch_size=2") == (
        "error: model 'roberta-base' is not in the Hugging Face cache of this machine (missing ['config.json', "
        "'weights', 'tokenizer']) and HF_HUB_OFFLINE is set, so it cannot be downloaded; pass --model DIR with a "
        "saved copy (save_pretrained, its tokenizer included), or download it where the hub is reachable "
        "(huggingface-cli download) into a shared HF_HOME")


def test_offline_a_hub_dataset_without_a_cached_copy_names_data_dir(run: Any, empty_hf_cache: Path) -> None:
    from finetune.tasks import data_help, get_task

    assert run("--dataset", "sst2") == (
        "error: dataset 'glue/sst2' (task 'sst2') is not in the Hugging Face cache of this machine and HF_HUB_OFFLINE "
        "is set, so it cannot be downloaded; pass --data-dir DIR with the task's files, or download it where the hub "
        "is reachable (huggingface-cli download) into a shared HF_HOME; --data-dir DIR for task 'sst2' holds "
        + data_help(get_task("sst2")))


def test_a_cached_model_and_dataset_pass_the_check(empty_hf_cache: Path, tmp_path: Path) -> None:
    """The same offline check accepts what the cache holds (the layout huggingface_hub writes)."""
    from finetune.tasks import get_task
    from search.hub import check_available

    repo = empty_hf_cache / "models--facebook--mbart-large-cc25"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "sentencepiece.bpe.model"):
        (snapshot / name).write_text("{}")
    dataset = empty_hf_cache / "datasets--wmt16" / "snapshots" / "def456"
    dataset.mkdir(parents=True)
    (dataset / "README.md").write_text("")
    check_available(get_task("en-ro"), "facebook/mbart-large-cc25", None)
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model 'facebook/mbart-large-cc25' is not in the Hugging Face cache of this "
                                         r"machine \(missing \['weights'\]\)"):
        check_available(get_task("en-ro"), "facebook/mbart-large-cc25", None)


def test_a_model_folder_without_weights_is_named(run: Any, tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path / "bert")
    out = run("--dataset", "sst2", "--model", str(tmp_path / "bert"), "--data-dir", data_dir(tmp_path, GOOD_TSV),
              "--set", "max_steps=4", "--set", "eval_every=2")
    assert out == (f"error: --model '{tmp_path / 'bert'}': the folder has no weights and no tokenizer files (weights: "
                   "one of ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', "
                   "'pytorch_model.bin.index.json']); save the model with save_pretrained() and its tokenizer with it")
