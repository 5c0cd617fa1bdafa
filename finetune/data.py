"""Examples in one normalised shape, tokenisation and padding for every task in ``finetune.tasks``.

``load_examples`` returns plain dicts, so that data problems (missing file, missing column, a label outside
the task's set, an empty split) fail *before* a model is downloaded or a step is taken:
classification ``{"text": str, "text_pair": str | None, "label": int}``; seq2seq ``{"source", "target"}``.
Sources: generated in memory (``toy-*``), local files under ``data_dir``, or the HF hub through
``datasets.load_dataset(*task.hub_dataset, split=...)``.

Local file names under ``data_dir`` (``Task.local_names``; tried in order, the first existing wins):
sst2 train ``train.tsv``, validation ``dev.tsv``; mnli train ``train.jsonl``/``train_sample.jsonl``, validation
``dev_matched.jsonl``/``validation_matched.jsonl``, validation_mismatched ``dev_mismatched.jsonl``; en-ro train
``train.jsonl``/``train_sample.jsonl``, validation ``validation.jsonl``/``dev.jsonl``, test ``test.jsonl``; xsum
``train.jsonl``, ``validation.jsonl``/``dev.jsonl``, ``test.jsonl``. Then, for any task and split name S,
``S.jsonl`` and ``S.tsv`` (``split="train_heldout"`` reads ``train_heldout.jsonl``).

``.tsv`` files have a header row and are read with ``quoting=csv.QUOTE_NONE`` (GLUE TSVs are unquoted and hold
bare ``"``); ``.jsonl`` files hold one object per line. Columns are the task's hub names (``Task.columns``);
en-ro rows may be flat ``{"en", "ro"}`` or hub-style ``{"translation": {...}}``; GLUE's MNLI TSV names
(``sentence1``, ``sentence2``, ``gold_label``) are accepted. Labels may be ids or names (MNLI: entailment...).

The toy tokenizer uses BART/RoBERTa special ids (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3,
``<mask>``=4), so tiny BART/RoBERTa configs keep their default special-token ids.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from finetune.tasks import Task

Example = dict[str, Any]

SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0..4, BART order
IGNORE_INDEX = -100  # label id skipped by torch's cross-entropy

# toy-cls: label 1 iff the sentence holds more POSITIVE than NEGATIVE words; FILLER words carry no signal.
TOY_POSITIVE = ("good", "great", "fine", "nice", "happy", "warm", "bright", "kind")
TOY_NEGATIVE = ("bad", "poor", "sad", "cold", "dark", "mean", "dull", "ugly")
TOY_FILLER = ("the", "a", "movie", "film", "plot", "actor", "scene", "it",
              "is", "was", "and", "very", "this", "story", "music", "end")
# toy-s2s: a sequence of digits maps to the same sequence spelled out ("4 0 7" -> "four zero seven").
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# GLUE's original MNLI TSV header -> the hub column names.
_COLUMN_ALIASES = {"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"}


def load_examples(
    task: Task, split: str, data_dir: str | Path | None = None, limit: int | None = None, seed: int = 0
) -> list[Example]:
    """Normalised examples of ``split`` (a role such as "validation", or an extra split name).

    ``seed`` only affects generated tasks; ``limit`` keeps the first ``limit`` examples.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of examples, got {limit}; pass None to keep all")
    if task.generated:
        return _generate(task, split, seed, limit)
    if data_dir is not None:
        path = local_file(task, split, data_dir)
        examples = []
        for where, row in _read_rows(path):
            examples.append(_normalise(task, row, where))
            if limit is not None and len(examples) >= limit:
                break
        source = str(path)
    else:
        examples, source = _load_hub(task, split, limit)
    if not examples:
        raise ValueError(
            f"split {split!r} of task {task.name!r} must not be empty, got 0 examples from {source}; "
            "write at least one example there or choose another split"
        )
    return examples


def local_file(task: Task, split: str, data_dir: str | Path) -> Path:
    """The file `split` is read from under `data_dir`: the first of `Task.local_names` that exists."""
    data_dir = Path(data_dir)
    names = task.local_names(split)
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    tried = ", ".join(str(data_dir / n) for n in names)
    raise FileNotFoundError(
        f"task {task.name!r} split {split!r} needs a data file, none found; tried {tried}. "
        f"Write the split to one of {list(names)} (formats: see finetune.data)"
    )


