"""Replicate seeds in the front and the plots: one point per configuration, mean ± std, every seed tagged."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from analysis.design import completion_order
from analysis.groups import design_groups, group_hypervolume, group_hypervolume_history, pareto_flags
from analysis.load import runs_to_frame
from analysis.pareto import hypervolume
from analysis.plots import family_colors, front_figure, front_figure_html, hover_text
from analysis.synthetic import SyntheticTrial, records_of, runs_of, synthetic_fraction
from finetune.designpoint import DesignPoint
from finetune.presets import get_preset
from search.contract import Reference

PA = DesignPoint.from_dict({"ffn": {"form": "relu", "size": 8}})  # PA, fraction 1.18e-3
MAM, PREFIX = get_preset("mam").design, get_preset("prefix").design  # 6.5% and 2.9%


def frame(scores: dict[DesignPoint, list[float]], reused: bool = False) -> pd.DataFrame:
    trials = [SyntheticTrial(d, {"lr": 1e-3, "seed": s}, score) for d, ss in scores.items()
              for s, score in enumerate(ss)]
    if reused:  # a duplicate of the first run (same design, same seed): the same computation, answered again
        trials.append(SyntheticTrial(trials[0].design, dict(trials[0].train), trials[0].score))
    df = runs_to_frame(runs_of(records_of(trials)))
    df.attrs["reference"] = Reference(0.5, "chance")
    return df


def test_a_configuration_scores_the_mean_of_its_distinct_seeds() -> None:
    df = frame({PA: [0.70, 0.74, 0.78], MAM: [0.80]}, reused=True)
    groups = design_groups(df).set_index("family")
    assert groups.loc["PA", "n_seeds"] == 3 and groups.loc["PA", "score"] == pytest.approx(0.74)
    assert groups.loc["PA", "score_std"] == pytest.approx(0.04)  # sample std of 0.70, 0.74, 0.78
    assert len(groups.loc["PA", "run_ids"]) == 4  # the reused duplicate is a run of the group, not a fourth seed
    assert groups.loc["MAM", "score_std"] == 0.0 and groups.loc["MAM", "n_seeds"] == 1


def test_the_front_is_of_configuration_means_and_tags_every_seed() -> None:
    # PA's seeds straddle MAM's 0.77 at a tenth of its budget, but their mean 0.74 is what counts.
    df = frame({PA: [0.70, 0.74, 0.78], MAM: [0.77], PREFIX: [0.79]})
    flags = pareto_flags(df)
    assert flags[df["family"] == "PA"].all()  # all three seeds of the optimal PA
    assert not flags[df["family"] == "MAM"].any() and flags[df["family"] == "prefix"].all()
    fr = [synthetic_fraction(d) for d in (PA, PREFIX)]
    assert group_hypervolume(df, ref_score=0.5) == pytest.approx(hypervolume([0.74, 0.79], fr, ref_score=0.5))


def test_hypervolume_history_follows_the_means_and_may_fall() -> None:
    df = frame({PA: [0.80, 0.60]})
    history = group_hypervolume_history(df, completion_order(df), ref_score=0.5)
    width = -math.log10(synthetic_fraction(PA))  # decades between the design and fraction 1
    order = df["seed"].iloc[completion_order(df)].tolist()
    first = {0: 0.80, 1: 0.60}[order[0]]
    assert history.tolist() == pytest.approx([(first - 0.5) * width, (0.70 - 0.5) * width])


def test_the_front_plot_has_seed_error_bars_family_colours_and_the_reference() -> None:
    df = frame({PA: [0.70, 0.74, 0.78], MAM: [0.80]})
    ax = front_figure(df).axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = [np.asarray(seg) for c in bars for coll in c.lines[2] for seg in coll.get_segments()]
    spans = [np.ptp(seg[:, 1]) for seg in segments if seg.ndim == 2 and np.isfinite(seg).all()]
    assert spans == [pytest.approx(0.08)]  # ±1 std around PA's mean; single-seed MAM has none
    labels = ax.get_legend_handles_labels()[1]
    assert "PA (1 config)" in labels and "MAM (1 config)" in labels
    assert "hypervolume reference score 0.5 (chance)" in labels
    ref_line = next(line for line in ax.lines if line.get_label().startswith("hypervolume reference"))
    assert list(ref_line.get_ydata()) == [0.5, 0.5]
    assert family_colors(["PA", "MAM", "PA"]) == {"PA": "#0072B2", "MAM": "#D55E00"}


def test_the_html_front_shows_the_spread_in_its_hover_text(tmp_path) -> None:
    df = frame({PA: [0.70, 0.74, 0.78], MAM: [0.80]})
    group = design_groups(df).iloc[0]
    text = hover_text(df.iloc[int(group["row"])].to_dict(), group)
    assert "score = 0.74 ± 0.04 over 3 seeds" in text and "ffn: relu, parallel, add, r=8" in text
    html = front_figure_html(df, tmp_path / "f.html").read_text()
    assert '"error_y":{"array":[0.04' in html.replace(" ", "") and np.isfinite(group["score"])
