"""Parameter importance over what varies: presence is one parameter, a site's settings count where it is active."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from analysis.importance import param_importance, varying_parameters
from analysis.load import runs_to_frame
from analysis.synthetic import SyntheticTrial, records_of, runs_of
from finetune.designpoint import DesignPoint

FFN = {"form": "relu", "composition": "scaled", "scale": 4.0, "init": "lora", "dropout": 0.1}
LORA = {"form": "identity", "composition": "scaled", "scale": 2.0, "init": "lora", "dropout": 0.1}


def grid_designs() -> list[DesignPoint]:
    """The 44 designs of benchmarks/spaces/bench_sst2_grid.yaml: prefix l in {2, 16}, FFN adapter r in {4, 64}
    sequential or parallel, LoRA on query and value (tied) r in {2, 16}; each site present or not."""
    heads = [None] + [{"form": "softmax", "size": s, "composition": "gated"} for s in (2, 16)]
    ffns = [None] + [{**FFN, "size": s, "insertion": i} for s in (4, 64) for i in ("sequential", "parallel")]
    loras = [None] + [{**LORA, "size": s} for s in (2, 16)]
    out = []
    for h, f, q in itertools.product(heads, ffns, loras):
        sites = {k: v for k, v in (("head_attn", h), ("ffn", f), ("query", q), ("value", q)) if v is not None}
        if sites:
            out.append(DesignPoint.from_dict(sites))
    return out


def forty_rows() -> pd.DataFrame:
    """Forty designs whose score depends only on whether an FFN adapter is present."""
    designs = grid_designs()[:40]
    trials = [SyntheticTrial(d, {"lr": 1e-3}, 0.80 if d.ffn is not None else 0.70) for d in designs]
    return runs_to_frame(runs_of(records_of(trials)))


def test_forty_row_ffn_presence_example_gives_the_importance_to_ffn_presence_alone() -> None:
    df = forty_rows()
    assert len(df) == 40 and df["ffn.init"].eq("lora").sum() == df["ffn.form"].eq("relu").sum() > 0
    imp = param_importance(df)
    assert imp.index[0] == "ffn.present" and imp["ffn.present"] > 0.99, imp
    # Settings that never vary where the FFN adapter exists are not parameters at all (before: 0.28, 0.27, 0.17).
    assert not {"ffn.init", "ffn.scale", "ffn.dropout", "ffn.composition", "ffn.form"} & set(imp.index)
    assert set(imp.index) == {"ffn.present", "ffn.size", "ffn.insertion", "head_attn.present", "head_attn.size",
                              "query.present = value.present", "query.size = value.size"}
    assert imp.sum() == pytest.approx(1.0) and imp.attrs["designs"] == 40


def test_inactive_settings_take_the_most_common_active_value_and_tied_sites_merge() -> None:
    rows = pd.DataFrame({"ffn.form": ["relu", "relu", "none", "relu"], "ffn.size": [4, 64, None, 64],
                         "ffn.init": ["lora", "lora", None, "lora"],
                         "query.form": ["identity", "none", "none", "identity"],
                         "query.size": [2, None, None, 16], "value.form": ["identity", "none", "none", "identity"],
                         "value.size": [2, None, None, 16], "backbone": ["frozen"] * 4})
    params = varying_parameters(rows, list(rows.columns))
    assert params == {"ffn.present": [True, True, False, True], "ffn.size": [4, 64, 64, 64],
                      "query.present = value.present": [True, False, False, True],
                      "query.size = value.size": [2, 2, 2, 16]}


def test_replicate_seeds_are_one_observation() -> None:
    designs = grid_designs()[:12]
    trials = [SyntheticTrial(d, {"lr": 1e-3, "seed": s}, (0.8 if d.ffn is not None else 0.7) + 0.001 * s)
              for d in designs for s in (1, 2, 3)]
    imp = param_importance(runs_to_frame(runs_of(records_of(trials))))
    assert imp.attrs["designs"] == 12 and "train.seed" not in imp.index
