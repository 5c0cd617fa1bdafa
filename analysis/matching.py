"""Like-for-like matching: the designs of a search, and the pairs of them that differ in one choice only.

A *design* here is one design point at one training configuration, with the scores of its replicate seeds. When the
learning rate was searched (it takes several values), each design is taken at its best lr (highest mean score over its
seeds), so that a design is never judged at an lr that does not suit it; otherwise every training setting must be
equal. Runs that *collapsed* (scored no better than a model that learned nothing: at most the task's reference score,
e.g. the majority class, plus `COLLAPSE_MARGIN` of it) are training failures, not design effects: they are left out
before the lr is chosen, and a design none of whose runs learned anything is dropped.

Two designs are *comparable along an axis* when every setting outside that axis is equal: every other site with all
its settings, prompt, backbone, task head and training settings (the `context`). A *unit* of evidence is one context
holding designs on both sides of a comparison; for the modified representation the sides are matched one-to-one by
parameter budget within `BUDGET_TOLERANCE`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from analysis.design import SITE_NAMES, design_columns, train_columns
from analysis.groups import seed_labels
from search import contract as C

COLLAPSE_MARGIN = 0.02  # relative to the reference score: 0.51 majority-class accuracy -> collapsed at <= 0.520
BUDGET_TOLERANCE = 0.25  # two budgets match when the larger is at most 25% above the smaller
LR = f"{C.TRAIN_PREFIX}lr"

Settings = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Design:
    """One design (at its best lr when lr was searched) and the scores of its replicate seeds."""

    key: str
    settings: dict[str, str]  # canonical values: design params of active sites, design-level and training settings
    scores: np.ndarray
    fraction: float
    lr: str | None = None
    collapsed: int = 0  # runs left out because they collapsed

    def site(self, site: str) -> dict[str, str] | None:
        """The settings of one site's module (`form`, `size`, ...), None when the site carries no module."""
        if self.settings.get(f"{site}.form", C.canonical("none")) == "none":
            return None
        prefix = f"{site}."
        return {k[len(prefix):]: v for k, v in self.settings.items() if k.startswith(prefix)}

    def active(self) -> list[str]:
        return [s for s in SITE_NAMES if self.site(s) is not None]


@dataclass
class DesignSet:
    """The designs a comparison may use, and how they were chosen."""

    designs: list[Design]
    lr_mode: str  # "best": each design at its best lr; "equal": training settings must be equal
    collapsed_runs: int = 0
    dropped: list[str] = field(default_factory=list)  # designs all of whose runs collapsed


def _settings(row: dict, design_cols: Sequence[str], train_cols: Sequence[str]) -> dict[str, str]:
    design = C.design_from_params(row)
    params = design.to_params() if design is not None else {c: row[c] for c in design_cols}
    out = {k: C.canonical(v) for k, v in params.items() if not _missing(v)}
    out.update({c: C.canonical(row[c]) for c in train_cols if not _missing(row[c])})
    return out


