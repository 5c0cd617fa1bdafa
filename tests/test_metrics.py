"""Tests for finetune.metrics: real values, hand-computed where the arithmetic is small enough to check."""

from __future__ import annotations

import math
import re

import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from finetune.metrics import (
    METRICS,
    ROUGE_KEYS,
    accuracy,
    bleu,
    bleu_ro,
    get_metric,
    romanian_normalize,
    rouge,
    split_sentences,
)

# ---------------------------------------------------------------------------------------------- BLEU


def test_bleu_identical_corpus_is_100() -> None:
    corpus = ["The cat sat on the mat.", "A second, longer sentence with punctuation!"]
    assert bleu(corpus, corpus) == pytest.approx(100.0)


def test_bleu_hand_computed_equal_length() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (no punctuation, so 13a == whitespace split):
    #   1-grams: the(clipped to 1) cat sat on mat        -> 5/6
    #   2-grams: the-cat cat-sat sat-on                  -> 3/5
    #   3-grams: the-cat-sat cat-sat-on                  -> 2/4
    #   4-grams: the-cat-sat-on                          -> 1/3
    #   BP = 1 (6 vs 6 tokens); BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** (1/4)
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(100 * 12**-0.25)
    assert 100 * 12**-0.25 == pytest.approx(53.7285, abs=1e-4)


def test_bleu_hand_computed_brevity_penalty() -> None:
    # hyp "the cat sat on the" is a prefix of the 6-token ref: every precision is 1, BP = exp(1 - 6/5).
    assert bleu(["the cat sat on the"], ["the cat sat on the mat"]) == pytest.approx(100 * math.exp(-0.2))


def test_bleu_matches_sacrebleu_corpus_bleu() -> None:
    hyps = ["The quick brown fox jumps over the lazy dog.", "It was raining, so we stayed home!"]
    refs = ["The fast brown fox jumped over the lazy dog.", "Because it rained, we stayed at home."]
    expected = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert bleu(hyps, refs) == pytest.approx(expected)
    assert bleu(hyps, refs) == pytest.approx(28.778069, abs=1e-5)


def test_bleu_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match=r"bleu needs one prediction per reference; got 2 predictions and 1"):
        bleu(["a", "b"], ["a"])


# ------------------------------------------------------------------------------------ en-ro protocol


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # comma-below forms, French quotes -> ASCII quotes, colon split off, diacritics stripped
        ("Știință și țară: «ăâî»", 'Stiinta si tara : " aai "'),
        # cedilla forms and German-style quotes, upper case
        ("Ştiinţă şi ţară: „ĂÂÎ”", 'Stiinta si tara : " AAI "'),
        # every Romanian diacritic, both cases, both S/T encodings
        ("ȘȚşţ ŞŢ ăĂâÂîÎ", "STst ST aAaAiI"),
        # unicode ellipsis -> "...", zero-width space (non-printing) removed, punctuation tokenised
        ("Preţul: 3,5 lei… «bun»\u200b!", 'Pretul : 3,5 lei ... " bun " !'),
    ],
)
def test_romanian_normalize_pins_pipeline_output(raw: str, expected: str) -> None:
    assert romanian_normalize(raw) == expected


def test_bleu_ro_ignores_diacritics_that_plain_bleu_counts() -> None:
    hyp = ["Ea a mers la piata si a cumparat paine."]
    ref = ["Ea a mers la piaţă şi a cumpărat pâine."]
    assert bleu_ro(hyp, ref) == pytest.approx(100.0)
    assert bleu(hyp, ref) == pytest.approx(29.071537, abs=1e-5)


def test_bleu_ro_uses_no_smoothing() -> None:
    # "a b c d" vs "a b c e": precisions 3/4, 2/3, 1/2, 0/1. The mBART recipe (`sacrebleu -s none`) gives 0;
    # sacreBLEU's default exp smoothing replaces 0/1 by 1/(2*1): (3/4 * 2/3 * 1/2 * 1/2) ** (1/4) = 8 ** -1/4.
    assert bleu_ro(["a b c d"], ["a b c e"]) == 0.0
    assert bleu(["a b c d"], ["a b c e"]) == pytest.approx(100 * 8**-0.25)


# --------------------------------------------------------------------------------------------- ROUGE


def test_split_sentences_cases() -> None:
    assert split_sentences("The cat sat. The dog ran.") == ["The cat sat.", "The dog ran."]
    assert split_sentences('He said "Stop." Then he left!') == ['He said "Stop."', "Then he left!"]
    three = ["Is it 3.5?", "2 cats came.", '"Yes" said he.']
    assert split_sentences('Is it 3.5? 2 cats came. "Yes" said he.') == three
    # no split before a lower-case word or inside a number; existing newlines are boundaries
    assert split_sentences("It cost 3.5 dollars. then more") == ["It cost 3.5 dollars. then more"]
    assert split_sentences("one line\n\nother line ") == ["one line", "other line"]
    # documented limitation: abbreviations split
    assert split_sentences("Mr. Smith came.") == ["Mr.", "Smith came."]
    assert split_sentences("") == []


