"""Replicate seeds: one point per design and training configuration, its score the mean over its seeds.

A search may train one design under several training seeds (`--seeds N`); every run then carries `train.seed` and the
same `design_key` (the design and every training setting except the seed, `search.contract.design_key`). The front,
the hypervolume and the effects compare designs, so they use the mean over a design's seeds, with the standard
deviation as its spread. Runs of one design with the same seed are one computation (a reused or rerun duplicate) and
count once. Only full-fidelity runs enter a design's score: a partial score would drag the mean down.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.pareto import REFERENCE, hypervolume, hypervolume_history, pareto_mask

SEEDLESS = "recipe"  # the seed of a run that logged none (searches before replicate seeds): the task recipe's


def seed_labels(df: pd.DataFrame) -> pd.Series:
    """Each run's seed as text (`recipe` where the run logged none)."""
    return df["seed"].map(lambda s: SEEDLESS if pd.isna(s) else str(int(s)) if float(s).is_integer() else str(s))


def _full(df: pd.DataFrame) -> np.ndarray:
    score = df["score"].to_numpy(dtype=float, na_value=np.nan)
    frac = df["fraction"].to_numpy(dtype=float, na_value=np.nan)
    return df["full_fidelity"].to_numpy(dtype=bool) & np.isfinite(score) & np.isfinite(frac)


def design_groups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per `design_key` that has at least one full-fidelity run, in order of first appearance.

    Columns: `design_key`, `score` (mean over distinct seeds), `score_std` (sample std; 0 for one seed), `n_seeds`,
    `seeds` and `scores` (lists, one entry per distinct seed), `fraction`, `family`, `preset`, `row` (the positional
    index of the group's first full-fidelity run: read its params for the design) and `run_ids` (every full-fidelity
    run of the group, duplicates included).
    """
    cols = ["design_key", "score", "score_std", "n_seeds", "seeds", "scores", "fraction", "family", "preset", "row",
            "run_ids"]
    if df.empty or not _full(df).any():
        return pd.DataFrame(columns=cols)
    full = df[_full(df)].assign(_seed=seed_labels(df), _pos=np.flatnonzero(_full(df)))
    rows = []
    for key, g in full.groupby("design_key", sort=False):
        first = g.drop_duplicates("_seed")  # same design, same seed: one computation
        scores = first["score"].to_numpy(dtype=float)
        rows.append({"design_key": key, "score": float(scores.mean()),
                     "score_std": float(scores.std(ddof=1)) if scores.size > 1 else 0.0, "n_seeds": int(scores.size),
                     "seeds": first["_seed"].tolist(), "scores": scores.tolist(),
                     "fraction": float(g["fraction"].iat[0]), "family": g["family"].iat[0],
                     "preset": next((p for p in g["preset"] if isinstance(p, str)), None),
                     "row": int(g["_pos"].iat[0]), "run_ids": g["run_id"].tolist()})
    return pd.DataFrame(rows, columns=cols)


def group_front(groups: pd.DataFrame) -> np.ndarray:
    """Pareto-optimal design groups (mean score up, fraction down)."""
    return pareto_mask(groups["score"].to_numpy(dtype=float), groups["fraction"].to_numpy(dtype=float))


def pareto_flags(df: pd.DataFrame) -> pd.Series:
    """Per run: full fidelity and its design group on the front of group means (every seed of an optimal design)."""
    groups = design_groups(df)
    optimal = set(groups.loc[group_front(groups), "design_key"]) if len(groups) else set()
    flags = _full(df) & df["design_key"].isin(optimal).to_numpy(dtype=bool)
    return pd.Series(flags, index=df.index, name="pareto")


def group_hypervolume(df: pd.DataFrame, ref_score: float = REFERENCE.ref_score) -> float:
    groups = design_groups(df)
    if groups.empty:
        return 0.0
    return hypervolume(groups["score"], groups["fraction"], ref_score=ref_score)


def group_hypervolume_history(df: pd.DataFrame, order: np.ndarray, ref_score: float = REFERENCE.ref_score
                              ) -> np.ndarray:
    """Hypervolume of the design groups' means after each run in `order` (positional indices, completion order).

    With replicate seeds a new seed can lower its design's mean, so the history need not be monotone.
    """
    full = _full(df)
    seeds = seed_labels(df).to_numpy()
    keys = df["design_key"].to_numpy()
    score = df["score"].to_numpy(dtype=float, na_value=np.nan)
    frac = df["fraction"].to_numpy(dtype=float, na_value=np.nan)
    if not pd.DataFrame({"k": keys[full], "s": seeds[full]}).groupby("k")["s"].nunique().gt(1).any():
        # One seed per design: a duplicate run repeats its design's point, so the incremental per-run history is exact.
        return hypervolume_history(np.where(full, score, np.nan), frac, order, ref_score=ref_score)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    fractions: dict[str, float] = {}
    seen: set[tuple[str, str]] = set()
    out = np.empty(len(order), dtype=np.float64)
    hv = 0.0
    for k, i in enumerate(order):
        if full[i] and (keys[i], seeds[i]) not in seen:
            seen.add((keys[i], seeds[i]))
            sums[keys[i]] = sums.get(keys[i], 0.0) + score[i]
            counts[keys[i]] = counts.get(keys[i], 0) + 1
            fractions.setdefault(keys[i], frac[i])
            means = np.array([sums[g] / counts[g] for g in sums])
            hv = hypervolume(means, np.array([fractions[g] for g in sums]), ref_score=ref_score)
        out[k] = hv
    return out
