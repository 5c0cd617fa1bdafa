"""The study's design list (`designs.yaml`): loaded, checked and priced with the product's exact counting.

A design entry is a design point in the nested form of `spaces/presets.yaml` plus what the study needs to know about
it: its family (for hypervolume per family), its budget tier, its learning-rate grid, the conclusions it serves and
its matched partners per conclusion. Loading rejects anything the study could not use, with the rule, the value and
the fix: unknown keys, designs the design rules forbid, an unknown lr grid or conclusion, a partner that does not list
its partner back, and a pair that is not like-for-like for its conclusion (see `PAIR_RULES`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from finetune.accounting import ParamCounts, count_params
from finetune.designpoint import DesignPoint
from finetune.vocabulary import Representation

DESIGNS_FILE = Path(__file__).with_name("designs.yaml")
TAGS = ("preset", "control")  # `serves` values that are not conclusions: they take no partners
ENTRY_KEYS = {"method", "family", "budget", "lr_grid", "serves", "partners", "design"}
FFN_SITES = {Representation.FFN, Representation.FC1, Representation.FC2}
ATTN_SITES = {Representation.HEAD_ATTN, Representation.ATTN, Representation.QUERY, Representation.VALUE}
# Stored-parameter ratio (larger / smaller) allowed between the two designs of a pair. At T2 a sub-layer adapter's
# biases and LayerNorm (d + 2d per layer) are most of what it stores, so an attention PA with r=2 stores 1.75x a
# prefix with l=2 although the paper's formula gives both 9,216; the multi-head side is the cheaper one there.
BUDGET_TOLERANCE = {"T2": 1.8}
DEFAULT_TOLERANCE = 1.2


@dataclass(frozen=True)
class StudyDesign:
    id: str
    method: str
    family: str
    budget: str
    lr_grid: str
    lrs: tuple[float, ...]
    serves: tuple[str, ...]
    partners: dict[str, tuple[str, ...]]
    design: DesignPoint


@dataclass(frozen=True)
class Pair:
    """Two matched designs for one conclusion; `a` is the side the paper says wins."""

    conclusion: str
    a: str
    b: str
    budget: str


@dataclass(frozen=True)
class Study:
    model: str
    lr_grids: dict[str, tuple[float, ...]]
    conclusions: dict[str, dict[str, str]]
    designs: dict[str, StudyDesign]  # in file order: the order the runner trains them in
    pairs: tuple[Pair, ...]


def _sites(d: DesignPoint) -> set[Representation]:
    return set(d.sites())


def _diff(x: DesignPoint, y: DesignPoint) -> set[str]:
    """Flat design keys whose values differ (a key one side lacks counts as differing)."""
    px, py = x.to_params(), y.to_params()
    return {k for k in set(px) | set(py) if px.get(k) != py.get(k)}


def _only(keys: set[str], allowed: set[str]) -> bool:
    return bool(keys) and {k.partition(".")[2] for k in keys} <= allowed and len({k.partition(".")[0] for k in keys}) == 1


def _winner_insertion(x: StudyDesign, y: StudyDesign) -> str | None:
    if not _only(_diff(x.design, y.design), {"insertion"}):
        return None
    site = next(iter(_diff(x.design, y.design))).partition(".")[0]
    return x.id if getattr(x.design, site).insertion.value == "parallel" else y.id


def _winner_ffn(x: StudyDesign, y: StudyDesign) -> str | None:
    kinds = [("ffn" if _sites(d.design) <= FFN_SITES else "attn" if _sites(d.design) <= ATTN_SITES else None)
             for d in (x, y)]
    if sorted(k or "" for k in kinds) != ["attn", "ffn"]:
        return None
    return x.id if kinds[0] == "ffn" else y.id


def _winner_scaled(x: StudyDesign, y: StudyDesign, extra: set[str]) -> str | None:
    if not _only(_diff(x.design, y.design), {"composition", "scale", "learn_scale"} | extra):
        return None
    return x.id if x.design.ffn is not None and x.design.ffn.composition.value == "scaled" else y.id


def _winner_multihead(x: StudyDesign, y: StudyDesign) -> str | None:
    heads = [_sites(d.design) == {Representation.HEAD_ATTN} for d in (x, y)]
    singles = [bool(_sites(d.design)) and Representation.HEAD_ATTN not in _sites(d.design) for d in (x, y)]
    if not (heads[0] and singles[1]) and not (heads[1] and singles[0]):
        return None
    return x.id if heads[0] else y.id


# conclusion -> (what makes a pair like-for-like, for the error message; the paper's winner of a valid pair or None)
PAIR_RULES = {
    "a": ("differ in the insertion of one site only", _winner_insertion),
    "b": ("one modifies only FFN sites (ffn/fc1/fc2), the other only attention sites", _winner_ffn),
    "c": ("differ in the composition/scale of the FFN adapter only", lambda x, y: _winner_scaled(x, y, set())),
    "c_as_run": ("differ in composition/scale and init of the FFN adapter only",
                 lambda x, y: _winner_scaled(x, y, {"init"})),
    "d": ("one modifies only head_attn (a multi-head form), the other only single-head sites", _winner_multihead),
}


def model_config(model: str) -> Any:
    from finetune.models import config_for
    from finetune.tasks import get_task

    return config_for(get_task("sst2"), model)  # the classification config: both tiers' MiniLM is the same model


@functools.lru_cache(maxsize=256)
def _price(design_json: str, model: str) -> ParamCounts:
    import json

    cfg = model_config(model)
    return count_params(DesignPoint.from_dict(json.loads(design_json)), cfg, "classification")


def price(design: DesignPoint, model: str = "minilm") -> ParamCounts:
    """The product's exact counts of one design on `model` with a classification head (task head apart)."""
    import json

    return _price(json.dumps(design.to_dict(), sort_keys=True), model)


