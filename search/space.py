"""Design spaces in YAML (`spaces/*.yaml`, schema in `spaces/README.md`) compiled into one Optuna define-by-run.

A space is a file or a shipped space's name (`full`, `paper`, `smoke`; `shipped_spaces`).

The YAML is the only place a space is written. Loading checks every key, type and range, and walks every
categorical branch of the compiled space once, so an impossible combination is an error before Ray starts, and
every point the search can sample is a valid `DesignPoint`.

Conditional parameters: a site's options exist only when its form is not `none`; `scale` and `learn_scale` only when
its composition is `scaled`. A categorical option whose choices the design rules narrow given the choices already
made (e.g. `gated` exists only for `form: softmax`) is sampled under a branch name such as
`head_attn.composition|form=relu`, because Optuna needs a fixed choice list per parameter name.

This file is the space itself (`SearchSpace`, its `Dim`s, and `sample_site`, the define-by-run over one site);
reading a space file is `search/spacefile.py`, walking and checking its branches and replaying presets
`search/branches.py`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from finetune.designpoint import DesignPoint
from finetune.presets import get_preset
from finetune.vocabulary import NONE, SITES, Representation
from search.yamlsafe import short

SITE_OPTIONS = ("form", "composition", "scale", "learn_scale", "insertion", "layernorm", "init", "size", "dropout",
                "prefix_mlp")  # sampling order: a choice may depend only on those before it


SCALED_ONLY = ("scale", "learn_scale")


_INT, _FLOAT = ("size", "prefix_mlp"), ("scale", "dropout")


@dataclass(frozen=True)
class Dim:
    """One searchable value: fixed, a list of choices, or a numeric range."""

    name: str
    kind: str  # "fixed" | "choice" | "int" | "float"
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    def sample(self, trial: Any, choices: tuple | None = None, branch: str = "") -> Any:
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            values = self.values if choices is None else choices
            return trial.suggest_categorical(self.name + branch, list(values))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def _dim(name: str, raw: Any, kind: str, optional: bool = False) -> Dim:
    """`kind` is the field's type: "int", "float", "bool", "str" or "pair" (two floats, e.g. betas); `optional`
    allows an empty value (null) as a fixed value or a choice."""
    where = f"space key {name}"
    if kind == "pair" and isinstance(raw, list) and raw and not isinstance(raw[0], list):
        raw = [raw]  # one pair is a fixed value; a list of pairs is a choice
    if kind == "pair" and isinstance(raw, list) and len(raw) == 1:
        return Dim(name, "fixed", (_typed(raw[0], kind, where, optional),))
    if isinstance(raw, Mapping):
        return _range(name, raw, kind)
    values = tuple(raw) if isinstance(raw, list) else (raw,)
    if not values:
        raise ValueError(f"{where}: an empty list of choices leaves nothing to search; list at least one value")
    values = tuple(_typed(v, kind, where, optional) for v in values)
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: choices must be distinct, got {short(list(values))}")
    return Dim(name, "choice" if isinstance(raw, list) and len(values) > 1 else "fixed", values)


def _range(name: str, raw: Mapping, kind: str) -> Dim:
    """A numeric range {low, high, log}: both ends finite numbers of the option's type, low <= high."""
    where = f"space key {name}"
    if kind not in ("int", "float"):
        raise ValueError(f"{where}: a range {{low, high}} needs a numeric option, got {short(dict(raw))}; use a list")
    keys = sorted(map(str, raw))
    if set(keys) - {"low", "high", "log"} or "low" not in raw or "high" not in raw:
        raise ValueError(f"{where}: a range takes keys low, high and optional log, got {short(keys)}")
    for end in ("low", "high"):
        v = raw[end]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: the range's {end} must be a finite number, got {short(v)}")
    if not isinstance(raw.get("log", False), bool):
        raise ValueError(f"{where}: the range's log must be true or false, got {short(raw['log'])}")
    low, high, log = float(raw["low"]), float(raw["high"]), bool(raw.get("log", False))
    if not low <= high or (log and low <= 0) or (kind == "int" and not (low.is_integer() and high.is_integer())):
        raise ValueError(f"{where}: need low <= high (low > 0 with log, integers for an int option), got "
                         f"low={short(raw['low'])}, high={short(raw['high'])}, log={log}")
    return Dim(name, kind, low=low, high=high, log=log)


