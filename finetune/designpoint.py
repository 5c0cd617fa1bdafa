"""A design point: one PETL design in the vocabulary of He et al. (ICLR 2022, arXiv 2110.04366), Table 1.

Every method of the unified view is a learned modification Δh of some hidden representation of a frozen model, fixed
by four axes: the functional form computing Δh, the representation it modifies, how it is inserted (sequential reads
the sub-layer's output, parallel its input) and how it is composed with h (plain, scaled or gated addition), plus a
budget (prefix length l or bottleneck r). A `DesignPoint` holds one optional `SiteSpec` per modified representation.

All cross-axis rules are checked here, at construction, so an impossible design fails before any compute is spent.
Messages name the rule, the value received and the fix. The flat dotted-key form (`to_params`/`from_params`) is what
Optuna samples and MLflow records.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from finetune.vocabulary import (
    NONE,
    SITES,
    SUBLAYER_SITES,
    WEIGHT_SITES,
    Backbone,
    Composition,
    Form,
    Init,
    Insertion,
    LayerNormPos,
    Representation,
)


@dataclass(frozen=True, kw_only=True)
class SiteSpec:
    """The modification of one representation.

    `size` is the budget: the prefix length l at `head_attn`, the bottleneck r elsewhere (LoRA's rank at weight
    sites). `scale` is s of scaled composition (LoRA's α/r). `dropout` acts on the branch input at weight sites
    (LoRA's convention) and after f at the sub-layer sites (the adapter convention). `prefix_mlp` is the width of
    prefix tuning's reparametrisation MLP (Li & Liang; 0 trains the prefix vectors directly).
    """

    form: Form
    size: int
    insertion: Insertion = Insertion.PARALLEL
    composition: Composition = Composition.ADD
    scale: float = 1.0
    learn_scale: bool = False
    init: Init | None = None  # None: the site's customary init (LoRA at weight sites, BERT at sub-layer sites)
    layernorm: LayerNormPos = LayerNormPos.NONE
    dropout: float = 0.0
    prefix_mlp: int = 0


def _check_site(rep: Representation, s: SiteSpec) -> None:
    where = f"site {rep.value}"
    if isinstance(s.size, bool) or not isinstance(s.size, int) or s.size < 1:
        raise ValueError(f"{where}: size (l or r) must be an integer >= 1, got {s.size!r}")
    if not math.isfinite(s.scale) or s.scale == 0:
        raise ValueError(f"{where}: scale must be a finite non-zero number, got {s.scale!r}")
    if not 0.0 <= s.dropout < 1.0:
        raise ValueError(f"{where}: dropout must be in [0, 1), got {s.dropout!r}")
    if s.prefix_mlp < 0:
        raise ValueError(f"{where}: prefix_mlp must be >= 0 (0 = no reparametrisation), got {s.prefix_mlp!r}")
    if s.form is Form.SOFTMAX and rep is not Representation.HEAD_ATTN:
        raise ValueError(
            f"{where}: form=softmax normalises over prefix positions and exists only at head_attn (prefix tuning), "
            f"got it at {rep.value}; use relu/identity/... here or move it to head_attn"
        )
    if rep is Representation.HEAD_ATTN:
        if s.insertion is not Insertion.PARALLEL:
            raise ValueError(
                f"{where}: the per-head modification is computed from the attention query, so insertion must be "
                f"parallel, got insertion={s.insertion.value}"
            )
        if s.init is not None:
            raise ValueError(
                f"{where}: init applies to bottleneck matrices; prefix vectors have their own init, got "
                f"init={s.init.value}; remove it"
            )
        if s.dropout:
            raise ValueError(
                f"{where}: the per-head branch's weights take the attention's own dropout (as in the official code), "
                f"got dropout={s.dropout!r}; remove it (the model's attention dropout sets that rate)"
            )
    elif s.prefix_mlp:
        raise ValueError(
            f"{where}: prefix_mlp reparametrises prefix vectors and exists only at head_attn, got "
            f"prefix_mlp={s.prefix_mlp}; remove it"
        )
    if s.composition is Composition.GATED and not (rep is Representation.HEAD_ATTN and s.form is Form.SOFTMAX):
        raise ValueError(
            f"{where}: composition=gated takes its gate λ from the prefix attention mass, so it needs head_attn with "
            f"form=softmax, got form={s.form.value} at {rep.value}; use add or scaled"
        )
    if s.composition is not Composition.SCALED and (s.scale != 1.0 or s.learn_scale):
        raise ValueError(
            f"{where}: scale/learn_scale are read only by composition=scaled, got composition={s.composition.value} "
            f"with scale={s.scale}, learn_scale={s.learn_scale}; set composition: scaled or drop them"
        )
    if rep in WEIGHT_SITES and s.insertion is not Insertion.PARALLEL:
        raise ValueError(
            f"{where}: a weight-level modification (x W + Δ(x)) reads the projection's input, so insertion must be "
            f"parallel, got insertion={s.insertion.value}"
        )
    if rep not in SUBLAYER_SITES and s.layernorm is not LayerNormPos.NONE:
        raise ValueError(
            f"{where}: layernorm in/out belongs to sub-layer adapters (attn, ffn), got layernorm={s.layernorm.value} "
            f"at {rep.value}; set layernorm: none"
        )


@dataclass(frozen=True, kw_only=True)
class DesignPoint:
    """One PETL design: a `SiteSpec` per modified representation, plus the methods outside Δh's sites.

    `prompt_length` > 0 prepends that many trainable input vectors (prompt tuning). `backbone` picks which pretrained
    weights train. `train_task_head` trains a classification head (the official code left it random and frozen,
    a defect); it is counted apart from the PETL parameters. A design with no site, no prompt and a frozen backbone
    trains the task head alone (a linear probe, stored fraction 0): the control every PETL design must beat.
    """

    head_attn: SiteSpec | None = None
    attn: SiteSpec | None = None
    ffn: SiteSpec | None = None
    query: SiteSpec | None = None
    value: SiteSpec | None = None
    fc1: SiteSpec | None = None
    fc2: SiteSpec | None = None
    prompt_length: int = 0
    backbone: Backbone = Backbone.FROZEN
    train_task_head: bool = True

    def __post_init__(self) -> None:
        for rep, spec in self.sites().items():
            _check_site(rep, spec)
        if isinstance(self.prompt_length, bool) or not isinstance(self.prompt_length, int) or self.prompt_length < 0:
            raise ValueError(f"prompt.length must be an integer >= 0, got {self.prompt_length!r}")
        modifies = bool(self.sites()) or self.prompt_length > 0
        if self.backbone is Backbone.FULL and modifies:
            raise ValueError(
                f"backbone=full trains every weight, so PETL modules on top make the design's budget meaningless, got "
                f"sites {sorted(r.value for r in self.sites())} and prompt.length={self.prompt_length}; "
                "drop them or set backbone: frozen"
            )
        if not modifies and self.backbone is Backbone.FROZEN and not self.train_task_head:
            raise ValueError(
                "a design must train something, got no site, prompt.length=0, backbone=frozen and "
                "train_task_head=false; set a site, prompt.length, backbone: bias (BitFit) / full, or train_task_head"
            )

    def head_only(self) -> bool:
        """Nothing but the task head trains (a linear probe of the frozen backbone: the floor PETL must beat)."""
        return not self.sites() and self.prompt_length == 0 and self.backbone is Backbone.FROZEN

    def sites(self) -> dict[Representation, SiteSpec]:
        return {rep: spec for rep in SITES if (spec := getattr(self, rep.value)) is not None}

    # ---- flat dotted keys: the names Optuna samples and MLflow records -------------------------------------------
    def to_params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rep in SITES:
            spec = getattr(self, rep.value)
            if spec is None:
                out[f"{rep.value}.form"] = NONE
                continue
            for f in dataclasses.fields(SiteSpec):
                v = getattr(spec, f.name)
                if v is not None:
                    out[f"{rep.value}.{f.name}"] = v.value if isinstance(v, Enum) else v
        out["prompt.length"] = self.prompt_length
        out["backbone"] = self.backbone.value
        out["train_task_head"] = self.train_task_head
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DesignPoint:
        nested: dict[str, Any] = {}
        for key, value in params.items():
            head, _, tail = key.partition(".")
            if tail:
                nested.setdefault(head, {})
                if not isinstance(nested[head], dict):
                    raise ValueError(f"design key {key!r} clashes with {head!r} set to a plain value")
                nested[head][tail] = value
            else:
                nested[head] = value
        return cls.from_dict(nested)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DesignPoint:
        """Build from the nested YAML form: `{ffn: {form: relu, size: 512, ...}, prompt: {length: 0}, ...}`."""
        known = {r.value for r in SITES} | {"prompt", "backbone", "train_task_head"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown design key(s) {unknown}; expected some of {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for rep in SITES:
            raw = data.get(rep.value)
            if raw is None:
                continue
            if not isinstance(raw, Mapping):
                raise ValueError(f"site {rep.value} must be a mapping of site options, got {raw!r}")
            if raw.get("form", NONE) == NONE:
                extra = sorted(set(raw) - {"form"})
                if extra:
                    raise ValueError(f"site {rep.value} has form=none but sets {extra}; remove them or pick a form")
                continue
            kwargs[rep.value] = _site_from_dict(rep, raw)
        prompt = data.get("prompt", {}) or {}
        if not isinstance(prompt, Mapping) or set(prompt) - {"length"}:
            raise ValueError(f"prompt must be a mapping with the single key 'length', got {prompt!r}")
        if "length" in prompt:
            kwargs["prompt_length"] = _coerce_int(prompt["length"], "prompt.length")
        if "backbone" in data:
            kwargs["backbone"] = Backbone.parse(data["backbone"], "backbone")
        if "train_task_head" in data:
            kwargs["train_task_head"] = _coerce_bool(data["train_task_head"], "train_task_head")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The nested YAML form; `DesignPoint.from_dict(dp.to_dict()) == dp`."""
        out: dict[str, Any] = {}
        for key, value in self.to_params().items():
            head, _, tail = key.partition(".")
            if tail:
                if key.endswith(".form") and value == NONE:
                    continue
                out.setdefault(head, {})[tail] = value
            else:
                out[head] = value
        return out

    def describe(self) -> str:
        """One line per modified representation in the paper's words, then every setting that is not its default.

        E.g. `ffn: relu, parallel, scaled s=4, r=512, init=lora, dropout=0.1`. Any two different design points describe
        differently: every field shows whenever it could differ (tests/test_design.py perturbs each one).
        """
        lines = [_describe_site(rep, s) for rep, s in self.sites().items()]
        if self.prompt_length:
            lines.append(f"prompt: l={self.prompt_length}")
        if self.backbone is not Backbone.FROZEN:
            lines.append(f"backbone: {self.backbone.value}")
        if not self.train_task_head:
            lines.append("task head: frozen")
        return "\n".join(lines) or "task head only"

    def family(self) -> str:
        """The paper's name for this kind of design (prefix, MH PA, LoRA, SA, PA, scaled PA, MAM, BitFit, prompt
        tuning, full FT), or the kinds it combines joined by `+` (e.g. `prefix+LoRA`). MAM is prefix tuning at the
        attention heads with a scaled parallel adapter at the FFN (He et al., Section 4.6)."""
        if self.backbone is Backbone.FULL:
            return "full FT"
        kinds = list(dict.fromkeys(_module_kind(rep, s) for rep, s in self.sites().items()))
        if set(kinds) == {"prefix", "scaled PA"} and self.ffn is not None and self.attn is None:
            kinds = ["MAM"]
        if self.prompt_length:
            kinds.append("prompt tuning")
        if self.backbone is Backbone.BIAS:
            kinds.append("BitFit")
        return "+".join(kinds)


def _num(x: float) -> str:
    """Shortest exact spelling: 4.0 -> '4', 0.1 -> '0.1', 4.0000001 stays distinct from 4."""
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


def _describe_site(rep: Representation, s: SiteSpec) -> str:
    comp = s.composition.value
    if s.composition is Composition.SCALED:
        comp += f" s={_num(s.scale)}" + (" learned" if s.learn_scale else "")
    parts = [s.form.value, s.insertion.value, comp, f"{'l' if rep is Representation.HEAD_ATTN else 'r'}={s.size}"]
    if s.layernorm is not LayerNormPos.NONE:
        parts.append(f"LayerNorm {s.layernorm.value}")
    if s.prefix_mlp:
        parts.append(f"prefix MLP {s.prefix_mlp}")
    if s.init is not None:
        parts.append(f"init={s.init.value}")
    if s.dropout:
        parts.append(f"dropout={_num(s.dropout)}")
    return f"{rep.value}: " + ", ".join(parts)


def _module_kind(rep: Representation, s: SiteSpec) -> str:
    if rep is Representation.HEAD_ATTN:
        return "prefix" if s.form is Form.SOFTMAX else "MH PA"
    if rep in WEIGHT_SITES:
        return "LoRA"
    if s.insertion is Insertion.SEQUENTIAL:
        return "SA"
    return "scaled PA" if s.composition is Composition.SCALED else "PA"


_SITE_FIELDS = {f.name: f for f in dataclasses.fields(SiteSpec)}


def _site_from_dict(rep: Representation, raw: Mapping[str, Any]) -> SiteSpec:
    unknown = sorted(set(raw) - set(_SITE_FIELDS))
    if unknown:
        raise ValueError(f"site {rep.value}: unknown option(s) {unknown}; expected some of {sorted(_SITE_FIELDS)}")
    if "size" not in raw:
        raise ValueError(f"site {rep.value}: size (l or r) is required, got options {sorted(raw)}")
    key = f"{rep.value}."
    kw: dict[str, Any] = {
        "form": Form.parse(raw["form"], key + "form"),
        "size": _coerce_int(raw["size"], key + "size"),
    }
    parsers = {
        "insertion": lambda v, k: Insertion.parse(v, k),
        "composition": lambda v, k: Composition.parse(v, k),
        "scale": _coerce_float,
        "learn_scale": _coerce_bool,
        "init": lambda v, k: None if v is None else Init.parse(v, k),
        "layernorm": lambda v, k: LayerNormPos.parse(v, k),
        "dropout": _coerce_float,
        "prefix_mlp": _coerce_int,
    }
    for name, parse in parsers.items():
        if name in raw:
            kw[name] = parse(raw[name], key + name)
    return SiteSpec(**kw)


def _coerce_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, int):
        return value
    raise ValueError(f"{key} must be an integer, got {value!r}")


def _coerce_float(value: Any, key: str) -> float:
    # YAML writes `4` for 4.0: accept ints for float fields so `isinstance(x, float)` traps cannot happen later.
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def _coerce_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{key} must be true or false, got {value!r}")


__all__ = ["DesignPoint", "SiteSpec"]
