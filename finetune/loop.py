"""One trial: train one design point on one task and evaluate it. Reads top to bottom; imports neither Ray nor MLflow.

Fidelity is counted in optimizer steps. Every `eval_every` steps (and at the last) the loop evaluates on the first
`eval_cap` dev examples and reports `REPORT_KEYS`: the score at this step and the score of the checkpoint selected so
far by the run's `select_metric` / `select_mode` (`finetune.selection`). Batches come from `finetune.batching`
(by sentences, or by padded tokens when `max_tokens` is set), addressed by step so a resumed run sees the same
batches. A NaN or diverging loss raises `TrialFailure`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from transformers import get_scheduler

from finetune import data as D
from finetune.accounting import ParamCounts, count_params
from finetune.batching import SentenceBatches, TokenBatches, item_lengths, token_batches
from finetune.checkpoint import load_resume, restore_selected, save_final, save_resume, save_selected
from finetune.designpoint import DesignPoint
from finetune.engine import make_engine
from finetune.inject import inject
from finetune.metrics import get_metric
from finetune.models import build
from finetune.reporter import NullReporter, Reporter, TrialFailure
from finetune.selection import Selection
from finetune.spans import mark, timed
from finetune.trainconfig import TrainConfig


@dataclass
class TrialResult:
    step: int
    score: float  # at the last evaluation: what the search compares at equal fidelity
    selected_score: float  # at the checkpoint selected by select_metric / select_mode: the trial's result
    selected_step: int
    counts: ParamCounts
    last: dict[str, float] = field(default_factory=dict)
    out_dir: str | None = None
    model: Any = field(default=None, repr=False)  # the trained model (the selected checkpoint when out_dir is set)
    engine: str = ""  # which engine trained it (DeepSpeedEngine or TorchEngine)


@dataclass
class Data:
    """Encoded splits, the collator, which rows form micro-batch k (`batches`), and the evaluation batches."""

    train: list[dict]
    eval: list[dict]
    collate: Callable
    batches: SentenceBatches | TokenBatches
    eval_batches: list[list[int]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(task: Any, tokenizer: Any, cfg: TrainConfig) -> Data:
    train_ex = D.load_examples(task, "train", cfg.data_dir, limit=cfg.train_limit, seed=cfg.seed)
    eval_ex = D.load_examples(task, "validation", cfg.data_dir, limit=cfg.eval_cap, seed=cfg.seed)
    if task.kind == "classification":
        enc = lambda ex: D.encode_classification(ex, tokenizer, cfg.max_length)  # noqa: E731
        collate = D.collate_classification
    else:
        enc = lambda ex: D.encode_seq2seq(ex, tokenizer, cfg.max_length, cfg.max_target_length,  # noqa: E731
                                          task.src_lang, task.tgt_lang)
        collate = D.collate_seq2seq
    pad = tokenizer.pad_token_id
    train_items, eval_items = enc(train_ex), enc(eval_ex)
    if cfg.max_tokens is None:
        lengths = item_lengths(train_items) if cfg.group_by_length else None
        batches: SentenceBatches | TokenBatches = SentenceBatches(len(train_items), cfg.batch_size, cfg.seed, lengths)
        eval_batches = [list(range(i, min(i + cfg.batch_size, len(eval_items))))
                        for i in range(0, len(eval_items), cfg.batch_size)]
    else:
        batches = TokenBatches(item_lengths(train_items), cfg.max_tokens, cfg.seed, cfg.batch_multiple, cfg.batch_size)
        # Decoding writes up to the generation length per row (times the beams), whatever the source length: cap the
        # evaluation rows so that rows × generation length stays within the same token budget.
        gen = task.generation.max_length if task.generation else 0
        eval_batches = token_batches(item_lengths(eval_items), cfg.max_tokens, 1,
                                     cfg.batch_size or (max(1, cfg.max_tokens // gen) if gen else None))
    return Data(train_items, eval_items, lambda items: collate(items, pad), batches, eval_batches)


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    """transformers' schedulers by name; the recipes' `polynomial` (power 1) decays linearly to lr_end."""
    name = {"constant": "constant_with_warmup"}.get(cfg.schedule, cfg.schedule)
    extra = {"scheduler_specific_kwargs": {"lr_end": cfg.lr_end, "power": 1.0}} if name == "polynomial" else {}
    return get_scheduler(name, optimizer, num_warmup_steps=int(cfg.warmup_ratio * cfg.max_steps),
                         num_training_steps=cfg.max_steps, **extra)


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters as two optimizer groups: matrices decay by `weight_decay`, vectors (biases, LayerNorm
    gains) do not. Frozen parameters are in neither, so the optimizer holds state only for what trains."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]  # biases, LayerNorms
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def loss_of(out: Any, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    if smoothing == 0.0:
        return out.loss
    logits = out.logits.float()
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=D.IGNORE_INDEX,
                           label_smoothing=smoothing)


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Any, tokenizer: Any, data: Data, cfg: TrainConfig,
             device: torch.device) -> tuple[dict[str, float], float]:
    """(named scores, eval loss) on the capped dev set; seq2seq decodes with the task's beam search."""
    model.eval()
    metric = get_metric(task.metric)
    preds: list[Any] = []
    refs: list[Any] = []
    losses = []
    for rows in data.eval_batches:
        batch = to_device(data.collate([data.eval[i] for i in rows]), device)
        inputs = {k: v for k, v in batch.items() if k != "references"}
        out = model(**inputs)
        losses.append(float(out.loss))
        if task.kind == "classification":
            preds += out.logits.argmax(-1).tolist()
            refs += batch["labels"].tolist()
        else:
            gen = dict(task.generation.kwargs()) if task.generation else {}
            if cfg.num_beams is not None:
                gen["num_beams"] = cfg.num_beams
            ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **gen)
            preds += tokenizer.batch_decode(ids, skip_special_tokens=True)
            refs += batch["references"]  # raw text, never decoded from truncated label ids
    model.train()
    return metric(preds, refs), float(np.mean(losses))


