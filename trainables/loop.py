"""One trial: train one design point on one task and evaluate it. Reads top to bottom; imports neither Ray nor MLflow.

Fidelity is counted in optimizer steps. Every `eval_every` steps (and at the last) the loop evaluates on the first
`eval_cap` dev examples and reports `REPORT_KEYS`. A NaN or diverging loss raises `TrialFailure`.
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
from transformers import get_polynomial_decay_schedule_with_warmup
from transformers.trainer_pt_utils import get_length_grouped_indices

from trainables import data as D
from trainables.checkpoint import load_resume, save_final, save_resume
from trainables.config import TrainConfig
from trainables.counting import ParamCounts, count_params
from trainables.design import DesignPoint
from trainables.engine import make_engine
from trainables.inject import inject
from trainables.metrics import get_metric
from trainables.models import build
from trainables.report import NullReporter, Reporter, TrialFailure


@dataclass
class TrialResult:
    step: int
    score: float  # at the last evaluation: what the search compares at equal fidelity
    best_score: float
    counts: ParamCounts
    last: dict[str, float] = field(default_factory=dict)
    out_dir: str | None = None
    model: Any = field(default=None, repr=False)  # the trained model, for callers that go on to use it
    engine: str = ""  # which engine trained it (DeepSpeedEngine or TorchEngine)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class BatchOrder:
    """Which training rows form the k-th batch: a fresh seeded order per epoch, so any step can be resumed exactly.

    Without `lengths` an epoch is a plain random permutation. With `lengths` (tokens per training row) it is grouped
    by length the way transformers' Trainer does for `group_by_length` (`get_length_grouped_indices`: the seeded
    permutation cut into mega-batches of 50 batches, each sorted by length), so a batch pads to about its own length
    instead of the longest of 32 random rows (3x fewer tokens on SST-2, whose rows are mostly short phrases). The
    rows seen per epoch are the same; only which rows share a batch changes.
    """

    def __init__(self, n: int, size: int, seed: int, lengths: list[int] | None = None) -> None:
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths must give one length per training row ({n}), got {len(lengths)}")
        self.n, self.size, self.seed, self.lengths = n, size, seed, lengths
        self._epoch, self._order = -1, []  # the current epoch's order: grouping 55k rows takes ~0.1 s

    def batch(self, k: int) -> list[int]:
        epoch, j = divmod(k, max(1, self.n // self.size))
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            if self.lengths is None:
                self._order = torch.randperm(self.n, generator=gen).tolist()
            else:
                self._order = get_length_grouped_indices(self.lengths, self.size, generator=gen)
            self._epoch = epoch
        return self._order[j * self.size:(j + 1) * self.size]


def batch_at(k: int, n: int, size: int, seed: int) -> list[int]:
    """The k-th training batch of a plain random order (`BatchOrder` without lengths)."""
    return BatchOrder(n, size, seed).batch(k)


def prepare_data(task: Any, tokenizer: Any, cfg: TrainConfig) -> tuple[list[dict], list[dict], Callable]:
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
    return enc(train_ex), enc(eval_ex), lambda items: collate(items, pad)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def loss_of(out: Any, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    if smoothing == 0.0:
        return out.loss
    logits = out.logits.float()
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=D.IGNORE_INDEX,
                           label_smoothing=smoothing)


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Any, tokenizer: Any, items: list[dict], collate: Callable,
             cfg: TrainConfig, device: torch.device) -> tuple[dict[str, float], float]:
    """(named scores, eval loss) on the capped dev set; seq2seq decodes with the task's beam search."""
    model.eval()
    metric = get_metric(task.metric)
    preds: list[Any] = []
    refs: list[Any] = []
    losses = []
    for i in range(0, len(items), cfg.batch_size):
        batch = to_device(collate(items[i:i + cfg.batch_size]), device)
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


