"""The MLflow record of a search: every name `search/tracking.py` writes and `analysis/load.py` reads, in one place.

A search is one MLflow parent run and one nested child run per trial:

- experiment: tag `mlflow.experimentKind=custom_model_development` (unless it already had a kind).
- parent: tags `petl.role=search`, `petl.search_dir`, `petl.code_version`, and the task's hypervolume reference
  (`petl.reference_score`, `petl.reference_basis`, `petl.metric`), the space's description as `mlflow.note.content`;
  params: the resolved run configuration (`task`, `run.*`, `settings.*`).
- child: named `t003 lora_attn` (`run_name`); tags `mlflow.parentRunId`, `petl.role=trial`, `petl.trial_id`,
  `petl.trial_number`, `petl.status`, `petl.stopped_at`, `petl.fidelity`,
  `petl.max_fidelity`, `petl.preset`, `petl.failure`, `petl.reused_from`, `petl.pareto`, `petl.design` (the design
  point's own description), `petl.family`, `petl.design_key`, `petl.replicate`; params: the design point as dotted keys
  (`DesignPoint.to_params`: `ffn.form`, `ffn.size`, ...) and `train.<setting>` for every training setting the
  trial sets, its replicate seed `train.seed` included; metrics: `fraction`, `params.trainable`, `params.stored` at
  step 0, `score`, `selected_score`, `selected_step`, `loss`, `eval_loss`, `tokens_per_s`, `elapsed_s` and
  `metric.*` at every evaluation step.

The names written before this module existed keep their spelling (users' saved MLflow queries rely on them); new names
are only ever added. Writers and readers import the constants and helpers below, never a string literal of their own,
so the analysis tests' fabricated searches (`analysis/synthetic.py`) are written exactly as a real search writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from finetune.designpoint import DesignPoint, SiteSpec
from finetune.vocabulary import SITES

# ---- tags ---------------------------------------------------------------------------------------------------------
PARENT_RUN_TAG = "mlflow.parentRunId"
ROLE_TAG, ROLE_SEARCH, ROLE_TRIAL = "petl.role", "search", "trial"
SEARCH_DIR_TAG, CODE_VERSION_TAG = "petl.search_dir", "petl.code_version"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
REFERENCE_SCORE_TAG, REFERENCE_BASIS_TAG, METRIC_TAG = "petl.reference_score", "petl.reference_basis", "petl.metric"
TRIAL_ID_TAG, STATUS_TAG, PRESET_TAG, FAILURE_TAG = "petl.trial_id", "petl.status", "petl.preset", "petl.failure"
FIDELITY_TAG, MAX_FIDELITY_TAG, STOPPED_AT_TAG = "petl.fidelity", "petl.max_fidelity", "petl.stopped_at"
# A duplicate config answered from an earlier trial's result (it trained 0 steps): that trial's id (t001).
REUSED_TAG = "petl.reused_from"
PARETO_TAG = "petl.pareto"  # "true" on every run of a Pareto-optimal design (all its replicate seeds)
DESIGN_TAG, FAMILY_TAG = "petl.design", "petl.family"
DESIGN_KEY_TAG = "petl.design_key"  # same value on the replicate seeds of one design and training configuration
REPLICATE_TAG = "petl.replicate"  # "2/3": the second of three training seeds of its design
SEARCH_STATE_TAG = "petl.search_state"  # on the parent: how the search ended (search.outcome.STATES: complete, ...)
# The trial's number in this search (1, 2, ... in start order): the one id users see. Console lines, the child run's
# name (`run_name`), trials.csv's `trial` column and summary.md all show it as `trial_label` (t001, t002, ...); Ray's
# trial id stays in petl.trial_id (the trial's folder under <search>/trials/).
TRIAL_NUMBER_TAG = "petl.trial_number"
# MLflow's own names: the experiment's kind (MLflow 3 opens a `custom_model_development` experiment on its runs, an
# unset one on the GenAI traces overview) and a run's description (shown at the top of the run's page).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"

# ---- statuses (petl.status) and the MLflow run status each maps to ------------------------------------------------
FINISHED, STOPPED, FAILED, SKIPPED, INTERRUPTED, RUNNING = (
    "finished", "stopped", "failed", "skipped", "interrupted", "running")
TERMINAL_STATUSES = (FINISHED, STOPPED, FAILED)  # a trial in one of these has a place in the completion order
# An early-stopped trial did what the scheduler asked of it and a skipped one was never meant to train: both are
# FINISHED to MLflow (a green tick, not a red cross); petl.status says which. Only a trial whose driver was killed
# under it is KILLED.
MLFLOW_STATUS = {FINISHED: "FINISHED", STOPPED: "FINISHED", FAILED: "FAILED", SKIPPED: "FINISHED",
                 INTERRUPTED: "KILLED"}
# Read when a child lacks petl.status (the trial process died before tagging it).
STATUS_FROM_MLFLOW = {"FINISHED": FINISHED, "FAILED": FAILED, "KILLED": FAILED, "RUNNING": RUNNING,
                      "SCHEDULED": RUNNING}

# ---- metrics -----------------------------------------------------------------------------------------------------
SCORE, FRACTION, PARAMS_TRAINABLE, PARAMS_STORED = "score", "fraction", "params.trainable", "params.stored"
# The best evaluation so far by the run's select_metric / select_mode (finetune.selection) and its step: at
# max_steps, the checkpoint the paper would report. It is the objective the sampler and the front use; `score` (this
# step's task score) is what the rungs compare, like with like at their step.
SELECTED_SCORE, SELECTED_STEP = "selected_score", "selected_step"
OBJECTIVE = SELECTED_SCORE
STEP_METRICS = (SCORE, SELECTED_SCORE, SELECTED_STEP, "loss", "eval_loss", "tokens_per_s",
                "elapsed_s")  # logged at every evaluation step
TASK_METRIC_PREFIX = "metric."  # every named score of the task's metric (metric.rouge1, ...), at every evaluation
HYPERVOLUME = "hypervolume"  # on the parent: one point per completed trial, in completion order

# ---- params ------------------------------------------------------------------------------------------------------
TRAIN_PREFIX = "train."
SEED_PARAM = "train.seed"  # the replicate seed: never part of what makes two designs different
TASK_PARAM = "task"  # on the parent
DESIGN_LEVEL_PARAMS = ("prompt.length", "backbone", "train_task_head")
SITE_FIELDS = tuple(f.name for f in dataclasses.fields(SiteSpec))
DESIGN_PARAMS = frozenset({f"{rep.value}.{key}" for rep in SITES for key in SITE_FIELDS} | set(DESIGN_LEVEL_PARAMS))


class Reference(NamedTuple):
    """The score a design must beat to add hypervolume, and why that value."""

    score: float
    basis: str


def is_design_param(name: str) -> bool:
    return name in DESIGN_PARAMS


def trial_params(design: DesignPoint, train: Mapping[str, Any]) -> dict[str, str]:
    """The child run's params: the design as dotted keys, then `train.<k>` for each training setting the trial sets."""
    params = {**design.to_params(), **{f"{TRAIN_PREFIX}{k}": v for k, v in train.items()}}
    return {k: str(v) for k, v in params.items()}


