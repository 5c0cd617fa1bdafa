"""The design vocabulary shared by the loader, plots, effects and report.

Column names are the search contract's (`search/contract.py`): the design point as dotted params (`ffn.form`,
`ffn.size`, ...), training settings under `train.`. A trial is described by the design point's own description
(`DesignPoint.describe`, e.g. `ffn: relu, parallel, scaled s=4, r=512, init=lora`), which shows every setting that
makes two designs differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from finetune.vocabulary import NONE, SITES
from search import contract as C

SITE_NAMES = tuple(rep.value for rep in SITES)  # modified representations, in the paper's order
TERMINAL_STATUSES = C.TERMINAL_STATUSES

# Columns the loader always produces; every other column is an MLflow param of the trial.
BASE_COLUMNS = (
    "trial", "run_id", "run_name", "status", "fidelity", "max_fidelity", "full_fidelity", "score", "last_score",
    "fraction", "params.trainable", "params.stored", "preset", "failure", "pareto_tag", "reused_from", "start_time",
    "end_time", "design_key", "family", "design", "seed",
)
DESIGN_LINE_SEPARATOR = "; "  # joins the lines of a design's description in the `design` column


def param_columns(df: pd.DataFrame) -> list[str]:
    """All MLflow-param columns (design and `train.*`)."""
    return [c for c in df.columns if c not in BASE_COLUMNS]


def design_columns(df: pd.DataFrame) -> list[str]:
    """The design point's columns: the contract's design params present in `df`."""
    return [c for c in param_columns(df) if C.is_design_param(c)]


def train_columns(df: pd.DataFrame, *, with_seed: bool = False) -> list[str]:
    """Training-setting columns; the replicate seed only when asked (it never makes two designs differ)."""
    return [c for c in param_columns(df) if c.startswith(C.TRAIN_PREFIX) and (with_seed or c != C.SEED_PARAM)]


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def is_active(form: Any) -> bool:
    """A site carries a module when its form is present and not `none`."""
    return not _missing(form) and str(form) != NONE


def active_sites(row: Mapping[str, Any]) -> list[str]:
    """Sites that carry a module in this trial, in the paper's order."""
    return [site for site in SITE_NAMES if is_active(row.get(f"{site}.form"))]


def describe_design(row: Mapping[str, Any]) -> list[str]:
    """The design point's own description, one line per modified representation (and prompt, backbone, head).

    A row whose params do not make a valid design point (a foreign or hand-edited run) lists its raw settings.
    """
    if isinstance(row.get("design"), str):  # the loader's `design` column: the same description, parsed once
        return str(row["design"]).split(DESIGN_LINE_SEPARATOR)
    design = C.design_from_params(row)
    if design is not None:
        return design.describe().splitlines()
    raw = [f"{k}={v}" for k, v in row.items() if C.is_design_param(str(k)) and not _missing(v)
           and not (str(k).endswith(".form") and str(v) == NONE)]
    return ["(not a valid design point) " + ", ".join(raw)] if raw else ["(no design recorded)"]


def completion_order(df: pd.DataFrame) -> np.ndarray:
    """Positional indices of terminal trials (finished/stopped/failed) in completion order.

    Ordered by the run's end_time; a terminal trial whose MLflow run is not terminated yet (the search
    tags petl.status before ending the run) sorts after all ended runs, by start_time; run_id breaks ties
    so the order is deterministic across report updates.
    """
    terminal = df["status"].isin(TERMINAL_STATUSES).to_numpy()
    end = df["end_time"].to_numpy(dtype=float, na_value=np.nan)
    start = df["start_time"].to_numpy(dtype=float, na_value=np.nan)
    pos = np.flatnonzero(terminal)
    keys = sorted(
        pos,
        key=lambda i: (math.isnan(end[i]), end[i] if not math.isnan(end[i]) else start[i], str(df["run_id"].iat[i])),
    )
    return np.asarray(keys, dtype=np.int64)


def reference_of(df: pd.DataFrame, override: float | None = None) -> C.Reference:
    """The hypervolume reference score for `df`: `override` if given, else the search's (`load_search` reads it from
    the parent run), else 0 (a frame built by hand carries none)."""
    if override is not None:
        return C.Reference(float(override), "given on the command line")
    ref = df.attrs.get("reference")
    return ref if isinstance(ref, C.Reference) else C.Reference(0.0, "0: none recorded")
