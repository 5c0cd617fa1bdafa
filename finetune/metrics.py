"""Evaluation metrics for the paper's four tasks (XSum, WMT16 en-ro, MNLI, SST-2).

Scores come from the field's own libraries (sacreBLEU, sacremoses, rouge-score), never re-implementations,
so numbers are comparable with published ones.
References always come from raw text, never from decoded (possibly truncated) label token ids as in the official code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: rouge-score pulls in nltk and scipy (~7 s), needless for a plan or GLUE
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import BLEU
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

BLEU_NAME = "bleu"
BLEU_RO_NAME = "bleu_ro"
ROUGE_NAME = "rouge"
ACCURACY_NAME = "accuracy"
ROUGE_KEYS: tuple[str, ...] = ("rouge1", "rouge2", "rougeLsum")


def _check_pair(metric: str, predictions: Sequence[Any], references: Sequence[Any], ref_word: str) -> None:
    """Reject empty or misaligned inputs: every metric here is one prediction per reference."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{metric} needs one prediction per {ref_word}; got {len(predictions)} predictions and "
            f"{len(references)} {ref_word}s; pass aligned sequences of equal length"
        )
    if len(predictions) == 0:
        raise ValueError(f"{metric} needs at least one example; got 0; pass a non-empty evaluation set")


# ---------------------------------------------------------------------------------------------- BLEU


@cache
def _bleu_scorer(tokenize: str | None, smooth_method: str) -> BLEU:
    from sacrebleu.metrics import BLEU  # deferred on purpose: only BLEU tasks load sacreBLEU

    return BLEU(tokenize=tokenize, smooth_method=smooth_method)


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with sacreBLEU defaults: 13a tokenisation, exp smoothing, case-sensitive."""
    _check_pair("bleu", hypotheses, references, "reference")
    return float(_bleu_scorer(None, "exp").corpus_score(list(hypotheses), [list(references)]).score)


@lru_cache(maxsize=1)
def _moses_ro() -> tuple[MosesPunctNormalizer, MosesTokenizer]:
    """Built once per process: the Moses objects compile hundreds of regexes."""
    from sacremoses import MosesPunctNormalizer, MosesTokenizer  # deferred on purpose: only WMT ro pays for it

    normalizer = MosesPunctNormalizer(lang="ro", pre_replace_unicode_punct=True, post_remove_control_chars=True)
    return normalizer, MosesTokenizer(lang="ro")


# wmt16-scripts normalise-romanian.py: cedilla forms (Ş ş Ţ ţ, legacy encodings) -> comma-below (Ș ș Ț ț).
_CEDILLA_TO_COMMA = str.maketrans({"\u015e": "\u0218", "\u015f": "\u0219", "\u0162": "\u021a", "\u0163": "\u021b"})
# wmt16-scripts remove-diacritics.py (assumes the comma forms above): Ș ș Ț ț Ă ă Â â Î î -> ASCII.
_REMOVE_DIACRITICS = str.maketrans(
    {
        "\u0218": "S", "\u0219": "s", "\u021a": "T", "\u021b": "t",
        "\u0102": "A", "\u0103": "a", "\u00c2": "A", "\u00e2": "a", "\u00ce": "I", "\u00ee": "i",
    }
)


def romanian_normalize(text: str) -> str:
    """One string through the mBART en-ro BLEU pipeline, the protocol behind the paper's en-ro numbers.

    Steps, in the order of the original shell pipe: Moses replace-unicode-punctuation, normalize-punctuation
    (-l ro), remove-non-printing-char, wmt16 normalise-romanian, wmt16 remove-diacritics, Moses tokenizer
    (-l ro -no-escape). Diacritics are dropped because references and outputs mix cedilla, comma-below
    and missing diacritics; scoring them would measure encoding noise, not translation quality.
    """
    normalizer, tokenizer = _moses_ro()
    text = normalizer.normalize(text)
    text = text.translate(_CEDILLA_TO_COMMA).translate(_REMOVE_DIACRITICS)
    return str(tokenizer.tokenize(text, escape=False, return_str=True))


def bleu_ro(hypotheses: list[str], references: list[str]) -> float:
    """The paper's en-ro BLEU (0-100): `romanian_normalize` both sides, then sacreBLEU on the Moses tokens.

    Matches `sacrebleu -tok none -s none`: no further tokenisation and no smoothing, as in the mBART recipe.
    """
    _check_pair("bleu_ro", hypotheses, references, "reference")
    hyps = [romanian_normalize(h) for h in hypotheses]
    refs = [romanian_normalize(r) for r in references]
    return float(_bleu_scorer("none", "none").corpus_score(hyps, [refs]).score)


# --------------------------------------------------------------------------------------------- ROUGE

# A boundary is whitespace after . ! or ? (optionally followed by a closing quote/bracket) when the next
# token starts with an upper-case letter, a digit or an opening quote. Offline stand-in for nltk's punkt,
# whose data cannot be downloaded here; it splits wrongly after abbreviations such as "Mr. Smith".
_SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])([\"'\u201d\u2019)\]]?)\s+(?=[\"'\u201c\u2018(]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences for rougeLsum; existing newlines are kept as boundaries too."""
    marked = _SENTENCE_BOUNDARY.sub(lambda m: m.group(1) + "\n", text.strip())
    return [s.strip() for s in marked.split("\n") if s.strip()]