def _read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("file:line", row)`` from a headed TSV or a JSONL file (UTF-8; other bytes are named)."""
    try:
        yield from _rows(path)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x}: {err.reason}); save the file "
                         "as UTF-8") from None


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix == ".tsv":
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None) or []
            for fields in (r for r in reader if r):  # a trailing blank line is not a row
                where = f"{path}:{reader.line_num}"
                if len(fields) != len(header):
                    raise ValueError(
                        f"{where}: a TSV row must have {len(header)} tab-separated fields like its header "
                        f"{header}, got {len(fields)}; fix the row (fields must not contain tabs)"
                    )
                yield where, dict(zip(header, fields, strict=True))
            return
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: each line must be one JSON object, got invalid JSON ({err})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: each line must be one JSON object, got {type(row).__name__}")
            yield where, row


def _normalise(task: Task, row: dict[str, Any], where: str) -> Example:
    cols = task.columns
    if cols.nested is not None and isinstance(row.get(cols.nested), dict):
        row = row[cols.nested]
    row = {_canonical(k, row): v for k, v in row.items()}
    required = (*cols.inputs, cols.target)
    missing = [c for c in required if c not in row]
    if missing:
        raise ValueError(
            f"{where}: task {task.name!r} requires columns {list(required)}, missing {missing}; "
            f"found {sorted(row)}. Rename the columns to the task's names"
        )
    text_cols = cols.inputs if task.kind == "classification" else required
    for c in text_cols:
        if not isinstance(row[c], str):
            raise ValueError(f"{where}: column {c!r} must hold text, got {row[c]!r}; write a string")
    if task.kind == "seq2seq":
        return {"source": row[cols.inputs[0]], "target": row[cols.target]}
    pair = row[cols.inputs[1]] if len(cols.inputs) > 1 else None
    return {"text": row[cols.inputs[0]], "text_pair": pair, "label": _label_id(task, row[cols.target], where)}


def _canonical(column: str, row: dict[str, Any]) -> str:
    """GLUE TSV names map to hub names unless the row already has the hub name."""
    alias = _COLUMN_ALIASES.get(column)
    return alias if alias is not None and alias not in row else column


def _label_id(task: Task, value: Any, where: str) -> int:
    """Accept a label id (int or digit string) or a label name; anything else names the allowed set."""
    parsed = value
    if isinstance(value, str):
        text = value.strip()
        if text in task.label_names:
            return task.label_names.index(text)
        if text.lstrip("-").isdigit():
            parsed = int(text)
    if isinstance(parsed, int) and not isinstance(parsed, bool) and 0 <= parsed < (task.num_labels or 0):
        return parsed
    allowed = [f"{i}={n}" for i, n in enumerate(task.label_names)]
    raise ValueError(
        f"{where}: label must be one of {allowed} (id or name), got {value!r}; "
        "fix the label or drop the row (GLUE test rows carry -1 because their labels are hidden)"
    )


def _load_hub(task: Task, split: str, limit: int | None) -> tuple[list[Example], str]:
    try:
        hub_split = task.splits.hub_name(split)
    except ValueError as err:
        raise ValueError(
            f"task {task.name!r}: {err}. Final numbers go on split {task.report_split!r}; "
            "for other splits pass --data-dir with local files"
        ) from None
    from datasets import load_dataset  # deferred on purpose: only the hub path pays for it

    spec = hub_split if limit is None else f"{hub_split}[:{limit}]"
    rows = load_dataset(*task.hub_dataset, split=spec)
    source = f"hub dataset {'/'.join(task.hub_dataset)} split {spec!r}"
    return [_normalise(task, dict(row), f"{source} row {i}") for i, row in enumerate(rows)], source


def _generate(task: Task, split: str, seed: int, limit: int | None) -> list[Example]:
    sizes = dict(task.sizes)
    if split not in sizes:
        raise ValueError(f"generated task {task.name!r} has no split {split!r}; expected one of {list(sizes)}")
    n = min(sizes[split], limit or sizes[split])
    rng = random.Random(f"{task.name}/{split}/{seed}")  # str seeds are stable across processes
    return _toy_cls(rng, n) if task.kind == "classification" else _toy_s2s(rng, n)


def _toy_cls(rng: random.Random, n: int) -> list[Example]:
    labels = [i % 2 for i in range(n)]  # exactly balanced before the shuffle
    rng.shuffle(labels)
    out = []
    for label in labels:
        major = rng.randint(1, 3)
        minor = rng.randint(0, major - 1)
        pos, neg = (major, minor) if label else (minor, major)
        words = rng.choices(TOY_POSITIVE, k=pos) + rng.choices(TOY_NEGATIVE, k=neg)
        words += rng.choices(TOY_FILLER, k=rng.randint(3, 7))
        rng.shuffle(words)
        out.append({"text": " ".join(words), "text_pair": None, "label": label})
    return out


def _toy_s2s(rng: random.Random, n: int) -> list[Example]:
    out = []
    for _ in range(n):
        digits = rng.choices(range(10), k=rng.randint(3, 8))
        out.append({"source": " ".join(map(str, digits)), "target": " ".join(DIGIT_WORDS[d] for d in digits)})
    return out


def toy_vocabulary(task: Task) -> tuple[str, ...]:
    """Every word a generated task can emit (without special tokens)."""
    if not task.generated:
        raise ValueError(f"toy vocabulary exists only for generated tasks, got {task.name!r}; use its hub tokenizer")
    if task.kind == "classification":
        return TOY_POSITIVE + TOY_NEGATIVE + TOY_FILLER
    return tuple(str(d) for d in range(10)) + DIGIT_WORDS


def toy_tokenizer(task: Task) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the task vocabulary with BART special ids; adds ``<s> ... </s>``."""
    return word_tokenizer(toy_vocabulary(task), task.max_source_length)


