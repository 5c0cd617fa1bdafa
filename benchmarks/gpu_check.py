"""GPU check (a few minutes on one H100/H200; run through `benchmarks/gpu_check.sh`), not a test:

1. Throughput: a random-init model of mBART-large size (the bundled facebook/mbart-large-cc25 config, no download)
   with the MAM adapter injected (`mam` preset: prefix l=30 with MLP 800 at every attention module + scaled parallel
   FFN adapter r=512, s=4), trained on synthetic token batches (default 16 × 128 source / 128 target tokens, no
   padding) for `--steps` timed steps after `--warmup` discarded ones,
     (a) with the DeepSpeed engine in bf16, built by `trainables.engine.make_engine` from TrainConfig(engine=
         "deepspeed", precision="bf16"), as shipped at ZeRO stage <= 1 (stage 1 + data_types.grad_accum_dtype=fp32:
         DeepSpeed's BF16_Optimizer, fp32 gradient accumulation and master weights) and stage 2, and the config
         shipped before ("0b": stage 0, where DeepSpeed wraps AdamW in FP16_UnfusedOptimizer and accumulates
         gradients in bf16), see `--zero-stages`; and
     (b) with the plain PyTorch engine (`TorchEngine`) under bf16 autocast (fp32 weights);
   each with a fresh model built from the same seed. Reported: tokens/s (source + target tokens), s/step, peak GPU
   memory (`torch.cuda.max_memory_allocated`, reset before the model is built) and model FLOP utilisation.

   FLOPs are PETL training FLOPs counted honestly, per step: forward = 2·rows·d_in·d_out for every nn.Linear call
   (frozen and trainable, LM head included, counted by forward hooks on one real forward pass) plus the attention
   score and value matmuls (4·B·T_q·T_k·d per attention module, T_k including the l prefix slots, the causal decoder
   self-attention counting only the unmasked half); backward = activation gradients (2× the forward FLOPs of each
   matmul whose input needs a gradient, i.e. every layer the gradient flows through) + weight gradients (2× forward)
   only for trainable weights. MFU = FLOPs / step time / the GPU's peak dense bf16 FLOP/s (by device name:
   H100 SXM/H200 989e12, H100 NVL 835e12, H100 PCIe 756e12, A100 312e12). torch's FlopCounterMode count of one
   executed step is printed beside it as a cross-check (it counts what the kernels do, e.g. full causal matrices).

2. Parity: a tiny BART (`trainables.tiny.tiny_config("bart")`, dropout off) with a small MAM design (dropout off),
   20 steps on CPU and on the GPU, fp32, TF32 off, torch engine, same seed, same weights and same batches: the two
   loss curves must agree to max |diff| < 1e-3.

Targets: DeepSpeed ≥ 1.0× plain PyTorch tokens/s; MFU ≥ 40% (DeepSpeed, at the brief's batch 16 × 128/128).
Writes gpu_check.json and gpu_check.txt under $OUT (else ./gpu_check_out).

`--cpu-smoke` runs the same code paths on this CPU-only machine for 2 timed steps with a tiny mBART (the same `mam`
preset design): DeepSpeed bf16 on the CPU accelerator (falling back to DeepSpeed fp32, then to skipping DeepSpeed,
saying which ran), torch bf16 autocast on CPU, the FLOP count, and the parity check CPU against CPU.
"""

from __future__ import annotations

import argparse
import contextlib
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
from torch import nn

# Peak dense bf16 FLOP/s (no sparsity), by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_BF16 = (("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12),
             ("A100", 312e12), ("L40S", 362e12))
TARGET_MFU = 0.40
TARGET_DS_RATIO = 1.0


def log(msg: str) -> None:
    print(msg, flush=True)


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_BF16:
        if key in name:
            return value
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------------------
# model and data
# ---------------------------------------------------------------------------------------------------------------------
def big_config(smoke: bool) -> Any:
    from trainables.configs import load_config
    from trainables.tiny import tiny_config

    if smoke:
        return tiny_config("mbart", vocab_size=256, d=64, layers=2, heads=4, ffn=128, max_positions=256)
    return load_config("facebook/mbart-large-cc25")


def build_model(config: Any, design: Any, device: torch.device, seed: int) -> nn.Module:
    from transformers import AutoModelForSeq2SeqLM

    from trainables.inject import inject

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


