"""Fabricate a search in MLflow without training anything, written through the search's own contract.

Every record is made of real `DesignPoint`s and written with `search.contract`'s names and helpers (the same ones
`search/tracking.py` writes with), so a change to what a search records reaches the analysis tests too. Used by the
analysis tests and benchmark, and handy to try the report on a laptop.

`trial_records` draws random designs whose fake scores follow the paper's findings (parallel > sequential, scaled >
add, FFN > attention, more parameters help) with noise; `SyntheticTrial` lists let a test plant exact effects. Given
real scores and fractions, `runs_to_frame(runs_of(records_of(trials)))` is also how a table of finished trials (e.g.
a study's JSONL) becomes the frame every analysis function reads, without an MLflow store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

from finetune.designpoint import DesignPoint
from finetune.presets import get_preset
from search import contract as C

BACKBONE_PARAMS = 125_000_000  # roughly RoBERTa-base
HIDDEN, LAYERS = 768, 12
_WIDTH = {"head_attn": 2, "attn": 2, "ffn": 2, "query": 2, "value": 2, "fc1": 5, "fc2": 5}  # x d per unit of size


@dataclass
class SyntheticSearch:
    experiment_id: str
    parent_run_id: str
    run_ids: list[str] = field(default_factory=list)


@dataclass
class SyntheticTrial:
    """One trial as a search would run it: a design, its training settings and what became of it."""

    design: DesignPoint
    train: dict[str, object]
    score: float | None  # the final score; None for a failed trial
    status: str = C.FINISHED
    fidelity: int | None = None  # steps reached (default: max_fidelity when finished)
    preset: str | None = None
    failure: str | None = None
    fraction: float | None = None  # stored / backbone parameters; default: `synthetic_fraction(design)`


def synthetic_fraction(design: DesignPoint) -> float:
    """Stored params / backbone params, in closed form for a RoBERTa-base-like backbone (d=768, 12 layers).

    Per layer: a prefix stores l keys and values (2ld), an adapter or a LoRA pair on a d x d projection 2dr, LoRA on
    an FFN matrix (d x 4d) 5dr; a prompt stores ld once; BitFit ~0.1%; full fine-tuning everything.
    """
    if design.backbone.value == "full":
        return 1.0
    stored = sum(_WIDTH[rep.value] * HIDDEN * s.size * LAYERS for rep, s in design.sites().items())
    stored += design.prompt_length * HIDDEN + (BACKBONE_PARAMS // 1000 if design.backbone.value == "bias" else 0)
    return stored / BACKBONE_PARAMS


def _random_design(rng: np.random.Generator) -> DesignPoint:
    data: dict[str, object] = {}
    for site in str(rng.choice(["ffn", "attn", "head_attn", "head_attn+ffn"])).split("+"):
        if site == "head_attn":
            data[site] = {"form": "softmax", "size": int(rng.choice([10, 30, 100, 200])), "composition": "gated"}
            continue
        comp = str(rng.choice(["add", "scaled"]))
        data[site] = {"form": str(rng.choice(["relu", "gelu", "identity"])),
                      "size": int(rng.choice([8, 16, 64, 256, 512])),
                      "insertion": str(rng.choice(["sequential", "parallel"])), "composition": comp,
                      **({"scale": 4.0} if comp == "scaled" else {})}
    return DesignPoint.from_dict(data)


def paper_like_score(design: DesignPoint, rng: np.random.Generator, noise: float = 0.004) -> float:
    """More parameters help; parallel +0.02, scaled +0.01 and FFN +0.015 per adapter module; Gaussian noise."""
    score = 0.80 + 0.03 * math.log10(max(synthetic_fraction(design), 1e-6) * 1e4)
    for rep, s in design.sites().items():
        if rep.value in ("head_attn",):
            continue
        score += 0.02 * (s.insertion.value == "parallel") + 0.01 * (s.composition.value == "scaled")
        score += 0.015 * (rep.value == "ffn")
    return float(np.clip(score + rng.normal(0.0, noise), 0.0, 1.0))


def random_trials(n_trials: int, *, seed: int = 0, p_stopped: float = 0.25, p_failed: float = 0.1,
                  presets: tuple[str, ...] = ("mam", "prefix"), statuses: Sequence[str] | None = None
                  ) -> list[SyntheticTrial]:
    """`presets` first (finished), then random designs; `statuses` overrides the random status draw."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_trials):
        preset = presets[i] if i < len(presets) else None
        design = get_preset(preset).design if preset else _random_design(rng)
        u = rng.random()
        status = C.FAILED if u < p_failed else C.STOPPED if u < p_failed + p_stopped else C.FINISHED
        status = statuses[i] if statuses is not None else C.FINISHED if preset else status
        score = paper_like_score(design, rng) - (0.05 if status == C.STOPPED else 0.0)
        out.append(SyntheticTrial(design, {"lr": float(f"{10 ** rng.uniform(-4.5, -3):.3g}")},
                                  None if status == C.FAILED else score, status, preset=preset,
                                  failure="CUDA out of memory (synthetic)" if status == C.FAILED else None))
    return out


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