@dataclass
class Tally:
    """Running training statistics between evaluations (and the divergence check's smoothed loss)."""

    ema: float | None = None
    best_ema: float = math.inf
    tokens: int = 0
    run_loss: float = 0.0
    run_n: int = 0
    train_time: float = 0.0
    last_loss: float = math.nan


def train_step(engine: Any, data: Data, cfg: TrainConfig, task: Any, step: int, tally: Tally, device: Any) -> None:
    """One optimizer step of `grad_accum` micro-batches; rank r of `world` trains on its rows of each."""
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
    tick = time.perf_counter()
    for micro in range(cfg.grad_accum):
        rows = data.batches.rows((step - 1) * cfg.grad_accum + micro, rank, world)
        batch = to_device(data.collate([data.train[i] for i in rows]), device)
        batch.pop("references", None)
        loss = loss_of(engine(**batch), batch["labels"], cfg.label_smoothing)
        engine.backward(loss)
        engine.step()
        value = float(loss.detach())
        tally.tokens += int(batch["attention_mask"].sum())
        if task.kind == "seq2seq":  # target tokens; a classification label is not a token
            tally.tokens += int((batch["labels"] != D.IGNORE_INDEX).sum())
        tally.run_loss, tally.run_n, tally.last_loss = tally.run_loss + value, tally.run_n + 1, value
        if not math.isfinite(value):
            raise TrialFailure(f"loss is {value} (not finite)", step)
        tally.ema = value if tally.ema is None else 0.9 * tally.ema + 0.1 * value
    tally.train_time += time.perf_counter() - tick
    tally.best_ema = min(tally.best_ema, tally.ema)
    if step >= 3 and tally.ema > cfg.divergence_factor * tally.best_ema:  # smoothed: one noisy batch is not divergence
        raise TrialFailure(f"loss diverged: smoothed loss {tally.ema:.3g} > {cfg.divergence_factor:g} × its best "
                           f"{tally.best_ema:.3g}", step)


