"""Which design choices matter: fANOVA importances and budget-matched marginal effects.

Only full-fidelity trials are used: an early-stopped trial's score is a partial-training score and would
make whatever the scheduler stopped early look bad.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from analysis.design import INACTIVE_FORMS, SITES, active_sites, design_columns, param_columns
from analysis.pareto import MIN_FRACTION

MIN_TRIALS = 3  # fANOVA fits a random forest; below 3 points every split is arbitrary
ABSENT = "absent"  # category for a conditional param a trial does not have (its site is inactive)
MAX_NUMERIC_AS_CATEGORICAL = 16  # a numeric conditional param with at most this many values becomes categorical
AXES = ("representation", "insertion", "composition", "form")


def _eligible(df: pd.DataFrame, target: str) -> pd.DataFrame:
    ok = df["full_fidelity"].astype(bool) & np.isfinite(df[target].to_numpy(dtype=float, na_value=np.nan))
    if target == "fraction":
        ok &= df["fraction"].to_numpy(dtype=float, na_value=np.nan) > 0
    return df[ok]


def _mask_inactive(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Blank every key of a site whose form is none: e.g. attn.size of an inactive attn site is noise."""
    out = df[columns].astype(object).copy()
    for site in SITES:
        form_col = f"{site}.form"
        if form_col not in out:
            continue
        inactive = out[form_col].isna() | out[form_col].astype(str).isin(INACTIVE_FORMS)
        for c in columns:
            if c.startswith(f"{site}.") and c != form_col:
                out.loc[inactive, c] = None
    return out


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _encode(col: pd.Series) -> tuple[BaseDistribution, list[object]] | None:
    """Distribution and per-trial values for one column; None when the column cannot matter (constant)."""
    present = col.dropna()
    missing = col.isna().any()
    distinct = pd.unique(present)
    if len(distinct) + int(missing) <= 1:
        return None
    numeric = len(present) > 0 and all(_is_number(v) for v in present)
    if numeric and (not missing or len(distinct) > MAX_NUMERIC_AS_CATEGORICAL):
        vals = present.astype(float)
        lo, hi = float(vals.min()), float(vals.max())
        if missing:  # many-valued conditional numeric: "absent" sits just below the smallest value
            lo = lo - max(1.0, hi - lo) * 0.1
        ints = all(float(v).is_integer() for v in vals) and not missing
        values = [lo if pd.isna(v) else (int(v) if ints else float(v)) for v in col]
        if ints:
            return IntDistribution(int(lo), int(hi), log=lo >= 1 and hi / lo >= 100), values
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100), values
    values = [ABSENT if pd.isna(v) else str(v) for v in col]
    return CategoricalDistribution(sorted(set(values))), values


def param_importance(df: pd.DataFrame, target: str = "score", include_train: bool = False) -> pd.Series:
    """fANOVA importance of each design parameter for ``target`` ("score", or "fraction" on a log10 scale).

    Builds an in-memory Optuna study from the full-fidelity trials. Conditional params (keys of a site a
    trial does not use) get an explicit ``absent`` category so no trial is dropped from the analysis.
    Falls back to PED-ANOVA if fANOVA fails. Returns a Series summing to 1, most important first; its
    ``attrs["evaluator"]`` names the evaluator used. Raises ValueError with fewer than MIN_TRIALS trials.
    """
    data = _eligible(df, target)
    if len(data) < MIN_TRIALS:
        raise ValueError(
            f"param_importance needs at least {MIN_TRIALS} full-fidelity trials with a {target}; got {len(data)}."
        )
    cols = design_columns(data) + ([c for c in param_columns(data) if c.startswith("train.")] if include_train else [])
    masked = _mask_inactive(data, cols)
    encoded = {c: e for c in cols if (e := _encode(masked[c])) is not None}
    if not encoded:
        raise ValueError("param_importance: no design parameter varies across the full-fidelity trials.")
    values = data[target].to_numpy(dtype=float)
    if target == "fraction":  # budgets span decades; importance of the order of magnitude is what matters
        values = np.log10(np.maximum(values, MIN_FRACTION))
    direction = "minimize" if target == "fraction" else "maximize"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # in-memory study creation is not news to the user
    try:
        study = optuna.create_study(direction=direction)
        dists = {c: d for c, (d, _) in encoded.items()}
        for i, v in enumerate(values):
            params = {c: vals[i] for c, (_, vals) in encoded.items()}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(v)))
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
    out.attrs["evaluator"] = "PED-ANOVA" if ped else "fANOVA"
    return out


