"""Export a trained design for use outside this tool: `python -m finetune.export TRIAL_DIR --out DIR`.

TRIAL_DIR is a trial folder (`<search>/trials/<id>/`, or a `petl-trial --out` folder): `design.json` and
`petl.safetensors` (`finetune.checkpoint`). Two formats:

- `peft`: PEFT's adapter format (`adapter_config.json` + `adapter_model.safetensors`), loaded with
  `PeftModel.from_pretrained(base, DIR)`, for designs PEFT computes exactly (`peft_refusal` says why not otherwise):
  LoRA, i.e. form=identity at query / value / fc1 / fc2 with composition add or scaled by a fixed s, one dropout
  rate for every LoRA site, on projections that are not fused. Our Δ = s·B·A·dropout(x) is PEFT's
  lora_B(lora_A(lora_dropout(x)))·scaling with scaling = lora_alpha / r, so lora_alpha = s·r (per module through
  rank_pattern / alpha_pattern when sites differ); biases none; a trained task head goes in `modules_to_save`.
- `petl` (every design): our two files, loaded with `finetune.checkpoint.load_trained(model, DIR)` onto a fresh
  model of the same architecture.

Not PEFT-expressible, each for a reason checked in PEFT's code (the message says which): prefix tuning (PEFT passes
the prefix as past keys/values and moves the input to positions l..l+T-1; ours keeps the input's positions), prompt
tuning (PEFT prepends prompts to the word embeddings, so they get position embeddings and shift the input; ours
join after the position embeddings, as the official code does), the per-head adapter, sub-layer adapters, non-linear
forms at weight sites, a learned scale, BitFit and full fine-tuning.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from finetune.designpoint import DesignPoint
from finetune.tasks import get_task
from finetune.vocabulary import Backbone, Composition, Form, Representation

PEFT, PETL, AUTO = "peft", "petl", "auto"
PETL_FILES = ("design.json", "petl.safetensors")
FALLBACK = ("use --format petl (design.json + petl.safetensors, loaded with "
            "finetune.checkpoint.load_trained(model, DIR))")


def peft_refusal(design: DesignPoint) -> str | None:
    """Why PEFT cannot compute this design exactly, in one clause; None when it can (a LoRA design)."""
    if design.backbone is Backbone.FULL:
        return "backbone=full trains every weight: that is a whole model, not an adapter (use save_pretrained)"
    if design.backbone is Backbone.BIAS:
        return "BitFit (backbone=bias) trains the backbone's biases and PEFT has no BitFit adapter"
    if design.prompt_length:
        return ("prompt tuning: PEFT prepends the prompt to the word embeddings (so it gets position embeddings and "
                "shifts the input's positions), ours joins after the position embeddings as the official code does")
    if design.head_attn is not None:
        spec = design.head_attn
        if spec.form is Form.SOFTMAX and spec.composition is Composition.GATED:
            return ("prefix tuning: PEFT passes the prefix as past keys/values and moves the input to positions "
                    "l..l+T-1, ours keeps the input's positions, so the outputs differ")
        return f"head_attn with form={spec.form.value}, composition={spec.composition.value} has no PEFT counterpart"
    for rep in (Representation.ATTN, Representation.FFN):
        if getattr(design, rep.value) is not None:
            return f"the {rep.value} sub-layer adapter (He et al.'s SA/PA family) has no PEFT counterpart"
    lora = list(design.sites().items())  # only weight sites are left
    if not lora:
        return "the design trains the task head only: there is no adapter to export"
    for rep, spec in lora:
        if spec.form is not Form.IDENTITY:
            return (f"{rep.value}: form={spec.form.value} computes s·f(x A)B, while PEFT's LoRA is linear (s·x A B)")
        if spec.learn_scale:
            return f"{rep.value}: a learned scale s, while PEFT's LoRA scaling lora_alpha/r is a constant"
    rates = sorted({spec.dropout for _, spec in lora})
    if len(rates) > 1:
        return f"PEFT's lora_dropout is one rate for every module, this design uses {rates}"
    return None


def _refuse(reason: str) -> ValueError:
    return ValueError(f"cannot export to PEFT: {reason}; {FALLBACK}")


def _lora_sites(injected: Any) -> dict[str, Any]:
    """Host module name -> its WeightSite, in the injected model."""
    from finetune.petl.insertion import WeightSite  # deferred on purpose: torch and transformers; --help needs neither

    sites = {}
    for name, module in injected.named_modules():
        if isinstance(module, WeightSite):
            host = name.rsplit(".", 1)[0]
            if module.out_start is not None:
                raise _refuse(f"{host} is a fused projection (W_q, W_k, W_v in one matrix, as GPT-2's c_attn) and "
                              "PEFT's LoRA would update all of its columns")
            sites[host] = module
    return sites


def lora_config(design: DesignPoint, sites: dict[str, Any], heads: list[str], base_name: str | None) -> Any:
    """PEFT's LoraConfig for `sites` (host name -> WeightSite): lora_alpha = s·r per module."""
    from peft import LoraConfig  # deferred on purpose: PEFT loads torch and transformers

    def rank_alpha(site: Any) -> tuple[int, float]:
        r = int(site.delta.down.out_features)
        s = 1.0 if site.scale is None else float(site.scale())
        return r, s * r

    pairs = {host: rank_alpha(site) for host, site in sites.items()}
    r0, alpha0 = next(iter(pairs.values()))
    differ = {host: ra for host, ra in pairs.items() if ra != (r0, alpha0)}
    dropout = next(spec.dropout for _, spec in design.sites().items())
    return LoraConfig(r=r0, lora_alpha=alpha0, lora_dropout=dropout, bias="none",
                      target_modules=sorted(sites), modules_to_save=heads or None,
                      rank_pattern={re.escape(h): ra[0] for h, ra in differ.items()},
                      alpha_pattern={re.escape(h): ra[1] for h, ra in differ.items()},
                      base_model_name_or_path=base_name)


