"""fANOVA importance over what varies: which of a search's design parameters explain its scores (or budgets).

Each design is one observation (replicate seeds averaged, collapsed runs left out and each design at its best lr, as
in the like-for-like effects, so the two sections of a report speak of the same designs). The parameters are what
actually varies:

- a site's presence is one parameter (`ffn.present`), when the site is modified in some designs and not in others;
- a site's settings count only where the site is active: a setting that never varies among the designs that modify
  the site is dropped (the search never asked about it), and one that does takes, where the site is inactive, its
  most common active value (the default-value imputation fANOVA uses for inactive conditional parameters, Hutter,
  Hoos and Leyton-Brown, ICML 2014), so that it carries no trace of the presence it depends on;
- parameters that split the designs identically (tied sites such as LoRA's query and value) are one parameter,
  named `query.size = value.size`.

Encoding a sometimes-absent setting as {value, absent} instead, as before, made every such setting a copy of its site's
presence: forty designs whose score depends only on whether an FFN adapter is present gave `ffn.init` 0.28 and
`ffn.scale` 0.27.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from analysis.design import SITE_NAMES, design_columns, is_active, reference_of, train_columns
from analysis.groups import design_groups
from analysis.matching import designs_of
from analysis.pareto import MIN_FRACTION
from finetune.spans import timed

MIN_TRIALS = 3  # fANOVA fits a random forest; below 3 points every split is arbitrary
MAX_NUMERIC_CHOICES = 16  # a numeric setting with more values than this is a range, not a list of choices


def _site_of(column: str) -> str | None:
    head = column.split(".", 1)[0]
    return head if head in SITE_NAMES and "." in column else None


def varying_parameters(rows: pd.DataFrame, columns: list[str]) -> dict[str, list[Hashable]]:
    """The parameters that vary across `rows` (one row per design), each as one value per row."""
    out: dict[str, list[Hashable]] = {}
    active = {s: rows[f"{s}.form"].map(is_active).to_numpy(dtype=bool) for s in SITE_NAMES if f"{s}.form" in rows}
    for site, mask in active.items():
        if 0 < mask.sum() < len(rows):
            out[f"{site}.present"] = [bool(m) for m in mask]
    for col in columns:
        site = _site_of(col)
        values = rows[col].tolist()
        mask = active.get(site, np.ones(len(rows), dtype=bool)) if site else np.ones(len(rows), dtype=bool)
        seen = [v for v, m in zip(values, mask) if m and not pd.isna(v)]
        if len({_hashable(v) for v in seen}) < 2:
            continue  # never varies where it exists
        default = _first(pd.Series([_hashable(v) for v in seen]).mode().tolist())
        out[col] = [_hashable(v) if m and not pd.isna(v) else default for v, m in zip(values, mask)]
    return _merge_identical(out)


def _first(values: list[Hashable]) -> Hashable:
    """The smallest value (numbers numerically), so that a tie for the most common value breaks the same way always."""
    try:
        return sorted(values)[0]  # type: ignore[type-var]
    except TypeError:
        return sorted(values, key=str)[0]


def _hashable(v: object) -> Hashable:
    v = v.item() if hasattr(v, "item") else v
    return v if isinstance(v, Hashable) else str(v)


def _merge_identical(params: dict[str, list[Hashable]]) -> dict[str, list[Hashable]]:
    """Parameters that partition the designs the same way are one parameter (its name lists them all)."""
    merged: dict[tuple[int, ...], tuple[list[str], list[Hashable]]] = {}
    for name, values in params.items():
        codes = tuple(pd.factorize(pd.Series([str(v) for v in values]))[0].tolist())
        merged.setdefault(codes, ([], values))[0].append(name)
    return {" = ".join(names): values for names, values in merged.values()}


def _distribution(values: list[Hashable]) -> tuple[BaseDistribution, list[Hashable]]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    distinct = set(values)
    if numeric and len(distinct) > MAX_NUMERIC_CHOICES:
        lo, hi = float(min(values)), float(max(values))
        if all(float(v).is_integer() for v in values):
            return IntDistribution(int(lo), int(hi), log=lo >= 1 and hi / lo >= 100), [int(v) for v in values]
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100), [float(v) for v in values]
    labels = [str(v) for v in values]
    return CategoricalDistribution(sorted(set(labels))), labels


def observations(df: pd.DataFrame, target: str, include_train: bool = False) -> tuple[pd.DataFrame, np.ndarray, str]:
    """(one row of params per observation, the target per observation, what an observation is).

    For the score, the designs of the like-for-like effects (`analysis.matching.designs_of`): replicate seeds
    averaged, collapsed runs left out, each design at its best lr when lr was searched (unless `include_train` asks
    for the training settings as parameters: then every configuration). For the fraction, every configuration.
    """
    if target == "fraction":
        groups = design_groups(df)
        values = np.log10(np.maximum(groups["fraction"].to_numpy(dtype=float), MIN_FRACTION))
        return df.iloc[groups["row"].to_numpy()].reset_index(drop=True), values, "configurations"
    chosen = designs_of(df, reference_of(df), lr="equal" if include_train else "auto")
    first = df.drop_duplicates("design_key").set_index("design_key")
    rows = first.loc[[d.key for d in chosen.designs]].reset_index()
    basis = ("designs at their best lr" if chosen.lr_mode == "best" else "configurations") + (
        f", {chosen.collapsed_runs} collapsed run(s) left out" if chosen.collapsed_runs else "")
    return rows, np.array([d.scores.mean() for d in chosen.designs]), basis


@timed("report.importance")
def param_importance(df: pd.DataFrame, target: str = "score", include_train: bool = False) -> pd.Series:
    """fANOVA importance of each varying design parameter for `target` ("score", or "fraction" on a log10 scale).

    Observations: see `observations`. Falls back to PED-ANOVA if fANOVA fails on degenerate data. Returns a Series
    summing to 1, most important first; `attrs` carry `evaluator`, `designs` (observations) and `basis`. Raises
    ValueError with fewer than MIN_TRIALS observations or when nothing varies.
    """
    rows, values, basis = observations(df, target, include_train)
    if len(rows) < MIN_TRIALS:
        raise ValueError(f"param_importance needs at least {MIN_TRIALS} designs with a full-fidelity {target}; "
                         f"got {len(rows)}.")
    cols = design_columns(df) + (train_columns(df) if include_train else [])
    params = varying_parameters(rows, cols)
    if not params:
        raise ValueError("param_importance: no design parameter varies across the full-fidelity designs.")
    encoded = {name: _distribution(vals) for name, vals in params.items()}
    out = _fanova(encoded, values, "minimize" if target == "fraction" else "maximize", target)
    out.attrs["basis"] = basis
    return out


def _fanova(encoded: dict[str, tuple[BaseDistribution, list[Hashable]]], values: np.ndarray, direction: str,
            target: str) -> pd.Series:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # in-memory study creation is not news to the user
    try:
        study = optuna.create_study(direction=direction)
        dists = {c: d for c, (d, _) in encoded.items()}
        for i, v in enumerate(values):
            study.add_trial(optuna.trial.create_trial(params={c: vals[i] for c, (_, vals) in encoded.items()},
                                                      distributions=dists, value=float(v)))
        evaluator: optuna.importance.BaseImportanceEvaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except Exception:  # noqa: BLE001 - fANOVA can fail on degenerate data; PED-ANOVA needs no forest
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    finally:
        optuna.logging.set_verbosity(verbosity)
    out = pd.Series({k: float(v) for k, v in imp.items()}, name=target, dtype=float).sort_values(ascending=False)
    ped = isinstance(evaluator, optuna.importance.PedAnovaImportanceEvaluator)
    out.attrs.update(evaluator="PED-ANOVA" if ped else "fANOVA", designs=len(values))
    return out
