"""Task registry: what each benchmark is, where its data lives and how the paper trained on it.

A trial is one PETL design trained on one task, so everything that is *not* the design lives here as
frozen data: hub names, split and column names, the default checkpoint, decoding settings and the
training recipe of He et al. (ICLR 2022). Numbers carry a ``# spec §4`` comment pointing at the row of
the training/eval table in ``seed_spec.md`` (the paper's release scripts ``exps/run_{xsum,en_ro,glue}.sh``
and App. A / Table 8). The two ``toy-*`` tasks are generated in memory and use a tiny random-init model
built from config, so tests and the offline demo need no hub access.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

from finetune.vocabulary import TaskKind

if TYPE_CHECKING:  # transformers loads on use: the task registry is read by --help and the name checks
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class Splits:
    """Hub split name for each role; ``test`` is None where the labelled test set is hidden."""

    train: str = "train"
    validation: str = "validation"
    test: str | None = "test"
    extra: tuple[str, ...] = ()  # further eval splits, addressed by their own hub name

    def names(self) -> tuple[str, ...]:
        roles = ("train", "validation") + (("test",) if self.test else ())
        return roles + self.extra

    def hub_name(self, split: str) -> str:
        """Map a role ("train"/"validation"/"test") or an extra split name to the hub's split name."""
        if split in self.extra:
            return split
        if split in ("train", "validation", "test"):
            name = getattr(self, split)
            if name is not None:
                return name
        raise ValueError(f"unknown split {split!r}; expected one of {list(self.names())}")


@dataclass(frozen=True)
class Columns:
    """Column names in the hub rows; local files use the same names (see ``finetune.data``)."""

    inputs: tuple[str, ...]  # classification: text (, text_pair); seq2seq: the source column
    target: str  # classification: the label column; seq2seq: the target text column
    nested: str | None = None  # hub rows keep the pair under this key (wmt16: {"translation": {"en", "ro"}})


@dataclass(frozen=True)
class Generation:
    """Beam-search settings passed to ``model.generate`` (HF semantics: max_length counts decoder tokens)."""

    num_beams: int
    max_length: int
    min_length: int
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0

    def kwargs(self) -> dict[str, int | float]:
        return {
            "num_beams": self.num_beams,
            "max_length": self.max_length,
            "min_length": self.min_length,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "length_penalty": self.length_penalty,
        }


@dataclass(frozen=True)
class Recipe:
    """The paper's training recipe for a task: the first layer of every run's settings (`finetune.runconfig`).

    Every field reaches the run: a space's fixed `train:` values and `--set` override any of them by name. Training
    length is `max_steps` or `epochs` (exactly one), the evaluation interval `eval_every` steps or epochs
    (`eval_unit`); epochs become optimizer steps from the training set's size when a run is resolved.
    """

    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    warmup_ratio: float
    batch_size: int | None  # sentences per micro-batch; None when batches are built by tokens
    grad_accum: int
    label_smoothing: float
    max_grad_norm: float
    eval_every: int  # in ``eval_unit``s
    eval_unit: Literal["step", "epoch"]
    select_metric: str  # the checkpoint that counts: "loss" (eval loss) or one of the task metric's scores
    select_mode: Literal["max", "min"]
    max_steps: int | None = None
    epochs: int | None = None
    max_tokens: int | None = None  # token-based batching (fairseq ``batch_by_size``): padded tokens per micro-batch
    batch_multiple: int = 1  # token batches hold a multiple of this many sentences when they can (fairseq)
    schedule: str = "polynomial"  # HF "polynomial" with power 1: linear decay to lr_end
    lr_end: float = 1e-7  # HF get_polynomial_decay_schedule_with_warmup default
    eval_cap: int | None = 1600  # model selection runs on the first 1,600 dev examples
    dropout: float | None = None  # None: keep the checkpoint config's value
    attention_dropout: float | None = None
    seed: int = 42
    notes: str = ""

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError(f"a recipe gives its length as max_steps or epochs (exactly one), got max_steps="
                             f"{self.max_steps}, epochs={self.epochs}")

    def settings(self) -> dict[str, object]:
        """The recipe as run settings: every field but the notes, the length and interval under their own names."""
        skip = ("notes", "eval_unit", "eval_every", "max_steps", "epochs")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out.update({"max_steps": self.max_steps} if self.max_steps is not None else {"epochs": self.epochs})
        out["eval_every" if self.eval_unit == "step" else "eval_epochs"] = self.eval_every
        return out


