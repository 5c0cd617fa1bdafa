"""Building a task's model: fit checks before any weight is read, and decoding that starts where training does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import AutoModelForSeq2SeqLM, GenerationConfig, PreTrainedTokenizerFast

from finetune import models
from finetune.designpoint import DesignPoint
from finetune.models import build, check_fit, check_lengths
from finetune.presets import get_preset
from finetune.tasks import get_task
from finetune.tiny import tiny_config

PA = DesignPoint.from_dict({"ffn": {"form": "relu", "size": 4}})


@pytest.fixture()
def no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build or load a model fails the test: the checks must come first."""
    class Refuse:
        @staticmethod
        def from_config(*a: object, **k: object) -> None:
            raise AssertionError("a model was built before the fit check")

        from_pretrained = from_config

    monkeypatch.setattr(models, "AutoModelForSequenceClassification", Refuse)
    monkeypatch.setattr(models, "AutoModelForSeq2SeqLM", Refuse)


def test_inputs_longer_than_the_position_table_are_refused_before_weights_load(no_weights: None) -> None:
    # toy-cls uses a tiny RoBERTa with max_position_embeddings 66: 64 positions after RoBERTa's offset of 2.
    with pytest.raises(ValueError, match=(
            r"^inputs of up to max_length=65 tokens do not fit model type 'roberta': its position table embeds at "
            r"most 64 positions \(prompt vectors take none\); set max_length <= 64$")):
        build(get_task("toy-cls"), get_preset("prompt_tuning").design, max_length=65)


def test_targets_and_decoding_longer_than_the_decoder_table_are_refused() -> None:
    check_lengths(get_task("en-ro"), tiny_config("bart", max_positions=200), 150, 150)  # en-ro decodes <= 200
    config = tiny_config("bart", max_positions=100)
    with pytest.raises(ValueError, match=(
            r"^targets of max_target_length=100 and decoding up to max_length=200 tokens \(task 'en-ro'\) need 200 "
            r"decoder positions, but model type 'bart' embeds at most 100; set both <= 100$")):
        check_lengths(get_task("en-ro"), config, 100, 100)


def test_bitfit_without_biases_is_refused_at_the_fit_check() -> None:
    with pytest.raises(ValueError, match=r"^backbone=bias \(BitFit\) .* model type 'llama' has none"):
        check_fit(get_task("sst2"), tiny_config("llama"), get_preset("bitfit").design)
    check_fit(get_task("sst2"), tiny_config("qwen2"), get_preset("bitfit").design)  # Qwen2 has q/k/v biases


# ---- item 8: decoding starts from the token training's decoder inputs start with ------------------------------------
WORDS = ("the", "house", "is", "big", "casa", "este", "mare")


def lang_tokenizer(template: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose sequences follow `template` (mBART-cc25: "$A </s> ro_RO"; mBART-50:
    "ro_RO $A </s>"), with the language codes as special tokens, as in mBART's own tokenizers."""
    vocab = {t: i for i, t in enumerate(("<s>", "<pad>", "</s>", "<unk>", "en_XX", "ro_RO") + WORDS)}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    backend.post_processor = TemplateProcessing(single=template, special_tokens=[(t, vocab[t]) for t in
                                                                                 ("</s>", "ro_RO")])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", additional_special_tokens=["en_XX", "ro_RO"])


def mbart_folder(tmp_path: Path, template: str, generation_config: bool) -> Path:
    """A local checkpoint shaped like facebook/mbart-large-cc25: no decoder_start_token_id in config.json, with or
    without a generation_config.json (a stale one that starts from <s>)."""
    folder = tmp_path / f"mbart-{generation_config}"
    tok = lang_tokenizer(template)
    config = tiny_config("mbart", vocab_size=len(tok), decoder_start_token_id=None, forced_eos_token_id=None)
    AutoModelForSeq2SeqLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    gen = folder / "generation_config.json"
    if generation_config:
        GenerationConfig(decoder_start_token_id=0, bos_token_id=0, eos_token_id=2, pad_token_id=1).save_pretrained(
            folder)
    elif gen.exists():
        gen.unlink()
    return folder


def first_tokens(folder: Path) -> torch.Tensor:
    model, tok = build(get_task("en-ro"), PA, str(folder))
    ids = tok(["the house is big", "the house"], padding=True, return_tensors="pt")
    gen = {**get_task("en-ro").generation.kwargs(), "num_beams": 2, "max_length": 4}
    return model.generate(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], **gen)[:, :2]


@pytest.mark.parametrize("generation_config", [False, True])
def test_mbart_cc25_decodes_from_the_target_language_code(tmp_path: Path, generation_config: bool) -> None:
    # Labels end "</s> ro_RO"; mBART's shift wraps the last token to the front, so training decoder inputs start with
    # ro_RO, and so must decoding (before: <s>, id 0, whenever config.json lacked decoder_start_token_id).
    folder = mbart_folder(tmp_path, "$A </s> ro_RO", generation_config)
    ro = lang_tokenizer("$A").convert_tokens_to_ids("ro_RO")
    out = first_tokens(folder)
    assert out[:, 0].tolist() == [ro, ro]
    assert out[0, 1] != ro  # no forced language code after it: cc25's labels begin with the text


def test_mbart50_convention_starts_from_eos_and_forces_the_language_code(tmp_path: Path) -> None:
    # mBART-50 labels are "ro_RO ... </s>": training decoder inputs are "</s> ro_RO ...", so decoding starts from
    # </s> and the language code is forced as the first generated token.
    folder = mbart_folder(tmp_path, "ro_RO $A </s>", generation_config=True)
    ro = lang_tokenizer("$A").convert_tokens_to_ids("ro_RO")
    assert first_tokens(folder).tolist() == [[2, ro], [2, ro]]


def test_bart_decodes_from_its_configured_start_then_bos() -> None:
    # BART prepends decoder_start_token_id (</s>) to labels "<s> ... </s>": decoding starts </s>, <s>.
    model, tok = build(get_task("toy-s2s"), PA)
    ids = tok(["good"], return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, num_beams=1, max_length=4, min_length=1)
    assert out[0, :2].tolist() == [model.config.decoder_start_token_id, tok.bos_token_id] == [2, 0]