def trial_label(number: int) -> str:
    """The id a user sees for trial `number` of a search: t001, t002, ... (t1000 past 999)."""
    return f"t{int(number):03d}"


def design_short(design: DesignPoint, preset: str | None = None) -> str:
    """A design in a few words: its preset's name, else its family and budget (`LoRA r=16`, `MAM l=30 r=512`)."""
    if preset:
        return preset
    budgets: dict[str, list[int]] = {}
    for rep, spec in design.sites().items():
        sizes = budgets.setdefault("l" if rep.value == "head_attn" else "r", [])
        if spec.size not in sizes:
            sizes.append(spec.size)
    if design.prompt_length:
        budgets.setdefault("l", []).append(design.prompt_length)
    words = [design.family() or "task head only"]
    words += [f"{k}={'/'.join(str(v) for v in vs)}" for k, vs in sorted(budgets.items())]
    return " ".join(words)


def run_name(number: int, design: DesignPoint, preset: str | None = None,
             replicate: Mapping[str, Any] | None = None) -> str:
    """A child run's MLflow name: `t003 lora_attn`, `t004 scaled PA r=512 seed 2/3`."""
    name = f"{trial_label(number)} {design_short(design, preset)}"
    if replicate and int(replicate["count"]) > 1:
        name += f" seed {int(replicate['index']) + 1}/{int(replicate['count'])}"
    return name


def trial_tags(*, parent_id: str, trial_id: str, max_steps: int, design: DesignPoint, preset: str | None = None,
               replicate: Mapping[str, Any] | None = None, number: int | None = None) -> dict[str, str]:
    """Tags a child run is created with (its status starts as `running`)."""
    tags = {PARENT_RUN_TAG: parent_id, ROLE_TAG: ROLE_TRIAL, TRIAL_ID_TAG: trial_id, MAX_FIDELITY_TAG: str(max_steps),
            STATUS_TAG: RUNNING, DESIGN_TAG: design.describe(), FAMILY_TAG: design.family()}
    if number is not None:
        tags[TRIAL_NUMBER_TAG] = str(int(number))
    if preset:
        tags[PRESET_TAG] = preset
    if replicate:
        tags[DESIGN_KEY_TAG] = str(replicate["key"])
        tags[REPLICATE_TAG] = f"{int(replicate['index']) + 1}/{int(replicate['count'])}"
    return tags


class ScoreName(NamedTuple):
    """How the task score is named where users read it: `label` (BLEU, ROUGE-2, accuracy), `scale` (its unit and
    range) and `column` (its trials.csv column)."""

    label: str
    scale: str
    column: str

    @property
    def title(self) -> str:
        """`accuracy (fraction correct, 0-1)`: an axis title or a table's basis line."""
        return f"{self.label} ({self.scale})" if self.scale else self.label