@dataclass(frozen=True)
class TinyModel:
    """A random-init model built from config for the generated tasks (vocab from the toy tokenizer)."""

    family: Literal["roberta", "bart"]
    d_model: int = 32
    layers: int = 2
    heads: int = 4
    ffn_dim: int = 64
    max_positions: int = 64

    def config(self, vocab_size: int, num_labels: int = 2) -> PretrainedConfig:
        """Built by `finetune.tiny.tiny_config`, the one builder of tiny models (special ids <s>=0, <pad>=1,
        </s>=2, as BART/RoBERTa and data.toy_tokenizer)."""
        from finetune.tiny import tiny_config  # deferred on purpose: transformers loads on use (TYPE_CHECKING)

        return tiny_config(self.family, vocab_size=vocab_size, d=self.d_model, layers=self.layers, heads=self.heads,
                           ffn=self.ffn_dim, max_positions=self.max_positions, num_labels=num_labels)


@dataclass(frozen=True)
class Task:
    """One benchmark: data location and format, checkpoint, metric, decoding and training defaults."""

    name: str
    kind: TaskKind  # classification or seq2seq (no task trains a causal LM)
    hub_dataset: tuple[str, ...]  # positional args of datasets.load_dataset; () for generated tasks
    splits: Splits
    columns: Columns
    model: str  # hub checkpoint, or "tiny-<family>" for generated tasks
    metric: str  # name understood by finetune.metrics
    train: Recipe
    sizes: tuple[tuple[str, int], ...]  # split -> rows of the hub dataset (generated tasks: rows generated)
    sizes_source: str  # where the sizes come from: epochs become steps from them when no local files are given
    max_source_length: int
    max_target_length: int | None = None  # seq2seq only
    num_labels: int | None = None  # classification only
    label_names: tuple[str, ...] = ()  # index = label id
    generation: Generation | None = None  # seq2seq only
    src_lang: str | None = None  # mBART language codes
    tgt_lang: str | None = None
    local_files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # split -> file names tried under --data-dir
    tiny: TinyModel | None = None  # set for generated tasks
    aliases: tuple[str, ...] = field(default=(), compare=False)

    @property
    def generated(self) -> bool:
        return not self.hub_dataset

    @property
    def report_split(self) -> str:
        """The split final numbers are reported on (GLUE test labels are hidden: the paper reports dev)."""
        return "test" if self.splits.test else "validation"

    def local_names(self, split: str) -> tuple[str, ...]:
        """File names tried for ``split`` under a data dir: the task's own, then ``<split>.jsonl/.tsv``."""
        own = dict(self.local_files).get(split, ())
        generic = tuple(n for n in (f"{split}.jsonl", f"{split}.tsv") if n not in own)
        return own + generic

    def size(self, split: str) -> int:
        """Rows of ``split`` in the hub dataset (or generated), from ``sizes``; a role maps to its hub split name."""
        known = dict(self.sizes)
        name = split if split in known else self.splits.hub_name(split)
        if name not in known:
            raise ValueError(f"task {self.name!r} records no size for split {split!r} (known: {sorted(known)}); "
                             "pass --data-dir with local files, whose rows are counted")
        return known[name]


_TOY_SIZES = (("train", 2048), ("validation", 256), ("test", 256))

_GLUE_TRAIN = Recipe(
    lr=1e-4,  # spec §4 lr/schedule, MNLI/SST-2
    betas=(0.9, 0.98), eps=1e-6,  # spec §4 optimiser, MNLI/SST-2
    weight_decay=0.1,  # spec §4 ls/wd/clip: 0 / 0.1 / 1.0
    warmup_ratio=0.06,  # spec §4 lr/schedule: warmup ratio 0.06
    batch_size=32, grad_accum=1,  # spec §4 batch: 32 sents
    epochs=10,  # spec §4 length of training: 10 epochs
    label_smoothing=0.0, max_grad_norm=1.0,  # spec §4 ls/wd/clip
    eval_every=1, eval_unit="epoch",  # spec §4 model selection: every epoch on the first 1600 dev
    select_metric="accuracy", select_mode="max",  # spec §4 model selection: accuracy
    notes="dropout: RoBERTa hub config (0.1), spec §4; the paper pads to 512, we pad per batch",
)

