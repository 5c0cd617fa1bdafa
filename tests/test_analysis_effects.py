"""Importances, marginal effects, design vocabulary and plots on in-memory synthetic trials (no MLflow store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.design import completion_order, describe_design, design_columns, pareto_flags
from analysis.effects import budget_bins, design_axes, marginal_effects, marginal_means, param_importance
from analysis.load import runs_to_frame
from analysis.plots import front_figure_html, front_figure_png, trial_categories
from analysis.synthetic import synthetic_runs


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    # The synthetic score model has parallel +0.02, scaled +0.01, FFN +0.015 over attention (see synthetic.py).
    return runs_to_frame(synthetic_runs(300, seed=11, p_stopped=0.2, p_failed=0.05))


def test_describe_design_paper_vocabulary() -> None:
    row = {"head_attn.form": "softmax", "head_attn.size": 30, "head_attn.insertion": "parallel",
           "head_attn.composition": "gated", "attn.form": "none", "attn.size": 64,
           "ffn.form": "relu", "ffn.size": 512, "ffn.insertion": "parallel", "ffn.composition": "scaled",
           "ffn.scale": 4.0, "prompt.length": 0, "backbone": "frozen"}
    assert describe_design(row) == [
        "head_attn: softmax, parallel, gated, l=30",
        "ffn: relu, parallel, scaled s=4, r=512",
    ]
    assert describe_design({"attn.form": "none", "backbone": "full"}) == ["backbone: full"]
    assert describe_design({}) == ["(no PETL module)"]


def test_design_axes(frame: pd.DataFrame) -> None:
    axes = design_axes(frame)
    assert set(axes.columns) == {"representation", "insertion", "composition", "form"}
    mam = axes[frame["preset"] == "mam"].iloc[0]
    assert mam["representation"] == "head_attn+ffn" and mam["insertion"] == "parallel"
    assert mam["composition"] == "mixed"  # gated prefix + scaled FFN adapter


def test_param_importance_for_score_and_fraction(frame: pd.DataFrame) -> None:
    imp = param_importance(frame)
    assert imp.sum() == pytest.approx(1.0)
    assert set(imp.index) <= set(design_columns(frame))
    # Planted effects: FFN adapters are common and parallel insertion adds +0.02, sizes move the score by log budget.
    assert "ffn.insertion" in imp.index[:3] and "ffn.size" in imp.index[:3]
    assert imp.attrs["evaluator"] in {"fANOVA", "PED-ANOVA"}
    assert imp.is_monotonic_decreasing
    with_train = param_importance(frame, include_train=True)
    assert "train.lr" in with_train.index and "train.lr" not in imp.index
    frac = param_importance(frame, "fraction")
    # Fraction is a deterministic function of the sizes: a size parameter must lead.
    assert frac.index[0].endswith(".size")


def test_param_importance_too_few_trials(frame: pd.DataFrame) -> None:
    few = frame[frame["full_fidelity"]].head(2)
    with pytest.raises(ValueError, match="at least 3 full-fidelity trials"):
        param_importance(few)


def test_marginal_effects_rederive_paper_findings(frame: pd.DataFrame) -> None:
    eff = marginal_effects(frame, bins=4)
    assert list(eff.columns) == ["axis", "better", "worse", "mean_diff", "median_diff", "n_bins", "bins_won",
                                 "n_better", "n_worse"]
    assert (eff["mean_diff"] >= 0).all()

    def row(axis: str, a: str, b: str) -> pd.Series:
        sel = eff[(eff["axis"] == axis) & (eff[["better", "worse"]].apply(set, axis=1) == {a, b})]
        assert len(sel) == 1, (axis, a, b)
        return sel.iloc[0]

    par = row("insertion", "parallel", "sequential")
    assert par["better"] == "parallel" and par["n_bins"] >= 2 and par["mean_diff"] > 0.005
    scaled = row("composition", "scaled", "add")
    assert scaled["better"] == "scaled" and scaled["n_bins"] >= 2
    ffn = row("representation", "ffn", "attn")
    assert ffn["better"] == "ffn"


def test_marginal_means_and_bins(frame: pd.DataFrame) -> None:
    means = marginal_means(frame, bins=3)
    assert {"axis", "value", "bin", "n", "mean", "median", "fraction_low", "fraction_high"} <= set(means.columns)
    assert means["bin"].between(0, 2).all()
    b = budget_bins(pd.Series([1e-4, 1e-3, 1e-2, np.nan]), bins=[1e-5, 5e-4, 1.0])
    assert b.tolist() == [0, 1, 1, -1]


def test_completion_order_and_categories(frame: pd.DataFrame) -> None:
    order = completion_order(frame)
    ends = frame["end_time"].to_numpy(dtype=float)[order]
    assert np.all(np.diff(ends) >= 0) and len(order) == len(frame)
    cat = trial_categories(frame)
    assert (cat[pareto_flags(frame)] == "optimal").all()
    assert set(cat[frame["status"] == "stopped"]) == {"partial"}
    assert set(cat[frame["status"] == "failed"]) == {"failed"}


def test_plots_many_trials(frame: pd.DataFrame, tmp_path: Path) -> None:
    png = front_figure_png(frame, tmp_path / "f.png")
    html = front_figure_html(frame, tmp_path / "f.html")
    assert png.stat().st_size > 10_000 and html.stat().st_size > 1_000_000
