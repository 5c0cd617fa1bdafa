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
    full = _full(df) if len(df) else np.zeros(0, dtype=bool)
    if not full.any():
        return pd.DataFrame(columns=cols)
    runs = pd.DataFrame({"design_key": df["design_key"].to_numpy()[full], "seed": seed_labels(df).to_numpy()[full],
                         "score": df["score"].to_numpy(dtype=float)[full], "row": np.flatnonzero(full),
                         "run_id": df["run_id"].to_numpy()[full]})
    distinct = runs.drop_duplicates(["design_key", "seed"])  # same design, same seed: one computation
    out = distinct.groupby("design_key", sort=False)["score"].agg(score="mean", score_std="std", n_seeds="size")
    out["score_std"] = out["score_std"].fillna(0.0)  # one seed: no spread measured
    out["seeds"], out["scores"] = _lists(distinct, "seed"), _lists(distinct, "score")
    out["row"] = runs.groupby("design_key", sort=False)["row"].first()
    out["run_ids"] = _lists(runs, "run_id")
    out["fraction"] = df["fraction"].to_numpy(dtype=float)[out["row"].to_numpy()]
    out["family"] = df["family"].to_numpy()[out["row"].to_numpy()]
    presets = df["preset"].to_numpy()[runs["row"].to_numpy()]
    named = runs.assign(preset=[p if isinstance(p, str) else None for p in presets]).dropna(subset=["preset"])
    out["preset"] = named.groupby("design_key", sort=False)["preset"].first().reindex(out.index)
    out["preset"] = out["preset"].astype(object).where(out["preset"].notna(), None)
    return out.reset_index()[cols]


def _lists(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per design_key, the list of `column`'s values in order (pandas' agg(list) is ~100x slower)."""
    out: dict[str, list] = {}
    for key, value in zip(frame["design_key"], frame[column]):
        out.setdefault(key, []).append(value)
    return pd.Series(out, dtype=object)


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
