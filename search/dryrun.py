"""`petl-search --dry-run`: the plan of a search, as text or one JSON object, before anything starts.

The run part (task, model, data and row counts, resolved settings and their origin, steps, evaluation) and the
per-trial cost come from `finetune.runplan`; this adds the space, the scheduler and its rung steps, resources and
concurrency, the trials and presets, and the search's cost. Designs priced: the space's presets, and for spaces with
sites a few random draws from the space (Optuna's RandomSampler, seeded), the kind of design the search starts with.
Search cost: trials × steps per trial × the median per-step FLOPs of those designs; with early stopping the expected
steps assume 1/η of the trials pass each rung (successive halving's own arithmetic), without it every trial runs to
max_steps. Starts nothing: no Ray, no weights, no MLflow.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from finetune.accounting import count_params
from finetune.cost import GpuModel
from finetune.designpoint import DesignPoint
from finetune.presets import get_preset
from finetune.runplan import cost_lines, run_lines, run_plan
from search.names import SearchError
from search.plan import Schedule, SearchPlan

RANDOM_DRAWS = 6


STUDY_PRICED = 12  # a study's configs priced in the plan (the first ones; every one trains)


def costed_designs(p: SearchPlan) -> list[tuple[str, DesignPoint]]:
    """A study's own designs (a grid or a re-evaluated front: the first STUDY_PRICED distinct ones); otherwise the
    space's presets, then (for a space with sites) RANDOM_DRAWS examples of what the sampler draws."""
    if p.study is not None:
        designs = {json.dumps(c["design"], sort_keys=True): c for c in p.study}
        return [(c.get("preset") or f"study design {k + 1}", DesignPoint.from_dict(c["design"]))
                for k, c in enumerate(list(designs.values())[:STUDY_PRICED])]
    out = [(name, get_preset(name).design) for name in p.space.presets]
    if p.space.preset_only:
        return out
    # deferred on purpose: Optuna only for a search's preset points, never for a study
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for k in range(RANDOM_DRAWS):
        design, _, _ = p.space.sample(study.ask())
        out.append((f"example draw {k + 1}", design))  # priced to estimate cost; the sampler draws its own
    return out


def expected_steps(s: Schedule) -> float:
    """Mean steps per trial if 1/η of the trials pass each rung; max_t without early stopping."""
    if s.kind == "none" or not s.rungs:
        return float(s.max_t)
    steps, previous, alive = 0.0, 0, 1.0
    for rung in s.rungs:
        steps += alive * (rung - previous)
        previous, alive = rung, alive / s.reduction_factor
    return steps + alive * (s.max_t - previous)


def search_plan(p: SearchPlan, gpu: GpuModel) -> dict[str, Any]:
    designs = costed_designs(p)
    plan = run_plan(p.run, designs, p.define_by_run.config, gpu)
    for entry, (_, design) in zip(plan["cost"]["per_trial"], designs, strict=True):
        entry["fraction"] = count_params(design, p.define_by_run.config, p.task.kind).fraction
    s, t = p.schedule, p.trial
    per_step = statistics.median(c["flops"] / c["steps"] for c in plan["cost"]["per_trial"])
    tokens_per_step = plan["cost"]["tokens_per_step"]
    mean_steps = expected_steps(s)
    gpus = p.concurrency * t.gpus_per_trial * t.workers_per_trial
    totals = {"trials": p.num_samples, "flops_per_step_median": per_step, "steps_per_trial_max": s.max_t,
              "steps_per_trial_expected": mean_steps, "tokens_max": p.num_samples * s.max_t * tokens_per_step,
              "tokens_expected": p.num_samples * mean_steps * tokens_per_step,
              "flops_max": p.num_samples * s.max_t * per_step, "flops_expected": p.num_samples * mean_steps * per_step}
    totals.update(gpu_hours_max=gpu.hours(totals["flops_max"]), gpu_hours_expected=gpu.hours(totals["flops_expected"]),
                  wall_hours_expected=gpu.hours(totals["flops_expected"]) / gpus if gpus else None)
    plan["cost"]["search"] = totals
    plan.update(
        name=p.name, space={"path": p.space.path, "description": p.space.description,
                            "sites": [r.value for r in p.space.sites], "sampled_train": {
                                k: _dim_words(d) for k, d in p.space.train.items()}},
        trials=p.num_samples, presets=[] if p.study is not None else list(p.space.presets), rungs=list(s.rungs),
        study=None if p.study is None else {"configs": len(p.study), "seeds": list(p.seeds),
                                            "seeds_at_best_lr": p.best_lr},
        scheduler={"kind": s.kind, "grace_period": s.grace_period, "reduction_factor": s.reduction_factor,
                   "max_t": s.max_t, "rungs": list(s.rungs), "bands_per_decade": s.bands_per_decade},
        resources={"cpus_per_trial": t.cpus_per_trial, "gpus_per_trial": t.gpus_per_trial,
                   "workers_per_trial": t.workers_per_trial, "concurrency": p.concurrency,
                   "max_failures": p.max_failures, "address": p.address or "local (a private Ray instance)"},
        sampler={"kind": p.sampler_kind, "seed": p.seed, "max_param_fraction": t.max_param_fraction},
        storage=str(p.storage / p.name), tracking_uri=p.tracking_uri, experiment=p.experiment,
        unavailable=p.unavailable)
    return plan