_REGISTRY: tuple[Task, ...] = (
    Task(
        name="en-ro", kind="seq2seq", aliases=("wmt16-en-ro",),
        hub_dataset=("wmt16", "ro-en"),  # spec §4 data: HF wmt16 ro-en 610,320/1,999/1,999
        splits=Splits(),
        sizes=(("train", 610_320), ("validation", 1_999), ("test", 1_999)),
        sizes_source="HF dataset card wmt16, config ro-en",
        columns=Columns(inputs=("en",), target="ro", nested="translation"),
        model="facebook/mbart-large-cc25",  # spec §4 checkpoint
        src_lang="en_XX", tgt_lang="ro_RO",  # spec §4 checkpoint: src en_XX, tgt ro_RO
        metric="bleu_ro",  # spec §4 test metric: romanian_postprocess + sacrebleu -tok none
        max_source_length=150, max_target_length=150,  # spec §4 max lengths: src 150, tgt 150
        # spec §4 decoding: beam 5, min 1, max 200 in config; the release's final predict passes 150 (spec §6 defect)
        generation=Generation(num_beams=5, max_length=200, min_length=1, no_repeat_ngram_size=0, length_penalty=1.0),
        train=Recipe(
            lr=5e-5, betas=(0.9, 0.98), eps=1e-6,  # spec §4 optimiser / lr: AdamW (0.9,0.98) eps 1e-6, 5e-5
            weight_decay=0.01, warmup_ratio=0.0,  # spec §4 ls/wd/clip 0.1/0.01/1.0; warmup 0
            # spec §4 batch: 4096 tokens x 4 (fairseq batch_by_size, tokens = max(src, tgt), batch multiple 64)
            batch_size=None, max_tokens=4096, batch_multiple=64, grad_accum=4,
            max_steps=50_000,  # spec §4 length of training
            label_smoothing=0.1, max_grad_norm=1.0,
            eval_every=5000, eval_unit="step",  # spec §4 model selection: every 5000 steps on first 1600 val
            select_metric="loss", select_mode="min",  # spec §4 model selection: metric loss (lowest)
            dropout=0.1, attention_dropout=0.0,  # spec §4 dropout: script passes 0.1 / 0.0
            notes="prefix baseline prefers label smoothing 0 and weight decay 0 (script note, spec §4)",
        ),
        local_files=(
            ("train", ("train.jsonl", "train_sample.jsonl")),
            ("validation", ("validation.jsonl", "dev.jsonl")),
            ("test", ("test.jsonl",)),
        ),
    ),
    Task(
        name="xsum", kind="seq2seq",
        hub_dataset=("xsum",),  # spec §4 data: HF xsum 204,045/11,332/11,334
        splits=Splits(),
        sizes=(("train", 204_045), ("validation", 11_332), ("test", 11_334)),
        sizes_source="HF dataset card xsum",
        columns=Columns(inputs=("document",), target="summary"),
        model="facebook/bart-large",  # spec §4 checkpoint
        metric="rouge",  # spec §4 test metric: rouge_score with stemmer, F1 x100
        max_source_length=512, max_target_length=128,  # spec §4 max lengths: src 512, tgt 128
        # spec §4 decoding: beam 6, max 60, min 10, no_repeat_ngram 3, length_penalty 1.0
        generation=Generation(num_beams=6, max_length=60, min_length=10, no_repeat_ngram_size=3, length_penalty=1.0),
        train=Recipe(
            lr=5e-5, betas=(0.9, 0.999), eps=1e-8,  # spec §4 optimiser: HF defaults; lr 5e-5
            weight_decay=0.01, warmup_ratio=0.0,  # spec §4 ls/wd/clip 0.1/0.01/0.1; warmup 0
            batch_size=16, grad_accum=4,  # spec §4 batch: 16 x grad-accum 4
            max_steps=100_000,  # spec §4 length of training
            label_smoothing=0.1, max_grad_norm=0.1,
            eval_every=3000, eval_unit="step",  # spec §4 model selection: every 3000 steps on first 1600 val
            select_metric="rouge2", select_mode="max",  # spec §4 model selection: ROUGE-2
            notes="dropout: BART hub config (paper: 0.1), spec §4",
        ),
        local_files=(
            ("train", ("train.jsonl",)),
            ("validation", ("validation.jsonl", "dev.jsonl")),
            ("test", ("test.jsonl",)),
        ),
    ),
    Task(
        name="mnli", kind="classification",
        hub_dataset=("glue", "mnli"),  # spec §4 data: HF glue
        # spec §4: dev = validation_matched (9,815); MNLI-mm is evaluated on the full mismatched set
        splits=Splits(validation="validation_matched", test=None, extra=("validation_mismatched",)),
        sizes=(("train", 392_702), ("validation_matched", 9_815), ("validation_mismatched", 9_832)),
        sizes_source="HF dataset card nyu-mll/glue, config mnli",
        columns=Columns(inputs=("premise", "hypothesis"), target="label"),
        model="roberta-base",  # spec §4 checkpoint
        metric="accuracy",  # spec §4 test metric
        num_labels=3, label_names=("entailment", "neutral", "contradiction"),  # GLUE mnli label ids 0, 1, 2
        max_source_length=512,  # spec §4 max lengths: 512
        train=_GLUE_TRAIN,
        local_files=(
            # Not a train*.jsonl glob: train_heldout.jsonl (a held-out train sample) would be read as train.
            ("train", ("train.jsonl", "train_sample.jsonl")),
            ("validation", ("dev_matched.jsonl", "validation_matched.jsonl")),
            ("validation_mismatched", ("dev_mismatched.jsonl",)),
        ),
    ),
    Task(
        name="sst2", kind="classification", aliases=("sst-2",),
        hub_dataset=("glue", "sst2"),  # spec §4 data: HF glue; dev = validation (872)
        splits=Splits(test=None),
        sizes=(("train", 67_349), ("validation", 872), ("test", 1_821)),
        sizes_source="HF dataset card nyu-mll/glue, config sst2",
        columns=Columns(inputs=("sentence",), target="label"),
        model="roberta-base",  # spec §4 checkpoint
        metric="accuracy",
        num_labels=2, label_names=("negative", "positive"),  # GLUE sst2 label ids 0, 1
        max_source_length=512,  # spec §4 max lengths: 512
        train=_GLUE_TRAIN,
        local_files=(("train", ("train.tsv",)), ("validation", ("dev.tsv",))),
    ),
    Task(
        name="toy-cls", kind="classification",
        hub_dataset=(), splits=Splits(), sizes=_TOY_SIZES, sizes_source="generated (finetune.data)",
        columns=Columns(inputs=("text",), target="label"),
        model="tiny-roberta", tiny=TinyModel(family="roberta"),
        metric="accuracy",
        num_labels=2, label_names=("negative", "positive"),
        max_source_length=32,
        # Demo settings, not from the paper: a random-init tiny model needs a high lr and few steps.
        train=Recipe(
            lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_ratio=0.0, batch_size=32,
            grad_accum=1, max_steps=200, label_smoothing=0.0, max_grad_norm=1.0, eval_every=50,
            eval_unit="step", select_metric="accuracy", select_mode="max", eval_cap=256, seed=0,
        ),
    ),
    Task(
        name="toy-s2s", kind="seq2seq",
        hub_dataset=(), splits=Splits(), sizes=_TOY_SIZES, sizes_source="generated (finetune.data)",
        columns=Columns(inputs=("source",), target="target"),
        # d=64: at d=32 the decoder needs ~350 steps to learn the source alignment; at 64 about 125.
        model="tiny-bart", tiny=TinyModel(family="bart", d_model=64, ffn_dim=128),
        metric="bleu",  # plain sacreBLEU: toy-s2s stands in for en-ro without Romanian post-processing
        max_source_length=16, max_target_length=16,
        generation=Generation(num_beams=1, max_length=16, min_length=1),
        train=Recipe(
            lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_ratio=0.0, batch_size=32,
            grad_accum=1, max_steps=200, label_smoothing=0.0, max_grad_norm=1.0, eval_every=50,
            eval_unit="step", select_metric="loss", select_mode="min", eval_cap=256, seed=0,
        ),
    ),
)

