"""The design vocabulary shared by the loader, plots, effects and report.

Knows the flat dotted parameter names of the search contract (``ffn.form``, ``ffn.size`` ...) and renders a
trial in the paper's terms (He et al., 2022: functional form, insertion form, modified representation,
composition function), e.g. ``ffn: relu, parallel, scaled s=4, r=512``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.pareto import pareto_mask

# Modified representations, in the order the paper discusses them (prefix tuning's head attention first).
SITES = ("head_attn", "attn", "ffn", "query", "value", "fc1", "fc2")
SITE_KEYS = (
    "form", "size", "insertion", "composition", "scale", "learn_scale", "init", "layernorm", "dropout", "prefix_mlp",
)
# A site whose form is one of these (or missing) carries no module; its other keys are meaningless.
INACTIVE_FORMS = frozenset({"none", "None", ""})
TERMINAL_STATUSES = ("finished", "stopped", "failed")

# Columns the loader always produces; every other column is an MLflow param of the trial.
BASE_COLUMNS = (
    "run_id", "run_name", "status", "fidelity", "max_fidelity", "full_fidelity", "score", "last_score", "fraction",
    "params.trainable", "params.stored", "preset", "failure", "pareto_tag", "reused_from", "start_time", "end_time",
)


def param_columns(df: pd.DataFrame) -> list[str]:
    """All MLflow-param columns (design and ``train.*``)."""
    return [c for c in df.columns if c not in BASE_COLUMNS]


def design_columns(df: pd.DataFrame) -> list[str]:
    """The design point's columns: every param except the training hyper-parameters under ``train.``."""
    return [c for c in param_columns(df) if not c.startswith("train.")]


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    """4.0 -> '4', 512 -> '512', 0.1 -> '0.1' (designs read better without trailing .0)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def active_sites(row: Mapping[str, Any]) -> list[str]:
    """Sites that carry a module in this trial (form present and not ``none``)."""
    out = []
    for site in SITES:
        form = row.get(f"{site}.form")
        if not _missing(form) and str(form) not in INACTIVE_FORMS:
            out.append(site)
    return out


def _truthy(v: Any) -> bool:
    return not _missing(v) and str(v).lower() in {"true", "1", "yes"}


def describe_site(row: Mapping[str, Any], site: str) -> str:
    """One site in the paper's vocabulary: ``ffn: relu, parallel, scaled s=4, r=512``."""
    get = lambda key: row.get(f"{site}.{key}")  # noqa: E731 - tiny local accessor
    parts = [_fmt(get("form"))]
    if not _missing(get("insertion")):
        parts.append(_fmt(get("insertion")))
    comp = get("composition")
    if not _missing(comp):
        text = _fmt(comp)
        if str(comp) == "scaled" and not _missing(get("scale")):
            text += f" s={_fmt(get('scale'))}" + (" (learned)" if _truthy(get("learn_scale")) else "")
        parts.append(text)
    if not _missing(get("size")):
        # The paper writes l for prefix length (head attention) and r for bottleneck dimension elsewhere.
        parts.append(f"{'l' if site == 'head_attn' else 'r'}={_fmt(get('size'))}")
    if _truthy(get("layernorm")):
        parts.append("LN")
    if _truthy(get("prefix_mlp")):
        parts.append("MLP reparam")
    if not _missing(get("init")):
        parts.append(f"init={_fmt(get('init'))}")
    dropout = get("dropout")
    if not _missing(dropout) and str(dropout) not in {"0", "0.0"}:
        parts.append(f"dropout={_fmt(dropout)}")
    return f"{site}: " + ", ".join(parts)


def describe_design(row: Mapping[str, Any]) -> list[str]:
    """The whole design point, one line per active site plus prompt and backbone when they deviate."""
    lines = [describe_site(row, site) for site in active_sites(row)]
    prompt = row.get("prompt.length")
    if not _missing(prompt) and str(prompt) not in {"0", "0.0"}:
        lines.append(f"prompt: l={_fmt(prompt)}")
    backbone = row.get("backbone")
    if not _missing(backbone) and str(backbone) != "frozen":
        lines.append(f"backbone: {_fmt(backbone)}")
    return lines or ["(no PETL module)"]


def pareto_flags(df: pd.DataFrame) -> pd.Series:
    """Pareto-optimal trials: only full-fidelity trials compete (early-stopped scores are partial)."""
    if df.empty:
        return pd.Series(np.zeros(0, dtype=bool), index=df.index, name="pareto")
    score = df["score"].to_numpy(dtype=float, na_value=np.nan)
    full = df["full_fidelity"].to_numpy(dtype=bool)
    mask = pareto_mask(np.where(full, score, np.nan), df["fraction"].to_numpy(dtype=float, na_value=np.nan))
    return pd.Series(mask, index=df.index, name="pareto")


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