def _dim_words(d: Any) -> str:
    if d.kind in ("int", "float"):
        return f"{d.kind} in [{d.low:g}, {d.high:g}]" + (" (log)" if d.log else "")
    return f"one of {list(d.values)}"


def _trial_line(plan: dict[str, Any]) -> str:
    if plan.get("study"):
        st = plan["study"]
        return (f"trials    {plan['trials']}: a study of {st['configs']} fixed configs under seeds {st['seeds']}"
                + (" (other seeds at each design's best lr)" if st["seeds_at_best_lr"] else "")
                + "; no sampler, every config to full fidelity")
    return (f"trials    {plan['trials']}, presets first: {', '.join(plan['presets']) or 'none'}; sampler "
            f"{plan['sampler']['kind']} (seed {plan['sampler']['seed']})")


def search_lines(plan: dict[str, Any]) -> list[str]:
    sc, r, c = plan["scheduler"], plan["resources"], plan["cost"]["search"]
    sampled = ", ".join(f"{k} {v}" for k, v in plan["space"]["sampled_train"].items()) or "none"
    rungs = ", ".join(f"{x:,}" for x in sc["rungs"]) or "none (no trial is stopped early)"
    lines = [f"space     {plan['space']['path']}: sites {plan['space']['sites'] or 'none (presets only)'}; "
             f"sampled training settings: {sampled}",
             _trial_line(plan),
             f"scheduler {sc['kind']}: grace period {sc['grace_period']:,} steps, reduction factor "
             f"{sc['reduction_factor']:g}, rungs decide at steps {rungs}; max_t {sc['max_t']:,}",
             f"resources {r['cpus_per_trial']:g} CPU, {r['gpus_per_trial']:g} GPU, {r['workers_per_trial']} "
             f"worker(s) per trial; {r['concurrency']} at once on {r['address']}; {r['max_failures']} retry(ies)",
             f"storage   {plan['storage']} | MLflow {plan['tracking_uri']} (experiment {plan['experiment']})"]
    if r["gpus_per_trial"] == 0:
        lines.append("warning   --gpus-per-trial is 0: trials would train on CPU; on a GPU cluster pass e.g. "
                     "--gpus-per-trial 1 (or 0.25 to pack four trials per GPU)")
    wall = (f", about {c['wall_hours_expected']:.3g} h wall-clock on {r['concurrency']} × "
            f"{r['gpus_per_trial']:g} GPU(s)" if c["wall_hours_expected"] else "")
    lines.append(f"search    {c['trials']} trials: at most {c['tokens_max']:.3g} tokens, {c['flops_max']:.3g} FLOPs, "
                 f"{c['gpu_hours_max']:.3g} GPU-h (every trial to {c['steps_per_trial_max']:,} steps); expected "
                 f"{c['steps_per_trial_expected']:,.0f} steps per trial with early stopping: "
                 f"{c['flops_expected']:.3g} "
                 f"FLOPs, {c['gpu_hours_expected']:.3g} GPU-h{wall} (median per-step FLOPs of the designs above)")
    return lines


def print_plan(p: SearchPlan, args: argparse.Namespace) -> None:
    try:
        plan = search_plan(p, GpuModel.named(args.gpu, args.utilization))
    except ValueError as err:
        raise SearchError(str(err)) from None
    if args.json:
        print(json.dumps(plan, default=str))
        return
    # Said first and last: the plan is readable anywhere, but a run on this machine would stop on it
    warning = [f"warning: a run on this machine would stop before Ray: {p.unavailable}"] if p.unavailable else []
    print("\n".join([f"plan: search {p.name!r} of {p.task.name}; nothing was started (--dry-run)", *warning,
                     *run_lines(plan), *search_lines(plan), *cost_lines(plan), *warning]))
