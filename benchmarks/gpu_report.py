"""The verdicts and the text report of benchmarks/gpu_check.py, from the dict it writes as gpu_check.json."""

from __future__ import annotations

from typing import Any

TARGET_MFU = 0.40
TARGET_DS_RATIO = 1.0


def add_verdicts(rep: dict[str, Any], batch: int, cpu_smoke: bool) -> None:
    """PASS/FAIL lines for the targets, judged at the main `batch`."""
    main_runs = [r for r in rep["throughput"] if r["batch"] == batch]
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
                                   f"{r['precision']}, batch {batch}): {100 * r['mfu']:.1f}%")
    if not any(r.get("mfu") is not None for r in main_runs):
        rep["verdicts"].append("n/a: MFU (no GPU, or no peak FLOP/s known for this device)")
    rep["verdicts"].append(f"{'PASS' if rep['parity']['pass'] else 'FAIL'}: CPU/GPU fp32 loss curves agree "
                           f"(max |diff| {rep['parity']['max_abs_diff']:.2e} < 1e-3)")
    if cpu_smoke:
        rep["verdicts"].append("(CPU smoke: code paths only; the numbers mean nothing)")


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
                f"\nGFLOP per step at batch {r['batch']} (finetune.flops): forward {fl['forward'] / 1e9:,.2f} + input "
                f"gradients {fl['input_grad'] / 1e9:,.2f} + weight gradients {fl['weight_grad'] / 1e9:,.2f} = "
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