def score_name(metric: str | None) -> ScoreName:
    """The name of a task metric's primary score (`petl.metric` on the parent); a search that recorded none, or a
    metric this version does not know, keeps the generic `score`."""
    from finetune.metrics import METRICS  # light: the scorers' libraries load on first use

    m = METRICS.get(str(metric)) if metric else None
    if m is None or not m.label:
        return ScoreName("score", "task metric", "score")
    return ScoreName(m.label, m.scale, m.primary.replace("_ro", ""))


def count_metrics(fraction: float, counts: Mapping[str, Any]) -> dict[str, float]:
    """What a design costs, logged once at step 0."""
    return {FRACTION: float(fraction), PARAMS_TRAINABLE: float(counts.get("trainable", math.nan)),
            PARAMS_STORED: float(counts.get("stored", math.nan))}


def objective(result: Mapping[str, Any]) -> float:
    """The score a finished trial counts with: its selected checkpoint's, or `score` in a record written before
    selection existed (an old run, a hand-made result)."""
    return float(result[OBJECTIVE] if OBJECTIVE in result else result[SCORE])


def step_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one evaluation report that are logged at its step."""
    keys = list(STEP_METRICS) + [k for k in result if k.startswith(TASK_METRIC_PREFIX)]
    return {k: float(result[k]) for k in keys if isinstance(result.get(k), (int, float))}


def final_tags(state: str, fidelity: int, reason: str | None = None, reused_from: str | None = None) -> dict[str, str]:
    """Tags that close a child run: its status, the steps it reached and, where they apply, why and from where."""
    tags = {STATUS_TAG: state, FIDELITY_TAG: str(int(fidelity))}
    if state == STOPPED:
        tags[STOPPED_AT_TAG] = str(int(fidelity))
    if reason:
        tags[FAILURE_TAG] = reason[:5000]  # MLflow's tag-value limit
    if reused_from:
        tags[REUSED_TAG] = str(reused_from)
    return tags


def parent_tags(search_dir: str, code_version: str) -> dict[str, str]:
    return {ROLE_TAG: ROLE_SEARCH, SEARCH_DIR_TAG: search_dir, CODE_VERSION_TAG: code_version,
            GIT_COMMIT_TAG: code_version}


def reference_tags(reference: Reference, metric: str) -> dict[str, str]:
    return {REFERENCE_SCORE_TAG: repr(float(reference.score)), REFERENCE_BASIS_TAG: reference.basis,
            METRIC_TAG: metric}


def task_reference(task_name: str, labels: list[int] | None = None) -> Reference:
    """The hypervolume reference score of a task: what a model that learned nothing scores.

    Classification: the majority-class accuracy of `labels` (the evaluation examples the trials are scored on) when
    given, else chance, 1 / number of classes. BLEU and ROUGE: 0. Raises ValueError for an unknown task.
    """
    from finetune.tasks import get_task  # deferred: loads transformers' config classes

    task = get_task(task_name)
    if task.kind != "classification":
        return Reference(0.0, f"0 ({task.metric} of an empty output)")
    if labels:
        top = max(set(labels), key=labels.count)
        share = labels.count(top) / len(labels)
        return Reference(share, f"majority class of the {len(labels)} evaluation examples")
    n = int(task.num_labels or 2)
    return Reference(1.0 / n, f"chance, 1/{n} classes")


def _missing(v: Any) -> bool:
    """None, NaN or pandas' NA (a loaded frame's empty cell)."""
    v = _plain(v)
    return v is None or type(v).__name__ == "NAType" or (isinstance(v, float) and math.isnan(v))


def _plain(v: Any) -> Any:
    """A frame cell or a config value as the Python value `DesignPoint.from_params` reads (numpy scalars unwrapped)."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v


def design_from_params(params: Mapping[str, Any]) -> DesignPoint | None:
    """The design point of a child run's params (or a loaded frame's row); None when they do not make one."""
    chosen = {k: _plain(v) for k, v in params.items() if k in DESIGN_PARAMS and not _missing(v)}
    try:
        return DesignPoint.from_params(chosen)
    except (ValueError, TypeError):
        return None


def canonical(v: Any) -> str:
    """One spelling per value, whether from a config (0.001, True), a logged param ("0.001", "True") or a loaded
    column (0.001, True): numbers by value (4, 4.0 and "4.0" are "4"), booleans as true/false, other text as is."""
    v = _plain(v)
    if isinstance(v, str):
        if v in ("True", "False", "true", "false"):
            return v.lower()
        try:
            v = float(v)
        except ValueError:
            return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return format(float(v), ".12g")
    return str(v)


def design_key(params: Mapping[str, Any]) -> str:
    """A short hash of the design and every training setting except the replicate seed.

    Two runs with the same key are replicates of one design under one training configuration. `params` is a child
    run's flat params (design keys and `train.*`), as logged or as read back: both give the same key.
    """
    items = sorted((k, canonical(v)) for k, v in params.items()
                   if (k in DESIGN_PARAMS or k.startswith(TRAIN_PREFIX)) and k != SEED_PARAM and not _missing(v))
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()[:16]


def config_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config's ({design, train, ...}) flat params, as `trial_params` logs them before stringification."""
    design = DesignPoint.from_dict(config["design"])
    return {**design.to_params(), **{f"{TRAIN_PREFIX}{k}": v for k, v in config.get("train", {}).items()}}