def _typed(v: Any, kind: str, where: str, optional: bool = False) -> Any:
    if v is None and (optional or kind == "str"):
        return None
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    ok = {"int": isinstance(v, int) and not isinstance(v, bool), "float": number, "bool": isinstance(v, bool),
          "str": isinstance(v, str), "pair": isinstance(v, (list, tuple)) and len(v) == 2
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)}[kind]
    if not ok:
        raise ValueError(f"{where}: expected {kind} value(s), got {short(v)}")
    return float(v) if kind == "float" else tuple(float(x) for x in v) if kind == "pair" else v


def _site_kind(option: str) -> str:
    return "int" if option in _INT else "float" if option in _FLOAT else "bool" if option == "learn_scale" else "str"


@dataclass(frozen=True)
class SearchSpace:
    path: str
    text: str  # the YAML as written: logged to MLflow beside the runs
    description: str
    task: str | None
    model: str | None
    sites: dict[Representation, dict[str, Dim]]
    tie: dict[Representation, Representation]  # follower → leader
    prompt_length: Dim
    backbone: str
    train: dict[str, Dim]
    presets: tuple[str, ...]

    @property
    def preset_only(self) -> bool:
        return not self.sites

    def sample(self, trial: Any) -> tuple[DesignPoint, dict[str, Any], str | None]:
        """(design, training overrides, preset name) drawn through `trial`'s suggest_* calls."""
        train = {k: d.sample(trial) for k, d in self.train.items()}
        if self.preset_only:
            name = trial.suggest_categorical("preset", list(self.presets))
            return get_preset(name).design, train, name
        data: dict[str, Any] = {"backbone": self.backbone, "prompt": {"length": self.prompt_length.sample(trial)}}
        modified = data["prompt"]["length"] > 0 or self.backbone != "frozen"
        free = [r for r in SITES if r in self.sites and r not in self.tie]
        for rep in (r for r in SITES if r in self.sites):
            if rep in self.tie:
                data[rep.value] = data.get(self.tie[rep].value)
                continue
            # A design must modify something: if every earlier site drew `none`, the last one may not.
            data[rep.value] = sample_site(trial, rep, self.sites[rep], must_modify=not modified and rep == free[-1])
            modified = modified or data[rep.value] is not None
        return DesignPoint.from_dict({k: v for k, v in data.items() if v is not None}), train, None


def sample_site(trial: Any, rep: Representation, dims: dict[str, Dim], must_modify: bool) -> dict[str, Any] | None:
    form_dim = dims["form"]
    forms = tuple(f for f in form_dim.values if not (must_modify and f == NONE))
    if not forms:
        raise ValueError(f"site {rep.value}: the design must modify something, but form can only be none here")
    form = form_dim.sample(trial, forms, "|modify" if forms != form_dim.values else "")
    if form == NONE:
        return None
    if (err := _error(rep, {"form": form})) is not None:
        raise ValueError(f"{rep.value}.form={form!r} is not allowed: {err}")
    chosen: dict[str, Any] = {"form": form}
    for opt in SITE_OPTIONS[1:]:
        dim = dims.get(opt)
        if dim is None or (opt in SCALED_ONLY and chosen.get("composition") != "scaled"):
            continue
        values = dim.values if dim.kind in ("choice", "fixed") else (dim.low,)
        valid = tuple(v for v in values if _error(rep, {**chosen, opt: v}) is None)
        if not valid:  # the design rule that excludes them, in its own words
            raise ValueError(f"{dim.name}: no listed value fits {chosen}: {_error(rep, {**chosen, opt: values[0]})}")
        branch = "" if valid == values else "|" + ",".join(f"{k}={chosen[k]}" for k in chosen)
        chosen[opt] = dim.sample(trial, valid, branch) if dim.kind == "choice" else dim.sample(trial)
    return chosen


@functools.lru_cache(maxsize=65536)
def _pair_ok(rep: Representation, form: str, a: str, va: Any, b: str, vb: Any) -> bool:
    return _error(rep, {"form": form, a: va, b: vb}) is None


def _error(rep: Representation, partial: dict[str, Any]) -> str | None:
    try:
        DesignPoint.from_dict({rep.value: {"size": 1, **partial}})
        return None
    except ValueError as err:
        return str(err)


__all__ = ["Dim", "SCALED_ONLY", "SITE_OPTIONS", "SearchSpace", "sample_site"]