def _missing(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def collapse_threshold(reference: C.Reference | None, margin: float = COLLAPSE_MARGIN) -> float:
    """Scores at or below this collapsed; -inf when there is no reference to judge by."""
    if reference is None:
        return -math.inf
    return reference.score * (1.0 + margin) if reference.score > 0 else reference.score


def designs_of(df: pd.DataFrame, reference: C.Reference | None, *, lr: str = "auto",
               keep_collapsed: bool = False, margin: float = COLLAPSE_MARGIN) -> DesignSet:
    """The full-fidelity designs of a loaded search (one row per run), collapsed runs left out unless asked.

    `lr`: "auto" (best lr when `train.lr` takes several values, else equal settings), "best" or "equal".
    """
    ok = df["full_fidelity"].to_numpy(dtype=bool) & np.isfinite(df["score"].to_numpy(dtype=float, na_value=np.nan))
    runs = df[ok].assign(_seed=seed_labels(df[ok]) if ok.any() else [])
    threshold = collapse_threshold(reference, margin)
    design_cols, train_cols = design_columns(df), train_columns(df)
    configs: dict[str, dict] = {}
    for rec in runs.to_dict("records"):
        cfg = configs.setdefault(rec["design_key"], {"row": rec, "seeds": {}, "collapsed": 0})
        if rec["_seed"] in cfg["seeds"]:
            continue  # same design, same seed: one computation (a reused duplicate)
        if rec["score"] <= threshold and not keep_collapsed:
            cfg["collapsed"] += 1
            cfg["seeds"][rec["_seed"]] = None
            continue
        cfg["seeds"][rec["_seed"]] = float(rec["score"])
    built = [(_settings(c["row"], design_cols, train_cols), c) for c in configs.values()]
    lrs = {s.get(LR) for s, _ in built}
    mode = ("best" if len(lrs) > 1 else "equal") if lr == "auto" else lr
    out = DesignSet([], mode, collapsed_runs=sum(c["collapsed"] for c in configs.values()))
    by_design: dict[Settings, list[tuple[dict[str, str], dict]]] = defaultdict(list)
    for settings, cfg in built:
        key = tuple(sorted((k, v) for k, v in settings.items() if not (mode == "best" and k == LR)))
        by_design[key].append((settings, cfg))
    for key, options in by_design.items():
        design = _best(key, options, mode)
        if design is None:
            out.dropped.append(options[0][1]["row"]["design_key"])
        else:
            out.designs.append(design)
    return out


def _best(key: Settings, options: list[tuple[dict[str, str], dict]], mode: str) -> Design | None:
    """The option with the highest mean over its (non-collapsed) seeds; None when every run collapsed."""
    scored = []
    for settings, cfg in options:
        scores = np.array([s for s in cfg["seeds"].values() if s is not None], dtype=float)
        if scores.size:
            scored.append((float(scores.mean()), settings, cfg, scores))
    if not scored:
        return None
    _, settings, cfg, scores = max(scored, key=lambda t: t[0])
    kept = dict(key)
    return Design(key=cfg["row"]["design_key"], settings=kept, scores=scores, fraction=float(cfg["row"]["fraction"]),
                  lr=settings.get(LR) if mode == "best" else None,
                  collapsed=sum(cfg2["collapsed"] for _, cfg2 in options))


# ---- contexts ------------------------------------------------------------------------------------------------------

def tied_sites(designs: Sequence[Design]) -> list[tuple[str, ...]]:
    """The modified sites, those that always move together grouped (LoRA's `query` and `value` under a space's `tie`).

    Sites are tied when every design modifies both or neither, with identical settings: an axis can then only be
    changed at all of them at once, so they are one site for the comparisons.
    """
    groups: list[list[str]] = []
    for site in SITE_NAMES:
        if not any(d.site(site) is not None for d in designs):
            continue
        for g in groups:
            if all(d.site(g[0]) == d.site(site) for d in designs):
                g.append(site)
                break
        else:
            groups.append([site])
    return [tuple(g) for g in groups]


def axis_entries(design: Design, sites: tuple[str, ...], keys: Sequence[str],
                 value_keys: Sequence[str] | None = None) -> tuple[tuple[str, ...], Settings] | None:
    """(value, context) of `design` along the axis `keys` at `sites` (tied sites: several); None when unmodified.

    The context is every setting but `keys` at `sites`; the value reads `value_keys` (default: `keys`) at the first
    site, so a coarse comparison (composition, whatever its scale) can leave settings out of both.
    """
    if design.site(sites[0]) is None:
        return None
    names = {f"{site}.{k}" for site in sites for k in keys}
    value = tuple(design.settings.get(f"{sites[0]}.{k}", "") for k in (value_keys or keys))
    context = tuple(sorted((k, v) for k, v in design.settings.items() if k not in names))
    return value, context


def units_along(designs: Iterable[Design], sites: tuple[str, ...], keys: Sequence[str], a: set[tuple[str, ...]],
                b: set[tuple[str, ...]], tolerance: float = BUDGET_TOLERANCE, check_budget: bool = True,
                value_keys: Sequence[str] | None = None) -> list[tuple[list[Design], list[Design]]]:
    """Units (a-designs, b-designs) of contexts that hold a design with a value in `a` and one in `b`."""
    groups: dict[Settings, tuple[list[Design], list[Design]]] = {}
    for d in designs:
        entry = axis_entries(d, sites, keys, value_keys)
        if entry is None or (entry[0] not in a and entry[0] not in b):
            continue
        side = groups.setdefault(entry[1], ([], []))
        side[0 if entry[0] in a else 1].append(d)
    units = [groups[k] for k in sorted(groups) if groups[k][0] and groups[k][1]]
    if check_budget:
        units = [u for u in units if budgets_match([d.fraction for d in u[0] + u[1]], tolerance)]
    return units


def budgets_match(fractions: Sequence[float], tolerance: float = BUDGET_TOLERANCE) -> bool:
    lo, hi = min(fractions), max(fractions)
    return lo > 0 and hi <= lo * (1.0 + tolerance) * (1.0 + 1e-12)


def moves(design: Design, *, loose: bool) -> Iterator[tuple[tuple[str, ...], Settings]]:
    """Every way to read `design` as "a module moved to these sites" with the rest fixed: (sites, context).

    The moved sites must carry the same module settings (size aside, e.g. LoRA's tied query+value); the context is
    every other active site with its settings, the design-level and training settings, and (unless `loose`) the moved
    module's settings but its size, so that only the representation and the budget differ within a context.
    """
    active = design.active()
    outer = tuple(sorted((k, v) for k, v in design.settings.items() if k.split(".")[0] not in SITE_NAMES))
    for r in range(1, len(active) + 1):
        for moved in combinations(active, r):
            modules = [{k: v for k, v in design.site(s).items() if k != "size"} for s in moved]
            if any(m != modules[0] for m in modules[1:]):
                continue
            rest = tuple(sorted((k, v) for k, v in design.settings.items()
                                if k.split(".")[0] in active and k.split(".")[0] not in moved))
            own = () if loose else tuple(sorted(modules[0].items()))
            yield moved, (rest, outer, own)  # type: ignore[misc]


def module_mismatch(x: Design, x_sites: tuple[str, ...], y: Design, y_sites: tuple[str, ...]) -> int:
    """How many module settings (size aside) differ between the modules `x` and `y` carry at their moved sites."""
    mx = {k: v for k, v in (x.site(x_sites[0]) or {}).items() if k != "size"}
    my = {k: v for k, v in (y.site(y_sites[0]) or {}).items() if k != "size"}
    return sum(mx.get(k) != my.get(k) for k in set(mx) | set(my))


def matched_pairs(a_side: list[tuple[Design, tuple[str, ...]]], b_side: list[tuple[Design, tuple[str, ...]]],
                  tolerance: float = BUDGET_TOLERANCE) -> list[tuple[Design, Design]]:
    """One-to-one matching of (design, moved sites) within a budget `tolerance`: greedily, the pair whose modules
    differ in the fewest settings first, then the closest budgets (so a multi-head PA meets the single-head PA of its
    size, not whichever adapter comes first)."""
    cands = sorted((module_mismatch(x, xs, y, ys), abs(math.log(x.fraction / y.fraction)), i, j)
                   for i, (x, xs) in enumerate(a_side) for j, (y, ys) in enumerate(b_side)
                   if x.fraction > 0 and y.fraction > 0 and budgets_match([x.fraction, y.fraction], tolerance))
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for _, _, i, j in cands:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((a_side[i][0], b_side[j][0]))
    return out
