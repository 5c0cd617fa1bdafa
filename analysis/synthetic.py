"""Fabricate a search in MLflow that follows the search's logging contract, without training anything.

Used by the analysis tests and benchmark, and handy to try the report on a laptop. The fake scores follow
the paper's findings on purpose (parallel > sequential, scaled > add, FFN > attention, more parameters
help) so that ``analysis.effects`` has something true to re-derive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

BACKBONE_PARAMS = 125_000_000  # roughly RoBERTa-base
_HIDDEN, _LAYERS = 768, 12

# Named methods of the paper as flat design points (the search logs petl.preset for these).
PRESETS: dict[str, dict[str, object]] = {
    "prefix": {"head_attn.form": "softmax", "head_attn.size": 200, "head_attn.insertion": "parallel",
               "head_attn.composition": "gated"},
    "houlsby": {"attn.form": "relu", "attn.size": 64, "attn.insertion": "sequential", "attn.composition": "add",
                "ffn.form": "relu", "ffn.size": 64, "ffn.insertion": "sequential", "ffn.composition": "add"},
    "lora_attn": {"query.form": "identity", "query.size": 16, "query.insertion": "parallel",
                  "query.composition": "scaled", "query.scale": 2.0,
                  "value.form": "identity", "value.size": 16, "value.insertion": "parallel",
                  "value.composition": "scaled", "value.scale": 2.0},
    "mam": {"head_attn.form": "softmax", "head_attn.size": 30, "head_attn.insertion": "parallel",
            "head_attn.composition": "gated", "ffn.form": "relu", "ffn.size": 512, "ffn.insertion": "parallel",
            "ffn.composition": "scaled", "ffn.scale": 4.0},
}


@dataclass
class SyntheticSearch:
    experiment_id: str
    parent_run_id: str
    run_ids: list[str] = field(default_factory=list)


def _random_design(rng: np.random.Generator) -> dict[str, object]:
    rep = rng.choice(["ffn", "attn", "head_attn", "head_attn+ffn"])
    design: dict[str, object] = {}
    for site in rep.split("+"):
        if site == "head_attn":
            design.update({"head_attn.form": "softmax", "head_attn.size": int(rng.choice([10, 30, 100, 200])),
                           "head_attn.insertion": "parallel", "head_attn.composition": "gated"})
            continue
        comp = str(rng.choice(["add", "scaled"]))
        design.update({f"{site}.form": str(rng.choice(["relu", "gelu", "identity"])),
                       f"{site}.size": int(rng.choice([8, 16, 64, 256, 512])),
                       f"{site}.insertion": str(rng.choice(["sequential", "parallel"])),
                       f"{site}.composition": comp})
        if comp == "scaled":
            design[f"{site}.scale"] = 4.0
    return design


def _fraction(design: dict[str, object]) -> float:
    """Stored params / backbone params: two d x r matrices per module and layer (prefix: l keys + l values)."""
    stored = 0
    for key, size in design.items():
        if key.endswith(".size") and design.get(key.replace(".size", ".form"), "none") != "none":
            stored += 2 * _HIDDEN * int(size) * _LAYERS  # type: ignore[arg-type]
    return stored / BACKBONE_PARAMS


def _true_score(design: dict[str, object], fraction: float, rng: np.random.Generator) -> float:
    score = 0.80 + 0.03 * math.log10(max(fraction, 1e-6) * 1e4)
    for site in ("attn", "ffn", "query", "value"):
        if design.get(f"{site}.form", "none") == "none":
            continue
        score += 0.02 * (design.get(f"{site}.insertion") == "parallel")
        score += 0.01 * (design.get(f"{site}.composition") == "scaled")
        score += 0.015 * (site == "ffn")
    return float(np.clip(score + rng.normal(0.0, 0.004), 0.0, 1.0))


@dataclass
class TrialRecord:
    """Everything one trial run carries, independent of how it is stored."""

    run_name: str
    start_time: int
    end_time: int
    mlflow_status: str
    tags: dict[str, str]
    params: list[Param]
    metrics: list[Metric]


def trial_records(
    n_trials: int,
    *,
    seed: int = 0,
    t0: int | None = None,
    max_fidelity: int = 1000,
    p_stopped: float = 0.25,
    p_failed: float = 0.1,
    presets: tuple[str, ...] = ("mam", "prefix"),
    statuses: Sequence[str] | None = None,
    evals_per_trial: int = 3,
) -> list[TrialRecord]:
    """Generate ``n_trials`` trials: ``presets`` first (finished), then random designs.

    ``statuses`` (finished/stopped/failed per trial) overrides the random status draw, for exact test mixes.
    End times are shuffled relative to start times, as with concurrent trials.
    """
    rng = np.random.default_rng(seed)
    t0 = int(time.time() * 1000) if t0 is None else t0
    out = []
    for i in range(n_trials):
        preset = presets[i] if i < len(presets) else None
        design = dict(PRESETS[preset]) if preset else _random_design(rng)
        for site in ("head_attn", "attn", "ffn"):  # inactive core sites are logged as form=none
            design.setdefault(f"{site}.form", "none")
        design.update({"prompt.length": 0, "backbone": "frozen"})
        fraction = _fraction(design)
        u = rng.random()
        status = "failed" if u < p_failed else "stopped" if u < p_failed + p_stopped else "finished"
        status = "finished" if preset else status
        if statuses is not None:
            status = statuses[i]
        fidelity = max_fidelity if status == "finished" else int(rng.integers(1, max_fidelity // 2))
        start = t0 + 1000 * (i + 1)
        end = start + int(rng.integers(1, 50)) * 1000
        tags = {"petl.role": "trial", "petl.status": status, "petl.fidelity": str(fidelity),
                "petl.max_fidelity": str(max_fidelity)}
        if preset:
            tags["petl.preset"] = preset
        if status == "failed":
            tags["petl.failure"] = "CUDA out of memory (synthetic)"
        params = [Param(k, str(v)) for k, v in design.items()]
        params.append(Param("train.lr", f"{10 ** rng.uniform(-4.5, -3):.3g}"))
        metrics: list[Metric] = []
        if status != "failed" or i % 2 == 0:  # some failed trials never got as far as counting parameters
            stored = int(round(fraction * BACKBONE_PARAMS))
            metrics += [Metric("fraction", fraction, start, 0), Metric("params.stored", stored, start, 0),
                        Metric("params.trainable", stored, start, 0)]
        if status != "failed":
            final = _true_score(design, fraction, rng) - (0.05 if status == "stopped" else 0.0)
            for k in range(evals_per_trial):  # score logged at every evaluation; the last one is final
                step = fidelity * (k + 1) // evals_per_trial
                metrics.append(Metric("score", final - 0.02 * (evals_per_trial - 1 - k), start + k + 1, step))
        out.append(TrialRecord(f"trial_{i:05d}", start, end, "FAILED" if status == "failed" else "FINISHED",
                               tags, params, metrics))
    return out


def fabricate_search(
    client: MlflowClient,
    experiment: str,
    n_trials: int = 12,
    *,
    parent_run_id: str | None = None,
    **kwargs: object,
) -> SyntheticSearch:
    """Create a search parent run (or reuse ``parent_run_id``) and ``n_trials`` nested trial runs in MLflow.

    Three MLflow calls per trial (create_run with tags, log_batch, set_terminated). ``kwargs`` go to
    :func:`trial_records`.
    """
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    if parent_run_id is None:
        t0 = kwargs.get("t0")
        parent = client.create_run(exp_id, start_time=int(t0) if t0 is not None else None,  # type: ignore[arg-type]
                                   run_name="search", tags={"petl.role": "search"})
        parent_run_id = parent.info.run_id
    out = SyntheticSearch(experiment_id=exp_id, parent_run_id=parent_run_id)
    for rec in trial_records(n_trials, **kwargs):  # type: ignore[arg-type]
        tags = dict(rec.tags, **{"mlflow.parentRunId": parent_run_id})
        run = client.create_run(exp_id, start_time=rec.start_time, run_name=rec.run_name, tags=tags)
        client.log_batch(run.info.run_id, metrics=rec.metrics, params=rec.params)
        client.set_terminated(run.info.run_id, rec.mlflow_status, end_time=rec.end_time)
        out.run_ids.append(run.info.run_id)
    return out


def synthetic_runs(n_trials: int, parent_run_id: str = "synthetic-parent", **kwargs: object) -> list[Run]:
    """The same trials as in-memory MLflow ``Run`` entities (no store), e.g. for ``load.runs_to_frame``."""
    runs = []
    for i, rec in enumerate(trial_records(n_trials, **kwargs)):  # type: ignore[arg-type]
        tags = dict(rec.tags, **{"mlflow.parentRunId": parent_run_id})
        info = RunInfo(run_id=f"run{i:06d}", experiment_id="0", user_id="synthetic", status=rec.mlflow_status,
                       start_time=rec.start_time, end_time=rec.end_time, lifecycle_stage="active",
                       run_name=rec.run_name)
        data = RunData(metrics=rec.metrics, params=rec.params, tags=[RunTag(k, v) for k, v in tags.items()])
        runs.append(Run(info, data))
    return runs