def _entry(did: str, raw: Any, grids: dict[str, tuple[float, ...]], conclusions: set[str], origin: str) -> StudyDesign:
    where = f"{origin}: design {did!r}"
    if not isinstance(raw, dict) or set(raw) != ENTRY_KEYS:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{where} must have exactly the keys {sorted(ENTRY_KEYS)}, got {got}")
    if raw["lr_grid"] not in grids:
        raise ValueError(f"{where}: lr_grid must be one of {sorted(grids)}, got {raw['lr_grid']!r}; add it to lr_grids")
    serves = tuple(raw["serves"] or ())
    bad = [s for s in serves if s not in conclusions and s not in TAGS]
    if bad:
        raise ValueError(f"{where}: serves must name conclusions {sorted(conclusions)} or tags {list(TAGS)}, got {bad}")
    partners = {str(k): tuple(v) for k, v in (raw["partners"] or {}).items()}
    stray = [k for k in partners if k not in serves or k in TAGS]
    if stray:
        raise ValueError(f"{where}: partners are listed per conclusion it serves {list(serves)}, got {stray}")
    try:
        design = DesignPoint.from_dict(raw["design"] or {})
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return StudyDesign(did, str(raw["method"]), str(raw["family"]), str(raw["budget"]), raw["lr_grid"],
                       grids[raw["lr_grid"]], serves, partners, design)


def _pairs(designs: dict[str, StudyDesign], model: str, origin: str) -> tuple[Pair, ...]:
    out, seen = [], set()
    for d in designs.values():
        for concl, others in d.partners.items():
            for other in others:
                if other not in designs:
                    raise ValueError(f"{origin}: design {d.id!r} lists partner {other!r} for {concl}, which is not "
                                     f"a design of this file; add it or remove the partner")
                if d.id not in designs[other].partners.get(concl, ()):
                    raise ValueError(f"{origin}: design {d.id!r} lists {other!r} as its {concl} partner but "
                                     f"{other!r} does not list {d.id!r} back; partners are symmetric")
                key = (concl, frozenset((d.id, other)))
                if key in seen:
                    continue
                seen.add(key)
                out.append(_pair(concl, d, designs[other], model, origin))
    return tuple(out)


def _pair(concl: str, x: StudyDesign, y: StudyDesign, model: str, origin: str) -> Pair:
    rule, winner_of = PAIR_RULES[concl]
    winner = winner_of(x, y)
    if winner is None:
        raise ValueError(f"{origin}: pair {x.id!r} / {y.id!r} is not like-for-like for conclusion {concl}: the two "
                         f"must {rule}; fix the designs or the partners")
    if x.budget != y.budget:
        raise ValueError(f"{origin}: pair {x.id!r} / {y.id!r} for {concl} mixes budgets {x.budget} and {y.budget}")
    sx, sy = price(x.design, model).stored, price(y.design, model).stored
    tol = BUDGET_TOLERANCE.get(x.budget, DEFAULT_TOLERANCE)
    if max(sx, sy) > tol * min(sx, sy):
        raise ValueError(f"{origin}: pair {x.id!r} ({sx:,} stored) / {y.id!r} ({sy:,}) for {concl} is not matched "
                         f"in budget: ratio {max(sx, sy) / min(sx, sy):.2f} > {tol} allowed at {x.budget}")
    loser = y.id if winner == x.id else x.id
    return Pair(concl, winner, loser, x.budget)


def parse_study(data: Any, origin: str) -> Study:
    if not isinstance(data, dict) or set(data) != {"model", "lr_grids", "conclusions", "designs"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{origin}: must have exactly the keys ['conclusions', 'designs', 'lr_grids', 'model'], "
                         f"got {got}")
    grids = {str(k): tuple(float(v) for v in vals) for k, vals in data["lr_grids"].items()}
    conclusions = {str(k): dict(v) for k, v in data["conclusions"].items()}
    unknown = sorted(set(conclusions) - set(PAIR_RULES))
    if unknown:
        raise ValueError(f"{origin}: conclusions must be some of {sorted(PAIR_RULES)}, got {unknown}")
    designs = {str(k): _entry(str(k), v, grids, set(conclusions), origin) for k, v in data["designs"].items()}
    model = str(data["model"])
    return Study(model, grids, conclusions, designs, _pairs(designs, model, origin))


@functools.lru_cache(maxsize=4)
def load_study(path: Path = DESIGNS_FILE) -> Study:
    with open(path, encoding="utf-8") as f:
        return parse_study(yaml.safe_load(f), str(path))