@lru_cache(maxsize=1)
def _rouge_scorer() -> RougeScorer:
    from rouge_score.rouge_scorer import RougeScorer  # deferred on purpose: only ROUGE tasks load it

    return RougeScorer(list(ROUGE_KEYS), use_stemmer=True)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-1/2/Lsum F1 x 100, plain mean over examples, Porter stemming on.

    The mean equals HF `evaluate`'s bootstrap "mid" aggregate up to resampling noise, and is deterministic.
    rougeLsum is computed on texts with one sentence per line (see `split_sentences`), as in the
    summarisation literature; without the split it degenerates to rougeL.
    """
    _check_pair("rouge", predictions, references, "reference")
    scorer = _rouge_scorer()
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))
        for key in ROUGE_KEYS:
            totals[key] += scores[key].fmeasure
    return {key: 100.0 * total / len(predictions) for key, total in totals.items()}


# ------------------------------------------------------------------------------------------ accuracy


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of exact matches, in [0, 1] (not a percentage, unlike BLEU and ROUGE)."""
    _check_pair("accuracy", predictions, labels, "label")
    return sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels)


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Metric:
    """A named metric: `fn(predictions, references)` returns the named `scores`; `primary` is the task score."""

    name: str
    fn: Callable[[Sequence[Any], Sequence[Any]], dict[str, float]]
    primary: str
    scores: tuple[str, ...]  # the keys `fn` returns (a recipe may select checkpoints on any of them)
    label: str = ""  # the primary score's name as papers print it (BLEU, ROUGE-2, accuracy)
    scale: str = ""  # its unit and range, for axis titles and table headers

    def __call__(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        return self.fn(predictions, references)


METRICS: dict[str, Metric] = {
    BLEU_NAME: Metric(BLEU_NAME, lambda p, r: {"bleu": bleu(list(p), list(r))}, primary="bleu", scores=("bleu",),
                      label="BLEU", scale="sacreBLEU, 0-100"),
    BLEU_RO_NAME: Metric(BLEU_RO_NAME, lambda p, r: {"bleu_ro": bleu_ro(list(p), list(r))}, primary="bleu_ro",
                         scores=("bleu_ro",), label="BLEU", scale="mBART en-ro protocol, 0-100"),
    # The paper selects XSum checkpoints on ROUGE-2.
    ROUGE_NAME: Metric(ROUGE_NAME, lambda p, r: rouge(list(p), list(r)), primary="rouge2", scores=ROUGE_KEYS,
                        label="ROUGE-2", scale="F1, 0-100"),
    ACCURACY_NAME: Metric(ACCURACY_NAME, lambda p, r: {"accuracy": accuracy(p, r)}, primary="accuracy",
                          scores=("accuracy",), label="accuracy", scale="fraction correct, 0-1"),
}


def get_metric(name: str) -> Metric:
    """Look a metric up by name, failing loudly on typos (config values are free text)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; expected one of {sorted(METRICS)}")
    return METRICS[name]