def design_axes(df: pd.DataFrame) -> pd.DataFrame:
    """Per trial, the paper's categorical design axes.

    representation: the active sites joined with '+' (e.g. 'head_attn+ffn'); insertion / composition /
    form: the common value over active sites, or 'mixed' when they differ (a trial's score cannot be
    split between its modules).
    """
    rows = []
    for rec in df.to_dict("records"):
        sites = active_sites(rec)
        row = {"representation": "+".join(sites) if sites else "none"}
        for axis in AXES[1:]:
            vals = {str(rec.get(f"{s}.{axis}")) for s in sites if not pd.isna(rec.get(f"{s}.{axis}"))}
            row[axis] = None if not vals else vals.pop() if len(vals) == 1 else "mixed"
        rows.append(row)
    return pd.DataFrame(rows, index=df.index, columns=list(AXES))


def budget_bins(fraction: pd.Series, bins: int | Sequence[float] = 4) -> pd.Series:
    """Bin index per trial by log10 fraction: ``bins`` equal-width bins in decades, or explicit fraction edges."""
    x = np.log10(np.maximum(fraction.to_numpy(dtype=float, na_value=np.nan), MIN_FRACTION))
    finite = x[np.isfinite(x)]
    if isinstance(bins, int):
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, bins + 1)
    else:
        edges = np.log10(np.maximum(np.asarray(bins, dtype=float), MIN_FRACTION))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    out = pd.Series(np.where(np.isfinite(x), idx, -1), index=fraction.index, name="bin")
    out.attrs["edges_fraction"] = (10.0 ** edges).tolist()
    return out


def marginal_means(df: pd.DataFrame, bins: int | Sequence[float] = 4) -> pd.DataFrame:
    """Mean/median score and count per (axis, value, budget bin) over full-fidelity trials."""
    data = _eligible(_eligible(df, "score"), "fraction")
    b = budget_bins(data["fraction"], bins)
    edges = b.attrs["edges_fraction"]
    axes = design_axes(data)
    frames = []
    for axis in AXES:
        g = pd.DataFrame({"value": axes[axis], "bin": b, "score": data["score"]}).dropna(subset=["value"])
        agg = g.groupby(["value", "bin"])["score"].agg(n="size", mean="mean", median="median").reset_index()
        agg.insert(0, "axis", axis)
        frames.append(agg)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not out.empty:
        out["fraction_low"] = [edges[i] for i in out["bin"]]
        out["fraction_high"] = [edges[i + 1] for i in out["bin"]]
    return out


def marginal_effects(df: pd.DataFrame, bins: int | Sequence[float] = 4) -> pd.DataFrame:
    """Pairwise comparisons of values of each design axis at matched parameter budgets.

    For each axis and pair of values (a, b), only budget bins where both occur count. Per bin the
    difference of mean (and of median) scores is taken; ``mean_diff`` is the mean over those bins (each bin
    weighs the same, so a crowded budget does not dominate) and ``median_diff`` the median over bins of the
    per-bin median differences. Rows are oriented so that ``better`` has mean_diff >= 0; ``n_bins`` and
    ``n_better``/``n_worse`` (trials in the supporting bins) say how much evidence backs each row, and
    ``bins_won`` in how many bins ``better`` had the higher mean.
    """
    means = marginal_means(df, bins)
    rows = []
    for axis, g in means.groupby("axis", sort=False) if not means.empty else []:
        table = g.pivot(index="bin", columns="value", values=["mean", "median", "n"])
        for a, b in combinations(sorted(g["value"].unique()), 2):
            both = table["n"][a].notna() & table["n"][b].notna()
            if not both.any():
                continue
            d_mean = (table["mean"][a] - table["mean"][b])[both]
            d_median = (table["median"][a] - table["median"][b])[both]
            sign = 1.0 if d_mean.mean() >= 0 else -1.0
            better, worse = (a, b) if sign > 0 else (b, a)
            rows.append({
                "axis": axis, "better": better, "worse": worse, "mean_diff": float(sign * d_mean.mean()),
                "median_diff": float(sign * d_median.median()), "n_bins": int(both.sum()),
                "bins_won": int((sign * d_mean > 0).sum()),
                "n_better": int(table["n"][better][both].sum()), "n_worse": int(table["n"][worse][both].sum()),
            })
    cols = ["axis", "better", "worse", "mean_diff", "median_diff", "n_bins", "bins_won", "n_better", "n_worse"]
    out = pd.DataFrame(rows, columns=cols)
    order = {a: i for i, a in enumerate(AXES)}
    return out.sort_values(["axis", "n_bins", "mean_diff"], ascending=[True, False, False],
                           key=lambda s: s.map(order) if s.name == "axis" else s).reset_index(drop=True)
