"""What a run will cost before it starts: training tokens, training FLOPs and GPU-hours, with their basis.

Batch shapes come from one of two bases, and the plan says which:
- `measured`: local training files and a tokenizer available offline. A seeded sample of training rows is encoded
  exactly as a trial encodes them and batched by the trial's own sampler (`finetune.batching`); FLOPs are the mean
  over those micro-batches (padding included, as executed), tokens the mean of real (non-padding) tokens.
- `bound`: otherwise (hub data, or no tokenizer offline): every sequence at its maximum length, every token batch
  full. An upper bound: tight for token batches (sorted by length, they are nearly full), loose for sentence batches
  of short texts (SST-2 sentences are far below 512 tokens).
FLOPs per micro-batch: `finetune.flops` (matrix products, honest about frozen weights). Evaluation (decoding the
dev subset) is not counted. GPU-hours = FLOPs / (peak dense bf16 FLOP/s × utilisation) / 3600, for a stated GPU and
a stated utilisation: an assumption, not a measurement; measure yours with benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from finetune.designpoint import DesignPoint
from finetune.flops import Flops, Shape, micro_batch_flops
from finetune.gpus import DEFAULT_GPU, DEFAULT_UTILIZATION, PEAK_BF16, peak_flops
from finetune.runconfig import RunConfig

SAMPLE_ROWS = 2000  # rows encoded to measure batch shapes
SAMPLE_BATCHES = 256  # micro-batches averaged (sentence batches; token batches: all of the sample's)


@dataclass(frozen=True)
class Batches:
    """Micro-batch shapes a trial's steps are averaged over, and the mean real tokens per micro-batch."""

    shapes: tuple[Shape, ...]
    tokens: float  # real (non-padding) source + target tokens per micro-batch
    basis: str  # "measured: ..." or "bound: ..."


@dataclass(frozen=True)
class GpuModel:
    name: str
    peak: float  # dense bf16 FLOP/s
    utilization: float

    @classmethod
    def named(cls, name: str = DEFAULT_GPU, utilization: float = DEFAULT_UTILIZATION) -> GpuModel:
        peak = peak_flops(name)
        if peak is None:
            raise ValueError(f"no peak FLOP/s known for GPU {name!r}; expected one of {[k for k, _ in PEAK_BF16]}")
        if not 0 < utilization <= 1:
            raise ValueError(f"utilisation must be in (0, 1], got {utilization}")
        return cls(name, peak, utilization)

    def hours(self, flops: float) -> float:
        return flops / (self.peak * self.utilization) / 3600.0


def bound_batches(run: RunConfig) -> Batches:
    """Every row at its maximum lengths; with max_tokens, as many rows of the longest length as the budget holds."""
    cfg, seq2seq = run.train, run.task.kind == "seq2seq"
    tgt = float(cfg.max_target_length or 0) if seq2seq else 0.0
    if cfg.max_tokens is None:
        shape = Shape(float(cfg.batch_size), float(cfg.max_length), tgt)
        words = f"{cfg.batch_size} rows × {cfg.max_length}" + (f" + {cfg.max_target_length}" if seq2seq else "")
    else:
        longest = max(cfg.max_length, int(tgt))
        rows = cfg.max_tokens / longest if cfg.batch_size is None else min(cfg.batch_size, cfg.max_tokens / longest)
        shape = Shape(rows, float(longest), float(longest) if seq2seq else 0.0)
        words = f"{cfg.max_tokens:,} padded tokens per side at length {longest}"
    tokens = shape.rows * (shape.src + shape.tgt)
    return Batches((shape,), tokens, f"bound: every micro-batch full ({words} tokens)")


def measured_batches(run: RunConfig) -> tuple[Batches | None, str]:
    """Shapes from a sample of the local training rows, batched by the trial's sampler; (None, why) otherwise."""
    # deferred on purpose: tokenizers and the model stack load only when a measured estimate is asked for
    from finetune import data as D
    from finetune.batching import SentenceBatches, TokenBatches, item_lengths
    from finetune.models import resolve_model_path

    task, cfg = run.task, run.train
    if run.data.source == "hub":
        return None, "hub data is not read before a run"
    try:
        tokenizer = D.load_tokenizer(task, resolve_model_path(task, cfg.model), local_only=True)
    except (OSError, ValueError) as err:
        return None, f"no tokenizer for {cfg.model or task.model} offline ({type(err).__name__})"
    rows = D.load_examples(task, "train", cfg.data_dir, limit=cfg.train_limit, seed=cfg.seed)
    rows = random.Random(0).sample(rows, min(SAMPLE_ROWS, len(rows)))
    items = (D.encode_classification(rows, tokenizer, cfg.max_length) if task.kind == "classification" else
             D.encode_seq2seq(rows, tokenizer, cfg.max_length, cfg.max_target_length, task.src_lang, task.tgt_lang))
    if cfg.max_tokens is None:
        sampler: Any = SentenceBatches(len(items), cfg.batch_size, cfg.seed)
        batches = [sampler.rows(k) for k in range(min(SAMPLE_BATCHES, sampler.per_epoch()))]
    else:
        batches = TokenBatches(item_lengths(items), cfg.max_tokens, cfg.seed, cfg.batch_multiple,
                               cfg.batch_size).batches
    shapes, tokens = [], 0.0
    for b in batches:
        src = [len(items[i]["input_ids"]) for i in b]
        tgt = [len(items[i].get("labels", ())) for i in b]
        shapes.append(Shape(float(len(b)), float(max(src)), float(max(tgt))))
        tokens += sum(src) + sum(tgt)
    return Batches(tuple(shapes), tokens / len(batches), f"measured: {len(items):,} sampled training rows in "
                   f"{len(batches):,} micro-batches of the trial's sampler"), ""


@dataclass(frozen=True)
class TrialCost:
    """One trial of one design at a given number of optimizer steps."""

    design: str
    steps: int
    per_step: Flops  # all micro-batches of one optimizer step (grad_accum × workers)
    tokens: float  # real training tokens over all steps
    flops: float
    gpu_hours: float

    def to_dict(self) -> dict[str, Any]:
        return {"design": self.design, "steps": self.steps, "tokens": self.tokens, "flops": self.flops,
                "flops_per_step": {"forward": self.per_step.forward, "input_grad": self.per_step.activation_grad,
                                   "weight_grad": self.per_step.weight_grad}, "gpu_hours": self.gpu_hours}


def trial_cost(name: str, design: DesignPoint, config: Any, run: RunConfig, batches: Batches, gpu: GpuModel,
               steps: int | None = None) -> TrialCost:
    """Cost of training `design` for `steps` (default: the run's max_steps) on batches of `batches`' shapes."""
    steps = run.train.max_steps if steps is None else steps
    micro = [micro_batch_flops(design, config, run.task.kind, s) for s in batches.shapes]
    mean = Flops(*(sum(getattr(f, k) for f in micro) / len(micro) for k in ("forward", "activation_grad",
                                                                             "weight_grad")))
    per_step = mean.scaled(run.train.grad_accum * run.world)
    flops = per_step.total * steps
    return TrialCost(name, steps, per_step, batches.tokens * run.train.grad_accum * run.world * steps, flops,
                     gpu.hours(flops))
