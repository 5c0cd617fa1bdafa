"""GPU check (a few minutes on one H100/H200; run through `benchmarks/gpu_check.sh`), not a test:

1. Throughput: a random-init model of mBART-large size (the bundled facebook/mbart-large-cc25 config, no download)
   with the MAM adapter injected (`mam` preset: prefix l=30 with MLP 800 at every attention module + scaled parallel
   FFN adapter r=512, s=4), trained on synthetic token batches (default 16 × 128 source / 128 target tokens, no
   padding) for `--steps` timed steps after `--warmup` discarded ones,
     (a) with the DeepSpeed engine in bf16, built by `finetune.engine.make_engine` from TrainConfig(engine=
         "deepspeed", precision="bf16"), as shipped at ZeRO stage <= 1 (stage 1 + data_types.grad_accum_dtype=fp32:
         DeepSpeed's BF16_Optimizer, fp32 gradient accumulation and master weights) and stage 2, and the config
         shipped before ("0b": stage 0, where DeepSpeed wraps AdamW in FP16_UnfusedOptimizer and accumulates
         gradients in bf16), see `--zero-stages`; and
     (b) with the plain PyTorch engine (`TorchEngine`) under bf16 autocast (fp32 weights);
   each with a fresh model built from the same seed. Reported: tokens/s (source + target tokens), s/step, peak GPU
   memory (`torch.cuda.max_memory_allocated`, reset before the model is built) and model FLOP utilisation.

   FLOPs are PETL training FLOPs counted honestly (`finetune.flops`, through `benchmarks/flop_count.py`: every
   matrix product, input gradients only where they are needed, weight gradients only for trainable matrices); MFU =
   FLOPs / step time / the GPU's peak dense bf16 FLOP/s (`finetune.flops.PEAK_BF16`). torch's FlopCounterMode count
   of one executed step is printed beside it as a cross-check (fused attention kernels may escape it).

2. Parity: a tiny BART (`finetune.tiny.tiny_config("bart")`, dropout off) with a small MAM design (dropout off),
   20 steps on CPU and on the GPU, fp32, TF32 off, torch engine, same seed, same weights and same batches: the two
   loss curves must agree to max |diff| < 1e-3.

Targets: DeepSpeed ≥ 1.0× plain PyTorch tokens/s; MFU ≥ 40% (DeepSpeed, at the brief's batch 16 × 128/128).
Writes gpu_check.json and gpu_check.txt under $OUT (else ./gpu_check_out).

`--cpu-smoke` (or `--smoke`) runs the same code paths on this CPU-only machine for 2 timed steps with a tiny mBART
(the same `mam` preset design): DeepSpeed bf16 on the CPU accelerator (falling back to DeepSpeed fp32, then to
skipping DeepSpeed, saying which ran), torch bf16 autocast on CPU, the FLOP count, and the parity check CPU against
CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, if the project is not installed

import torch
from engine_variants import build_engine, make_cfg, make_optimizer, parse_stage
from flop_count import add_mfu, executed_flops, peak_flops, step_flops
from gpu_report import add_verdicts, summary_text
from torch import nn


def log(msg: str) -> None:
    print(msg, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------------------
# model and data
# ---------------------------------------------------------------------------------------------------------------------
def big_config(smoke: bool) -> Any:
    from finetune.hubconfigs import load_config
    from finetune.tiny import tiny_config

    if smoke:
        return tiny_config("mbart", vocab_size=256, d=64, layers=2, heads=4, ffn=128, max_positions=256)
    return load_config("facebook/mbart-large-cc25")


def build_model(config: Any, design: Any, device: torch.device, seed: int) -> nn.Module:
    from transformers import AutoModelForSeq2SeqLM

    from finetune.inject import inject

    torch.manual_seed(seed)
    try:
        with torch.device(device):  # initialise on the device: a 610M-parameter init on the host takes ~30 s
            model = AutoModelForSeq2SeqLM.from_config(config)
    except Exception as err:  # noqa: BLE001 - fall back to the host, then move
        log(f"  building on {device} failed ({type(err).__name__}: {err}); building on the host")
        torch.manual_seed(seed)
        model = AutoModelForSeq2SeqLM.from_config(config).to(device)
    inject(model, design)
    return model


def synthetic_batches(n: int, batch: int, src: int, tgt: int, vocab: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Random token ids in [4, vocab − 30) (clear of BART's special ids and mBART's language codes), no padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append({
            "input_ids": torch.randint(4, vocab - 30, (batch, src), generator=g),
            "attention_mask": torch.ones(batch, src, dtype=torch.long),
            "labels": torch.randint(4, vocab - 30, (batch, tgt), generator=g),
        })
    return out


# ---------------------------------------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------------------------------------
def throughput(mode: str, precision: str, args: argparse.Namespace, config: Any, design: Any, device: torch.device,
               batch: int, count_flops: bool, zero_stage: int = 0, legacy: bool = False) -> dict[str, Any]:
    """Train `warmup` + `steps` steps; time the last `steps` (the loop's step: forward, backward, step, loss.item)."""
    label = (f"deepspeed ZeRO-{zero_stage}" + (" bf16 grad-accum (before)" if legacy else "")
             if mode == "deepspeed" else "torch autocast")
    log(f"- {label} {precision}, batch {batch} × {args.src}/{args.tgt} ...")
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    base_mem = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    t_build = time.perf_counter()
    model = build_model(config, design, device, args.seed)
    engine = build_engine(mode, model, device, batch, zero_stage, precision, legacy)
    build_s = time.perf_counter() - t_build
    data = [{k: v.to(device) for k, v in b.items()} for b in
            synthetic_batches(args.warmup + args.steps, batch, args.src, args.tgt, config.vocab_size, args.seed + 1)]
    result: dict[str, Any] = {"mode": mode, "label": label, "zero_stage": zero_stage, "precision": precision,
                              "batch": batch, "src": args.src, "tgt": args.tgt,
                              "build_s": build_s, "engine_class": type(engine).__name__,
                              "optimizer_class": type(getattr(engine, "optimizer", None)).__name__,
                              "param_dtype": str(next(engine.module.parameters()).dtype)}
    trainable = sum(p.numel() for p in engine.module.parameters() if p.requires_grad)
    result.update(trainable=trainable, total_params=sum(p.numel() for p in engine.module.parameters()))
    if count_flops:
        result["flops"] = step_flops(design, config, data[0])
        sync(device)
        result["flops_executed_torch_counter"] = executed_flops(engine, data[0]) if mode == "torch" else None
    engine.module.train()
    losses = []
    for i, b in enumerate(data):
        if i == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        loss = engine(**b).loss
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))  # what finetune.loop does every step (a host sync)
    sync(device)
    dt = time.perf_counter() - t0
    tokens = args.steps * batch * (args.src + args.tgt)
    result.update(steps=args.steps, seconds=dt, s_per_step=dt / args.steps, tokens_per_s=tokens / dt,
                  losses=losses, finite=all(math.isfinite(x) for x in losses))
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["mem_before_gib"] = base_mem / 2**30  # left over from earlier runs (0 if they were freed)
    else:
        result["peak_rss_mb_so_far"] = rss_mb()
    log(f"  {result['tokens_per_s']:,.0f} tokens/s, {result['s_per_step'] * 1e3:.1f} ms/step, "
        f"engine {result['engine_class']} / {result['optimizer_class']}, params {result['param_dtype']}, "
        f"loss {losses[0]:.3f} → {losses[-1]:.3f}"
        + (f", peak {result['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in result else ""))
    del engine, model, data
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------------------------------
# parity: CPU against GPU, fp32
# ---------------------------------------------------------------------------------------------------------------------
def parity(args: argparse.Namespace, gpu: torch.device | None) -> dict[str, Any]:
    from transformers import AutoModelForSeq2SeqLM

    from finetune.designpoint import DesignPoint
    from finetune.engine import TorchEngine
    from finetune.inject import inject
    from finetune.tiny import tiny_config

    design = DesignPoint.from_dict({
        "head_attn": {"form": "softmax", "size": 4, "composition": "gated", "prefix_mlp": 16},
        "ffn": {"form": "relu", "size": 8, "insertion": "parallel", "composition": "scaled", "scale": 4.0,
                "init": "lora", "dropout": 0.0},
    })
    config = tiny_config("bart", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    batches = synthetic_batches(args.parity_steps, 8, 24, 16, config.vocab_size, args.seed + 2)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    base = AutoModelForSeq2SeqLM.from_config(config)
    inject(base, design)
    state = {k: v.clone() for k, v in base.state_dict().items()}

    def curve(device: torch.device) -> list[float]:
        torch.manual_seed(args.seed)
        model = AutoModelForSeq2SeqLM.from_config(config)
        inject(model, design)
        model.load_state_dict(state)
        opt, sched = make_optimizer(model, 1e-3)
        engine = TorchEngine(model, opt, sched, make_cfg("torch", "fp32", 8, 0), device)
        engine.module.train()
        out = []
        for b in batches:
            loss = engine(**{k: v.to(device) for k, v in b.items()}).loss
            engine.backward(loss)
            engine.step()
            out.append(float(loss.detach()))
        return out

    cpu = curve(torch.device("cpu"))
    other_dev = gpu or torch.device("cpu")
    other = curve(other_dev)
    diffs = [abs(a - b) for a, b in zip(cpu, other)]
    res = {"steps": args.parity_steps, "devices": ["cpu", str(other_dev)], "cpu": cpu, "other": other,
           "max_abs_diff": max(diffs), "per_step_abs_diff": diffs, "pass": max(diffs) < 1e-3,
           "note": "" if gpu else "no GPU here: CPU compared against a second CPU run (code path check only)"}
    log(f"- parity {res['devices'][0]} vs {res['devices'][1]}, {args.parity_steps} steps fp32: loss "
        f"{cpu[0]:.4f} → {cpu[-1]:.4f}, max |diff| {res['max_abs_diff']:.2e} "
        f"({'PASS' if res['pass'] else 'FAIL'} < 1e-3)")
    return res


# ---------------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------------
def deepspeed_available() -> str | None:
    try:
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed

        return deepspeed.__version__
    except Exception as err:  # noqa: BLE001
        log(f"deepspeed not importable: {type(err).__name__}: {err}")
        return None


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", "--smoke", dest="cpu_smoke", action="store_true",
                    help="tiny mBART, 2 steps, on CPU: do the code paths run?")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16, help="the batch the targets are judged at")
    ap.add_argument("--extra-batches", default="64", help="comma-separated further batch sizes (informative)")
    ap.add_argument("--src", type=int, default=128)
    ap.add_argument("--tgt", type=int, default=128)
    ap.add_argument("--zero-stages", default="1,2,0b", help="DeepSpeed runs at --batch: 1, 2 (as shipped) and 0b = "
                    "the bf16-accumulating stage-0 config of before")
    ap.add_argument("--parity-steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-deepspeed", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    return ap.parse_args()


def _failed(rep: dict[str, Any], msg: str) -> None:
    log("  FAILED " + msg)
    rep["errors"].append(msg + "\n" + traceback.format_exc(limit=6))


def deepspeed_runs(args: argparse.Namespace, config: Any, design: Any, device: torch.device, batch: int,
                   first_batch: bool, stages: list[tuple[int, bool]], rep: dict[str, Any]) -> list[dict[str, Any]]:
    """DeepSpeed at each ZeRO stage (the extra batch sizes at the first stage only); on CPU bf16, else fp32."""
    runs: list[dict[str, Any]] = []
    for zi, (stage, legacy) in enumerate(stages):
        if not first_batch and zi:
            break
        for precision in ["bf16", "fp32"] if args.cpu_smoke else ["bf16"]:
            try:
                runs.append(throughput("deepspeed", precision, args, config, design, device, batch,
                                       first_batch and not runs, stage, legacy))
                break
            except Exception as err:  # noqa: BLE001
                _failed(rep, f"deepspeed ZeRO-{stage}{' (before)' if legacy else ''} {precision} batch {batch}: "
                        f"{type(err).__name__}: {err}")
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return runs


def batch_runs(args: argparse.Namespace, config: Any, design: Any, device: torch.device, batch: int,
               first_batch: bool, stages: list[tuple[int, bool]], peak: float | None,
               rep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every engine at one batch size, each with the FLOP count and MFU."""
    runs = deepspeed_runs(args, config, design, device, batch, first_batch, stages, rep) if rep["deepspeed"] else []
    try:
        runs.append(throughput("torch", "bf16", args, config, design, device, batch, first_batch))
    except Exception as err:  # noqa: BLE001
        _failed(rep, f"torch bf16 batch {batch}: {type(err).__name__}: {err}")
    flops = next((r["flops"] for r in runs if r.get("flops")), None)
    for r in runs:
        if not r.get("flops"):
            r["flops"] = flops
        add_mfu(r, peak)
    return runs


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import transformers

    from finetune.presets import get_preset

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    peak = peak_flops(name) if cuda else None
    if not cuda:
        if not args.cpu_smoke:
            log("no CUDA device: running the CPU smoke instead")
        args.cpu_smoke = True
        args.steps, args.warmup, args.batch, args.src, args.tgt, args.extra_batches = 2, 1, 2, 16, 16, ""
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    ds_version = None if args.skip_deepspeed else deepspeed_available()
    design = get_preset("mam").design
    config = big_config(args.cpu_smoke)
    rep: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device_name": name, "peak_bf16_flops": peak,
        "torch": torch.__version__, "transformers": transformers.__version__, "deepspeed": ds_version,
        "python": platform.python_version(), "cuda": torch.version.cuda, "args": vars(args),
        "model": "tiny mBART (d=64, 2+2 layers)" if args.cpu_smoke else "mBART-large-cc25 config, random init",
        "design": design.describe().replace("\n", "; "), "throughput": [], "errors": [], "verdicts": [],
    }
    log(f"device: {name}; peak bf16 {peak}; torch {torch.__version__}; deepspeed {ds_version}")
    batches = [args.batch] + [int(b) for b in args.extra_batches.split(",") if b.strip()]
    stages = [parse_stage(z) for z in args.zero_stages.split(",") if z.strip()]
    for bi, batch in enumerate(batches):
        rep["throughput"] += batch_runs(args, config, design, device, batch, bi == 0, stages, peak, rep)
    try:
        rep["parity"] = parity(args, device if cuda else None)
    except Exception as err:  # noqa: BLE001
        rep["errors"].append(f"parity: {type(err).__name__}: {err}\n" + traceback.format_exc(limit=6))
        rep["parity"] = {"devices": ["cpu", "?"], "steps": 0, "max_abs_diff": float("nan"), "pass": False,
                         "note": "failed"}
    add_verdicts(rep, args.batch, args.cpu_smoke)
    (out / "gpu_check.json").write_text(json.dumps(rep, indent=1, default=str))
    text = summary_text(rep)
    (out / "gpu_check.txt").write_text(text)
    log("\n" + text)
    log(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.txt'}")


if __name__ == "__main__":
    main()