@timed("train")
def train(design: DesignPoint, cfg: TrainConfig, reporter: Reporter | None = None,
          on_step: Callable[[int, float], None] | None = None) -> TrialResult:
    reporter = reporter or NullReporter()
    seed_everything(cfg.seed)
    task = cfg.resolved_task()
    model, tokenizer = build(task, design, cfg.model, cfg.max_length, cfg.max_target_length, dropout=cfg.dropout,
                             attention_dropout=cfg.attention_dropout)
    inject(model, design)
    counts = count_params(design, model.config, task.kind)
    data = prepare_data(task, tokenizer, cfg)
    optimizer = make_optimizer(model, cfg)
    scheduler = lr_schedule(optimizer, cfg)
    engine = make_engine(model, optimizer, scheduler, cfg)
    device = next(engine.module.parameters()).device
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    state = load_resume(out_dir, engine) if out_dir else None
    start = state["step"] if state else 0
    selection = Selection.from_state(state and state.get("selection"), cfg.select_metric, cfg.select_mode)
    tally, t0, last = Tally(), time.perf_counter(), {}
    if state and state.get("report"):
        # The resume point is written before its evaluation is reported, so a trial stopped in between (SIGINT, a
        # lost node) would lose that evaluation: report it again. Receivers keep one report per step (the MLflow
        # callback skips a step it has; a rung records a trial once).
        last = dict(state["report"])
        reporter.report(last)
    rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() \
        else 0  # under Ray Train / DeepSpeed each rank trains its share; rank 0 saves

    engine.module.train()
    for step in range(start + 1, cfg.max_steps + 1):
        train_step(engine, data, cfg, task, step, tally, device)
        if on_step:
            on_step(step, tally.last_loss)
        if step % cfg.eval_every and step != cfg.max_steps:
            continue
        scores, eval_loss = evaluate(engine.module, task, tokenizer, data, cfg, device)
        last = {"step": step, "score": scores[get_metric(task.metric).primary],
                "loss": tally.run_loss / max(tally.run_n, 1), "eval_loss": eval_loss,
                "tokens_per_s": tally.tokens / max(tally.train_time, 1e-9), "trainable": counts.trainable,
                "stored": counts.stored, "fraction": counts.fraction, "elapsed_s": time.perf_counter() - t0,
                **{f"metric.{k}": v for k, v in scores.items()}}
        selected_now = selection.offer(last)
        last.update(selection.report())
        tally.run_loss, tally.run_n = 0.0, 0
        if out_dir:
            _save(out_dir, engine, design, step, cfg, selection, selected_now, last, rank)
        mark("train.report", step=step)  # a scheduler may end the trial inside the report: mark it first
        reporter.report(last)  # every rank: Ray Train's report is a collective that all workers must join

    return TrialResult(step=cfg.max_steps, score=last.get("score", math.nan),
                       selected_score=last.get("selected_score", math.nan),
                       selected_step=int(last.get("selected_step", 0)), counts=counts, last=last,
                       out_dir=str(out_dir) if out_dir else None, model=engine.module, engine=type(engine).__name__)


def _save(out_dir: Path, engine: Any, design: DesignPoint, step: int, cfg: TrainConfig, selection: Selection,
          selected_now: bool, last: dict[str, Any], rank: int) -> None:
    """After an evaluation: keep a newly selected checkpoint, then resume state, or at max_steps the final one.

    Every rank calls it: DeepSpeed writes one ZeRO shard per rank into the resume point; rank 0 writes the rest.
    """
    model = engine.module
    if step != cfg.max_steps:
        if selected_now and rank == 0:
            save_selected(out_dir, model)
        # Plain floats and ints: the resume state is read weights_only (no numpy scalars).
        report = {k: v.item() if hasattr(v, "item") else v for k, v in last.items()}
        save_resume(out_dir, engine, step, {"selection": selection.state(), "report": report})
        return
    if rank != 0:
        return
    if not selected_now:  # the checkpoint that counts is an earlier one: its weights are what the trial keeps
        restore_selected(out_dir, model)
    # Before the last report: a scheduler that stops at max_t ends the trial inside that report call.
    save_final(out_dir, model, design, {"task": cfg.task, "model": cfg.model, "step": step,
                                        "selected_step": selection.step, "select_metric": selection.metric,
                                        "select_mode": selection.mode, "score": last["selected_score"],
                                        "last_score": last["score"]}, cfg.keep_resume_state)