def test_rouge_identical_is_100() -> None:
    texts = ["The cat sat on the mat. It was happy.", "Stocks fell sharply on Monday."]
    assert rouge(texts, texts) == pytest.approx(dict.fromkeys(ROUGE_KEYS, 100.0))


def test_rouge_hand_computed() -> None:
    # unigrams {the, cat, sat, down} vs {the, cat, lay, down}: 3 shared -> P = R = F = 3/4
    # bigrams  {the-cat, cat-sat, sat-down} vs {the-cat, cat-lay, lay-down}: 1 shared -> 1/3
    # LCS "the cat down" = 3 of 4 -> 3/4
    scores = rouge(["the cat sat down"], ["the cat lay down"])
    assert scores == pytest.approx({"rouge1": 75.0, "rouge2": 100 / 3, "rougeLsum": 75.0})


def test_rouge_mean_over_examples() -> None:
    scores = rouge(["the cat sat down", "same text"], ["the cat lay down", "same text"])
    assert scores["rouge1"] == pytest.approx((75.0 + 100.0) / 2)


def test_rouge_uses_stemming() -> None:
    # Porter stems both "runs" and "running" to "run": every n-gram matches. Unstemmed, rouge1 = 2/3.
    assert rouge(["he runs fast"], ["he running fast"]) == pytest.approx(dict.fromkeys(ROUGE_KEYS, 100.0))
    unstemmed = RougeScorer(["rouge1"], use_stemmer=False).score("he running fast", "he runs fast")
    assert unstemmed["rouge1"].fmeasure == pytest.approx(2 / 3)


def test_rougelsum_uses_sentence_split() -> None:
    pred, ref = "The dog ran. The cat sat.", "The cat sat. The dog ran."
    # As one line, LCS("the dog ran the cat sat", "the cat sat the dog ran") = 3 of 6 tokens -> 50.
    one_line = RougeScorer(["rougeLsum"], use_stemmer=True).score(ref, pred)["rougeLsum"].fmeasure
    assert one_line == pytest.approx(0.5)
    # Split, each reference sentence is fully covered by the union LCS over prediction sentences -> 100.
    # rouge2: bigrams the-dog dog-ran ran-the the-cat cat-sat vs ..., only ran-the/sat-the differ -> 4/5.
    assert rouge([pred], [ref]) == pytest.approx({"rouge1": 100.0, "rouge2": 80.0, "rougeLsum": 100.0})


def test_rouge_rejects_empty() -> None:
    with pytest.raises(ValueError, match=r"rouge needs at least one example; got 0"):
        rouge([], [])


# ------------------------------------------------------------------------------------------ accuracy


def test_accuracy_is_a_fraction() -> None:
    assert accuracy([1, 0, 2, 2], [1, 0, 1, 2]) == pytest.approx(0.75)
    assert accuracy([0, 0], [0, 0]) == 1.0
    assert accuracy([1], [0]) == 0.0


def test_accuracy_errors() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("accuracy needs one prediction per label; got 3 predictions and 2 labels; pass aligned"),
    ):
        accuracy([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match=re.escape("accuracy needs at least one example; got 0; pass a non-empty")):
        accuracy([], [])


# ------------------------------------------------------------------------------------------ registry


def test_registry_names_and_primaries() -> None:
    assert sorted(METRICS) == ["accuracy", "bleu", "bleu_ro", "rouge"]
    assert {name: m.primary for name, m in METRICS.items()} == {
        "bleu": "bleu",
        "bleu_ro": "bleu_ro",
        "rouge": "rouge2",
        "accuracy": "accuracy",
    }
    assert all(m.name == n for n, m in METRICS.items())


def test_registry_fns_return_their_primary() -> None:
    texts = ["the cat sat on the mat"]
    for name in ("bleu", "bleu_ro", "rouge"):
        metric = get_metric(name)
        assert metric(texts, texts)[metric.primary] == pytest.approx(100.0)
    assert get_metric("accuracy").fn([1, 0], [1, 1]) == {"accuracy": 0.5}


def test_get_metric_unknown_name() -> None:
    expected = "unknown metric 'blue'; expected one of ['accuracy', 'bleu', 'bleu_ro', 'rouge']"
    with pytest.raises(ValueError, match=re.escape(expected)):
        get_metric("blue")