def make_optimizer(model: nn.Module, lr: float) -> tuple[torch.optim.Optimizer, Any]:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------------
def linear_flops(model: nn.Module, batch: dict[str, torch.Tensor], call: Any) -> dict[str, float]:
    """Forward, activation-gradient and weight-gradient FLOPs of every nn.Linear call in one forward pass."""
    tally = {"fwd": 0.0, "act": 0.0, "wgrad": 0.0, "fwd_trainable": 0.0}

    def hook(mod: nn.Linear, args: tuple, _out: Any) -> None:
        x = args[0]
        f = 2.0 * (x.numel() // x.shape[-1]) * mod.in_features * mod.out_features
        tally["fwd"] += f
        if x.requires_grad:
            tally["act"] += f
        if mod.weight.requires_grad:
            tally["wgrad"] += f
            tally["fwd_trainable"] += f

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.enable_grad():
            out = call(**batch)
            del out
    finally:
        for h in handles:
            h.remove()
    return tally


def attention_flops(config: Any, batch: int, src: int, tgt: int, prefix: int) -> dict[str, float]:
    """Score (QKᵀ) and value (PV) matmuls of every attention module; backward = 2× forward where the gradient flows.

    The first encoder layer and the first decoder layer read the frozen embeddings, so their self-attention's
    queries, keys and values need no gradient: there only dP = dO·Vᵀ (one matmul over every unmasked key) and the
    prefix columns of dK and dV are computed. Everywhere else all four backward matmuls are needed (the prefix and the
    adapters put trainable parameters in every layer).
    """
    d = config.d_model
    enc, dec = config.encoder_layers, config.decoder_layers

    def mm(tq: float, keys: float) -> float:  # one (B, Tq, d) × (B, d, keys) product; keys summed over queries
        return 2.0 * batch * tq * keys * d

    enc_keys = src + prefix
    dec_keys = prefix + (tgt + 1) / 2  # causal: query i sees the l prefix slots and keys 0..i (mean (T+1)/2)
    enc_self, dec_self, cross = 2 * mm(src, enc_keys), 2 * mm(tgt, dec_keys), 2 * mm(tgt, enc_keys)
    fwd = enc * enc_self + dec * (dec_self + cross)
    enc_first = mm(src, enc_keys) + 2 * mm(src, prefix)  # dP, and dK/dV of the prefix slots
    dec_first = mm(tgt, dec_keys) + 2 * mm(tgt, prefix)
    act = (enc - 1) * 2 * enc_self + enc_first + (dec - 1) * 2 * dec_self + dec_first + dec * 2 * cross
    return {"fwd": fwd, "act": act, "wgrad": 0.0}


def step_flops(model: nn.Module, config: Any, batch: dict[str, torch.Tensor], call: Any, prefix: int) -> dict[str, Any]:
    lin = linear_flops(model, batch, call)
    b, s = batch["input_ids"].shape
    t = batch["labels"].shape[1]
    att = attention_flops(config, b, s, t, prefix)
    total = lin["fwd"] + lin["act"] + lin["wgrad"] + att["fwd"] + att["act"]
    full_ft = 3 * (lin["fwd"] + att["fwd"])  # what the same step would cost with every weight trainable
    return {"linear": lin, "attention": att, "total": total, "forward": lin["fwd"] + att["fwd"],
            "full_finetune_equivalent": full_ft}


def executed_flops(engine: Any, batch: dict[str, torch.Tensor]) -> float | None:
    """torch's FlopCounterMode over one executed forward + backward (a cross-check of the analytic count)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            out = engine(**batch)
            out.loss.backward()
        engine.module.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())
    except Exception as err:  # noqa: BLE001 - a cross-check must not sink the run
        log(f"  FlopCounterMode failed: {type(err).__name__}: {err}")
        return None


# ---------------------------------------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------------------------------------
def make_cfg(engine: str, precision: str, batch: int, zero_stage: int) -> Any:
    from trainables.config import TrainConfig

    # The task only validates the config here; nothing is read from it.
    return TrainConfig(task="en-ro", engine=engine, precision=precision, batch_size=batch, zero_stage=zero_stage,
                       lr=1e-4, max_grad_norm=1.0)


@contextlib.contextmanager
def legacy_bf16_accum() -> Any:
    """The DeepSpeed config shipped before: bf16 at ZeRO stage 0 with DeepSpeed's default bf16 gradient accumulation
    (FP16_UnfusedOptimizer), kept here to time it against the fp32-accumulating config `deepspeed_config` builds."""
    import trainables.engine as E

    original = E.deepspeed_config

    def patched(cfg: Any, micro_batch: int) -> dict[str, Any]:
        config = original(cfg, micro_batch)
        config.pop("data_types", None)
        config["zero_optimization"]["stage"] = 0
        return config

    E.deepspeed_config = patched
    try:
        yield
    finally:
        E.deepspeed_config = original


def parse_stage(token: str) -> tuple[int, bool]:
    """'1', '2' → (stage, False): the shipped config; '0b' → (0, True): the bf16-accumulating config of before."""
    token = token.strip().lower()
    return int(token.rstrip("b")), token.endswith("b")


def build_engine(mode: str, model: nn.Module, device: torch.device, batch: int, zero_stage: int, precision: str,
                 legacy: bool = False) -> Any:
    from trainables.engine import TorchEngine, make_engine

    opt, sched = make_optimizer(model, 1e-4)
    if mode == "deepspeed":
        with legacy_bf16_accum() if legacy else contextlib.nullcontext():
            return make_engine(model, opt, sched, make_cfg("deepspeed", precision, batch, zero_stage))
    return TorchEngine(model, opt, sched, make_cfg("torch", precision, batch, zero_stage), device)


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
        result["flops"] = step_flops(engine.module, config, data[0], engine, design.head_attn.size)
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
        losses.append(float(loss.detach()))  # what trainables.loop does every step (a host sync)
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


def add_mfu(r: dict[str, Any], peak: float | None) -> None:
    fl = r.get("flops")
    if not fl:
        return
    r["model_flops_per_s"] = fl["total"] / r["s_per_step"]
    r["mfu"] = r["model_flops_per_s"] / peak if peak else None


# ---------------------------------------------------------------------------------------------------------------------
# parity: CPU against GPU, fp32
# ---------------------------------------------------------------------------------------------------------------------
def parity(args: argparse.Namespace, gpu: torch.device | None) -> dict[str, Any]:
    from transformers import AutoModelForSeq2SeqLM

    from trainables.design import DesignPoint
    from trainables.engine import TorchEngine
    from trainables.inject import inject
    from trainables.tiny import tiny_config

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


def summary_text(rep: dict[str, Any]) -> str:
    lines = [(f"GPU check {rep['date']} on {rep['device_name']} (torch {rep['torch']}, transformers "
              f"{rep['transformers']}, deepspeed {rep['deepspeed']}, python {rep['python']})"),
             (f"model: {rep['model']}, design: mam preset ({rep['design']}), synthetic batches, "
              f"{rep['args']['warmup']} warm-up + {rep['args']['steps']} timed steps"), ""]
    lines.append("| run | batch | tokens/s | ms/step | peak GPU GiB (of which before build) | GFLOP/step (honest) | model TFLOP/s | MFU | "
                 "engine / optimizer | params |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rep["throughput"]:
        fl = r.get("flops", {})
        mfu = r.get("mfu")
        lines.append(
            f"| {r['label']} {r['precision']} | {r['batch']}×{r['src']}/{r['tgt']} | {r['tokens_per_s']:,.0f} | "
            f"{r['s_per_step'] * 1e3:.1f} | {r.get('peak_mem_gib', float('nan')):.1f} "
            f"({r.get('mem_before_gib', float('nan')):.1f}) | "
            f"{fl.get('total', float('nan')) / 1e9:,.1f} | {r.get('model_flops_per_s', float('nan')) / 1e12:.1f} | "
            f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'} | {r['engine_class']} / {r['optimizer_class']} | "
            f"{r['param_dtype']} |")
    for r in rep["throughput"]:
        if r.get("flops"):
            fl = r["flops"]
            lines.append(
                f"\nGFLOP per step at batch {r['batch']}: linear fwd {fl['linear']['fwd'] / 1e9:,.2f} + act-grad "
                f"{fl['linear']['act'] / 1e9:,.2f} + weight-grad {fl['linear']['wgrad'] / 1e9:,.2f}; attention "
                f"fwd {fl['attention']['fwd'] / 1e9:,.2f} + act-grad {fl['attention']['act'] / 1e9:,.2f}; total "
                f"{fl['total'] / 1e9:,.2f} (full fine-tuning of the same step: {fl['full_finetune_equivalent'] / 1e9:,.2f})")
            break
    for r in rep["throughput"]:
        if r.get("flops_executed_torch_counter"):
            lines.append(f"torch FlopCounterMode over one executed torch-autocast step at batch {r['batch']} "
                         f"(cross-check): {r['flops_executed_torch_counter'] / 1e9:,.2f} GFLOP")
            break
    p = rep["parity"]
    lines += ["", (f"parity {p['devices'][0]} vs {p['devices'][1]} fp32, {p['steps']} steps: max |loss diff| "
                   f"{p['max_abs_diff']:.2e} ({'PASS' if p['pass'] else 'FAIL'} < 1e-3) {p['note']}"), ""]
    lines += [f"{v}" for v in rep["verdicts"]]
    if rep["errors"]:
        lines += ["", "errors:"] + [f"- {e}" for e in rep["errors"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny mBART, 2 steps, on CPU: do the code paths run?")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16, help="the batch the targets are judged at")
    ap.add_argument("--extra-batches", default="64", help="comma-separated further batch sizes (informative)")
    ap.add_argument("--src", type=int, default=128)
    ap.add_argument("--tgt", type=int, default=128)
    ap.add_argument("--zero-stages", default="1,2,0b",
                    help="DeepSpeed runs at --batch: 1, 2 (as shipped) and 0b = the bf16-accumulating stage-0 config of before")
    ap.add_argument("--parity-steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-deepspeed", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    args = ap.parse_args()
    if args.cpu_smoke:
        args.steps, args.warmup, args.batch, args.src, args.tgt = 2, 1, 2, 16, 16
        args.extra_batches = ""
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import transformers

    from trainables.presets import get_preset

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    peak = peak_flops(name) if cuda else None
    if not cuda and not args.cpu_smoke:
        log("no CUDA device: running the CPU smoke instead")
        args.cpu_smoke = True
        args.steps, args.warmup, args.batch, args.src, args.tgt, args.extra_batches = 2, 1, 2, 16, 16, ""
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
        runs = []
        for zi, (stage, legacy) in enumerate(stages if ds_version else []):
            if bi and zi:  # the extra batch sizes run DeepSpeed at the first stage only
                break
            precisions = ["bf16", "fp32"] if args.cpu_smoke else ["bf16"]
            for precision in precisions:  # on CPU, fall back to fp32 if DeepSpeed's bf16 does not run there
                try:
                    runs.append(throughput("deepspeed", precision, args, config, design, device, batch,
                                           bi == 0 and not runs, stage, legacy))
                    break
                except Exception as err:  # noqa: BLE001
                    msg = f"deepspeed ZeRO-{stage}{' (before)' if legacy else ''} {precision} batch {batch}: {type(err).__name__}: {err}"
                    log("  FAILED " + msg)
                    rep["errors"].append(msg + "\n" + traceback.format_exc(limit=6))
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
        try:
            runs.append(throughput("torch", "bf16", args, config, design, device, batch, bi == 0))
        except Exception as err:  # noqa: BLE001
            msg = f"torch bf16 batch {batch}: {type(err).__name__}: {err}"
            log("  FAILED " + msg)
            rep["errors"].append(msg + "\n" + traceback.format_exc(limit=6))
        flops = next((r["flops"] for r in runs if r.get("flops")), None)
        for r in runs:
            if not r.get("flops"):
                r["flops"] = flops
            add_mfu(r, peak)
        rep["throughput"] += runs

    try:
        rep["parity"] = parity(args, device if cuda else None)
    except Exception as err:  # noqa: BLE001
        rep["errors"].append(f"parity: {type(err).__name__}: {err}\n" + traceback.format_exc(limit=6))
        rep["parity"] = {"devices": ["cpu", "?"], "steps": 0, "max_abs_diff": float("nan"), "pass": False,
                         "note": "failed"}

    main_runs = [r for r in rep["throughput"] if r["batch"] == args.batch]
    torch_run = next((r for r in main_runs if r["mode"] == "torch"), None)
    ds_runs = [r for r in main_runs if r["mode"] == "deepspeed"]
    for ds in ds_runs:
        if torch_run is None:
            break
        ratio = ds["tokens_per_s"] / torch_run["tokens_per_s"]
        rep["verdicts"].append(f"{'PASS' if ratio >= TARGET_DS_RATIO else 'FAIL'}: {ds['label']} {ds['precision']} "
                               f"≥ 1.0× plain PyTorch bf16-autocast tokens/s: {ratio:.2f}× "
                               f"({ds['tokens_per_s']:,.0f} vs {torch_run['tokens_per_s']:,.0f})")
    if not ds_runs or torch_run is None:
        rep["verdicts"].append("n/a: DeepSpeed vs PyTorch (one of them did not run)")
    for r in main_runs:
        if r.get("mfu") is not None:
            rep["verdicts"].append(f"{'PASS' if r['mfu'] >= TARGET_MFU else 'FAIL'}: MFU ≥ 40% ({r['label']} "
                                   f"{r['precision']}, batch {args.batch}): {100 * r['mfu']:.1f}%")
    if not any(r.get("mfu") is not None for r in main_runs):
        rep["verdicts"].append("n/a: MFU (no GPU, or no peak FLOP/s known for this device)")
    rep["verdicts"].append(f"{'PASS' if rep['parity']['pass'] else 'FAIL'}: CPU/GPU fp32 loss curves agree "
                           f"(max |diff| {rep['parity']['max_abs_diff']:.2e} < 1e-3)")
    if args.cpu_smoke:
        rep["verdicts"].append("(CPU smoke: code paths only; the numbers mean nothing)")
    (out / "gpu_check.json").write_text(json.dumps(rep, indent=1, default=str))
    text = summary_text(rep)
    (out / "gpu_check.txt").write_text(text)
    log("\n" + text)
    log(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.txt'}")


if __name__ == "__main__":
    main()