def train(design: DesignPoint, cfg: TrainConfig, reporter: Reporter | None = None,
          on_step: Callable[[int, float], None] | None = None) -> TrialResult:
    reporter = reporter or NullReporter()
    seed_everything(cfg.seed)
    task = cfg.resolved_task()
    model, tokenizer = build(task, design, cfg.model)
    inject(model, design)
    counts = count_params(design, model.config, task.kind)
    train_items, eval_items, collate = prepare_data(task, tokenizer, cfg)
    if not train_items or not eval_items:
        raise ValueError(f"task {task.name!r}: the train or validation split is empty; check --data-dir")

    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]  # biases, LayerNorms
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    scheduler = get_polynomial_decay_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * cfg.max_steps), cfg.max_steps, lr_end=cfg.lr_end, power=1.0)
    engine = make_engine(model, optimizer, scheduler, cfg)
    device = next(engine.module.parameters()).device
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    state = load_resume(out_dir, engine.module, optimizer, scheduler) if out_dir else None
    start, best = (state["step"], state["best"]) if state else (0, -math.inf)
    ema, best_ema, tokens, run_loss, run_n = None, math.inf, 0, 0.0, 0
    t0, train_time = time.perf_counter(), 0.0
    last: dict[str, float] = {}
    # Under Ray Train / DeepSpeed with several ranks each rank takes its share of one global batch; rank 0 saves.
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)

    lengths = [len(item["input_ids"]) for item in train_items] if cfg.group_by_length else None
    order = BatchOrder(len(train_items), cfg.batch_size * world, cfg.seed, lengths)

    engine.module.train()
    for step in range(start + 1, cfg.max_steps + 1):
        tick = time.perf_counter()
        for micro in range(cfg.grad_accum):
            k = (step - 1) * cfg.grad_accum + micro
            rows = order.batch(k)[rank::world]
            batch = to_device(collate([train_items[i] for i in rows]), device)
            batch.pop("references", None)
            loss = loss_of(engine(**batch), batch["labels"], cfg.label_smoothing)
            engine.backward(loss)
            engine.step()
            value = float(loss.detach())
            tokens += int(batch["attention_mask"].sum())
            if task.kind == "seq2seq":  # target tokens; a classification label is not a token
                tokens += int((batch["labels"] != D.IGNORE_INDEX).sum())
            run_loss, run_n = run_loss + value, run_n + 1
            if not math.isfinite(value):
                raise TrialFailure(f"loss is {value} (not finite)", step)
            ema = value if ema is None else 0.9 * ema + 0.1 * value
        train_time += time.perf_counter() - tick
        best_ema = min(best_ema, ema)
        if step >= 3 and ema > cfg.divergence_factor * best_ema:  # smoothed: one noisy batch is not divergence
            raise TrialFailure(f"loss diverged: smoothed loss {ema:.3g} > {cfg.divergence_factor:g} × its best "
                               f"{best_ema:.3g}", step)
        if on_step:
            on_step(step, value)
        if step % cfg.eval_every and step != cfg.max_steps:
            continue
        scores, eval_loss = evaluate(engine.module, task, tokenizer, eval_items, collate, cfg, device)
        score = scores[get_metric(task.metric).primary]
        best = max(best, score)
        last = {"step": step, "score": score, "loss": run_loss / max(run_n, 1), "eval_loss": eval_loss,
                "tokens_per_s": tokens / max(train_time, 1e-9), "trainable": counts.trainable,
                "stored": counts.stored, "fraction": counts.fraction, "elapsed_s": time.perf_counter() - t0,
                **{f"metric.{k}": v for k, v in scores.items()}}
        run_loss, run_n = 0.0, 0
        if rank == 0 and out_dir and step != cfg.max_steps:
            save_resume(out_dir, engine.module, optimizer, scheduler, step, {"best": best})
        if rank == 0 and out_dir and step == cfg.max_steps:
            # Before the last report: a scheduler that stops at max_t ends the trial inside that report call.
            save_final(out_dir, engine.module, design, {"task": task.name, "model": cfg.model, "step": step,
                                                         "score": score}, cfg.keep_resume_state)
        reporter.report(last)  # every rank: Ray Train's report is a collective that all workers must join

    return TrialResult(step=cfg.max_steps, score=last.get("score", math.nan), best_score=best, counts=counts,
                       last=last, out_dir=str(out_dir) if out_dir else None, model=engine.module,
                       engine=type(engine).__name__)