def records_of(trials: Iterable[SyntheticTrial], *, parent_id: str = "synthetic-parent", seed: int = 0,
               t0: int | None = None, max_fidelity: int = 1000, evals_per_trial: int = 3) -> list[TrialRecord]:
    """The MLflow records of `trials`, built with the contract's helpers exactly as tracking builds them.

    End times are shuffled relative to start times, as with concurrent trials; some failed trials never got as far
    as counting parameters (no fraction), as happens when a trial crashes while building its model.
    """
    rng = np.random.default_rng(seed + 1)
    t0 = int(time.time() * 1000) if t0 is None else t0
    out = []
    for i, t in enumerate(trials):
        start = t0 + 1000 * (i + 1)
        end = start + int(rng.integers(1, 50)) * 1000
        fidelity = t.fidelity if t.fidelity is not None else (
            max_fidelity if t.status == C.FINISHED else int(rng.integers(1, max_fidelity // 2)))
        tags = C.trial_tags(parent_id=parent_id, trial_id=f"trial_{i:05d}", max_steps=max_fidelity, design=t.design,
                            preset=t.preset, number=i + 1)
        tags.update(C.final_tags(t.status, fidelity, t.failure))
        fraction = t.fraction if t.fraction is not None else synthetic_fraction(t.design)
        stored = int(round(fraction * BACKBONE_PARAMS))
        metrics: list[Metric] = []
        if t.status != C.FAILED or i % 2 == 0:
            counts = {"trainable": stored, "stored": stored}
            metrics += [Metric(k, v, start, 0) for k, v in C.count_metrics(fraction, counts).items()]
        if t.score is not None:
            for k in range(evals_per_trial):  # score logged at every evaluation; the last one is final
                step = fidelity * (k + 1) // evals_per_trial
                score = t.score - 0.02 * (evals_per_trial - 1 - k)
                metrics += [Metric(n, v, start + k + 1, step) for n, v in
                            C.step_metrics({C.SCORE: score, "loss": 1.0 / (k + 1)}).items()]
        params = [Param(k, v) for k, v in C.trial_params(t.design, t.train).items()]
        out.append(TrialRecord(C.run_name(i + 1, t.design, t.preset), start, end,
                               C.MLFLOW_STATUS.get(t.status, "FINISHED"), tags, params, metrics))
    return out


def trial_records(n_trials: int, *, seed: int = 0, t0: int | None = None, max_fidelity: int = 1000,
                  p_stopped: float = 0.25, p_failed: float = 0.1, presets: tuple[str, ...] = ("mam", "prefix"),
                  statuses: Sequence[str] | None = None, evals_per_trial: int = 3,
                  parent_id: str = "synthetic-parent") -> list[TrialRecord]:
    """`n_trials` random trials (`random_trials`) as MLflow records (`records_of`)."""
    trials = random_trials(n_trials, seed=seed, p_stopped=p_stopped, p_failed=p_failed, presets=presets,
                           statuses=statuses)
    return records_of(trials, parent_id=parent_id, seed=seed, t0=t0, max_fidelity=max_fidelity,
                      evals_per_trial=evals_per_trial)


def fabricate_search(client: MlflowClient, experiment: str, n_trials: int = 12, *, parent_run_id: str | None = None,
                     trials: Sequence[SyntheticTrial] | None = None, reference: C.Reference | None = None,
                     **kwargs: object) -> SyntheticSearch:
    """Create a search parent run (or reuse `parent_run_id`) and its trial runs in MLflow.

    `trials` writes exactly those; otherwise `n_trials` random ones (`kwargs` go to `trial_records`). Three MLflow
    calls per trial (create_run with tags, log_batch, set_terminated).
    """
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    t0 = kwargs.get("t0")
    if parent_run_id is None:
        parent = client.create_run(exp_id, start_time=int(t0) if t0 is not None else None,  # type: ignore[arg-type]
                                   run_name="search", tags=C.parent_tags(f"/synthetic/{experiment}", "synthetic"))
        parent_run_id = parent.info.run_id
        client.log_param(parent_run_id, C.TASK_PARAM, "sst2")
        if reference is not None:
            client.log_batch(parent_run_id, tags=[RunTag(k, v) for k, v in C.reference_tags(reference,
                                                                                            "accuracy").items()])
    out = SyntheticSearch(experiment_id=exp_id, parent_run_id=parent_run_id)
    records = (records_of(trials, parent_id=parent_run_id, t0=t0) if trials is not None  # type: ignore[arg-type]
               else trial_records(n_trials, parent_id=parent_run_id, **kwargs))  # type: ignore[arg-type]
    for rec in records:
        run = client.create_run(exp_id, start_time=rec.start_time, run_name=rec.run_name, tags=rec.tags)
        client.log_batch(run.info.run_id, metrics=rec.metrics, params=rec.params)
        client.set_terminated(run.info.run_id, rec.mlflow_status, end_time=rec.end_time)
        out.run_ids.append(run.info.run_id)
    return out


def runs_of(records: Sequence[TrialRecord]) -> list[Run]:
    """In-memory MLflow `Run` entities (no store) of `records`, e.g. for `analysis.load.runs_to_frame`."""
    runs = []
    for i, rec in enumerate(records):
        info = RunInfo(run_id=f"run{i:06d}", experiment_id="0", user_id="synthetic", status=rec.mlflow_status,
                       start_time=rec.start_time, end_time=rec.end_time, lifecycle_stage="active",
                       run_name=rec.run_name)
        data = RunData(metrics=rec.metrics, params=rec.params, tags=[RunTag(k, v) for k, v in rec.tags.items()])
        runs.append(Run(info, data))
    return runs


def synthetic_runs(n_trials: int, parent_run_id: str = "synthetic-parent", **kwargs: object) -> list[Run]:
    """`n_trials` random trials as in-memory runs."""
    return runs_of(trial_records(n_trials, parent_id=parent_run_id, **kwargs))  # type: ignore[arg-type]