TASKS: dict[str, Task] = {t.name: t for t in _REGISTRY}
_LOOKUP: dict[str, Task] = {n: t for t in _REGISTRY for n in (t.name, *t.aliases)}


def get_task(name: str) -> Task:
    """Resolve a task name or alias (case-insensitive)."""
    task = _LOOKUP.get(name.strip().lower())
    if task is None:
        raise ValueError(
            f"unknown task {name!r}; expected one of {sorted(_LOOKUP)}. "
            "To use your own data pass --data-dir with files in the task's format"
        )
    return task


def data_help(task: Task) -> str:
    """What `--data-dir` must hold for `task`, in words: the training and dev files (first existing name wins) and
    their columns, from the task's own `local_names` and `columns` (the reader is `finetune.data`)."""
    if task.generated:
        return f"nothing: task {task.name!r} is generated in memory"

    def files(split: str) -> str:
        first, *rest = task.local_names(split)
        return first + (f" (or {', '.join(rest)})" if rest else "")

    cols = task.columns
    columns = ", ".join((*cols.inputs, cols.target))
    extra = f", or rows {{{cols.nested!r}: {{...}}}}" if cols.nested else ""
    labels = (f"; {cols.target} is an id or a name: " + ", ".join(f"{i}={n}" for i, n in enumerate(task.label_names))
              if task.label_names else "")
    return (f"{files('train')} and {files('validation')}: .jsonl one JSON object per line, .tsv a header row then "
            f"tab-separated rows, UTF-8; columns {columns}{extra}{labels}")


def task_names() -> list[str]:
    """Canonical names, in registry order."""
    return list(TASKS)