def word_tokenizer(words: Sequence[str], model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over ``words`` with BART's special ids (offline models and tests)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(dict.fromkeys(words)))}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    backend.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",  # RoBERTa's pair layout
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        mask_token="<mask>", model_max_length=model_max_length,
    )


def load_tokenizer(task: Task, path: str | None = None, local_only: bool = False) -> PreTrainedTokenizerBase:
    """The task's tokenizer: the toy one for generated tasks, else the checkpoint's (``path`` overrides).

    ``local_only`` never downloads (a plan's cost estimate): OSError when the tokenizer is not on this machine.
    """
    if task.generated and path is None:
        return toy_tokenizer(task)
    langs = {k: v for k, v in (("src_lang", task.src_lang), ("tgt_lang", task.tgt_lang)) if v}
    return AutoTokenizer.from_pretrained(path or task.model, local_files_only=local_only, **langs)


def encode_classification(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[Example]:
    """Token ids per example (truncated to ``max_length``) plus the integer label."""
    if not examples:
        return []
    pairs = [e.get("text_pair") for e in examples]
    with_pair = [p is not None for p in pairs]
    if any(with_pair) and not all(with_pair):
        raise ValueError("examples must all have a text_pair or all have none, got a mix; encode them separately")
    enc = tokenizer(
        [e["text"] for e in examples], pairs if all(with_pair) else None, truncation=True, max_length=max_length
    )
    items = []
    for i, e in enumerate(examples):
        item = {"input_ids": enc["input_ids"][i], "label": int(e["label"])}
        if "token_type_ids" in enc:
            item["token_type_ids"] = enc["token_type_ids"][i]
        items.append(item)
    return items


def encode_seq2seq(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    max_source_length: int,
    max_target_length: int,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
) -> list[Example]:
    """Source ids, target ids as ``labels``, and the raw target as ``reference``.

    Metrics must score against the raw reference: the release scored against references decoded from
    truncated label ids (seed_spec §6), which silently shortens XSum and en-ro references.
    """
    if not examples:
        return []
    for attr, value in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
        if value is not None and hasattr(tokenizer, attr):  # mBART: selects the language-code special tokens
            setattr(tokenizer, attr, value)
    sources = tokenizer([e["source"] for e in examples], truncation=True, max_length=max_source_length)
    targets = tokenizer(text_target=[e["target"] for e in examples], truncation=True, max_length=max_target_length)
    return [
        {"input_ids": s, "labels": t, "reference": e["target"]}
        for s, t, e in zip(sources["input_ids"], targets["input_ids"], examples, strict=True)
    ]


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad to the longest row in the batch (dynamic padding, not the model maximum)."""
    if not rows:
        raise ValueError("a batch must hold at least one example, got 0; drop empty batches before collating")
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def collate_classification(batch: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` padded with ``pad_id``/0, ``labels`` as a 1-D long tensor."""
    out = {
        "input_ids": _pad([b["input_ids"] for b in batch], pad_id),
        "attention_mask": _pad([[1] * len(b["input_ids"]) for b in batch], 0),
        "labels": torch.tensor([b["label"] for b in batch], dtype=torch.long),
    }
    if "token_type_ids" in batch[0]:
        out["token_type_ids"] = _pad([b["token_type_ids"] for b in batch], 0)
    return out


def collate_seq2seq(batch: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Pad sources with ``pad_id`` and labels with -100; raw targets go to ``references`` (a list)."""
    out: dict[str, Any] = {
        "input_ids": _pad([b["input_ids"] for b in batch], pad_id),
        "attention_mask": _pad([[1] * len(b["input_ids"]) for b in batch], 0),
        "labels": _pad([b["labels"] for b in batch], IGNORE_INDEX),
    }
    if "reference" in batch[0]:
        out["references"] = [b["reference"] for b in batch]
    return out