def export_peft(folder: str | Path, base: Any, out: str | Path) -> Path:
    """Write the trial in `folder` as a PEFT LoRA adapter under `out`, for the pretrained model `base` (left
    untouched: a fresh model of the trial's architecture with its pretrained weights). Raises ValueError with one
    line when PEFT cannot compute the design exactly."""
    # deferred on purpose: torch, PEFT and the model stack load only when an export runs, never for --help
    import torch
    from peft import get_peft_model

    from finetune.checkpoint import load_trained, read_design
    from finetune.inject import task_head_modules

    design, _ = read_design(folder)
    reason = peft_refusal(design)
    if reason:
        raise _refuse(reason)
    injected = copy.deepcopy(base)
    inj = load_trained(injected, folder)
    sites = _lora_sites(injected)
    heads = sorted(task_head_modules(injected, inj.family)) if design.train_task_head else []
    config = lora_config(design, sites, heads, getattr(base.config, "name_or_path", None) or None)
    peft_model = get_peft_model(copy.deepcopy(base), config)
    inner = peft_model.base_model.model
    with torch.no_grad():
        for host, site in sites.items():
            target = inner.get_submodule(host)
            target.lora_A["default"].weight.copy_(site.delta.down.weight)
            target.lora_B["default"].weight.copy_(site.delta.up.weight)
        for head in heads:
            inner.get_submodule(head).modules_to_save["default"].load_state_dict(
                injected.get_submodule(head).state_dict())
    out = Path(out)
    peft_model.save_pretrained(str(out))
    shutil.copy2(Path(folder) / "design.json", out / "design.json")  # provenance: the design in our terms
    return out


def export_petl(folder: str | Path, out: str | Path) -> Path:
    """Copy our format (design.json + petl.safetensors) to `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PETL_FILES:
        shutil.copy2(Path(folder) / name, out / name)
    return out


def base_model(folder: str | Path, model: str | None) -> Any:
    """The pretrained model the trial was trained on (or `model`), built as the trial built it."""
    # deferred on purpose: checkpoint and models load torch and transformers
    from finetune.checkpoint import read_design
    from finetune.models import build

    design, meta = read_design(folder)
    model = model or meta.get("model")
    task = get_task(str(meta["task"]))
    if model is None and task.generated:
        raise ValueError(f"{folder}: the trial trained a random-init tiny model of task {task.name!r}, which only "
                         "this process could rebuild; pass --model with the checkpoint it should be exported for")
    net, _ = build(task, design, model)
    net.eval()
    return net


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trial", metavar="TRIAL_DIR", type=Path, help="a trial folder: design.json + petl.safetensors")
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="where to write the export (created)")
    p.add_argument("--format", choices=(AUTO, PEFT, PETL), default=AUTO,
                   help="peft: PEFT's adapter format (refused with the reason when PEFT cannot compute the design); "
                        "petl: our format; auto (default): peft where possible, else petl, saying why")
    p.add_argument("--model", metavar="NAME_OR_DIR",
                   help="the pretrained checkpoint to export for (default: the one in design.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from finetune.checkpoint import read_design  # deferred on purpose: torch, after argument errors

        missing = [n for n in PETL_FILES if not (args.trial / n).is_file()]
        if missing:
            raise ValueError(f"{args.trial} is not a trial folder: {', '.join(missing)} missing (a trial's folder is "
                             "<search>/trials/<petl.trial_id>/, written when it finishes)")
        design, _ = read_design(args.trial)
        reason = peft_refusal(design)
        if args.format == PEFT and reason:
            raise _refuse(reason)
        if args.format == PETL or reason:
            out = export_petl(args.trial, args.out)
            why = f" (not PEFT: {reason})" if reason and args.format == AUTO else ""
            print(f"wrote {out} in the petl format{why}; load it with finetune.checkpoint.load_trained(model, "
                  f"{str(out)!r}) on a fresh model of the same architecture")
            return 0
        out = export_peft(args.trial, base_model(args.trial, args.model), args.out)
        print(f"wrote {out} as a PEFT LoRA adapter; load it with peft.PeftModel.from_pretrained(base, {str(out)!r})")
        return 0
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["export_peft", "export_petl", "lora_config", "peft_refusal"]
