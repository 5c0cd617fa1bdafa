"""Which design choices matter, like for like: matched comparisons with a bootstrap CI and an honest verdict.

For each axis of the unified view at each site (insertion, composition and scale, functional form, budget) and for
the modified representation at matched budget, the designs that differ in that choice only are paired
(`analysis.matching`) and the mean score difference a - b is reported with a 95% bootstrap CI, the number of pairs
and a verdict: `a better` (CI above 0), `b better` (CI below 0), `tie` (CI holds 0), or `not testable: <why>`. The
CI resamples pairs and, inside each design, its replicate seeds (a two-level bootstrap), so replicate seeds are the
noise estimate when pairs are few. With fewer than `MIN_PAIRS` pairs and no replicate seeds there is no estimate of
the noise at all, and the row says so instead of guessing.

The paper's four conclusions (He et al., ICLR 2022, Sections 4.3-4.5 and Table 4) are named rows: parallel >
sequential (Table 3), FFN > attention at larger budgets (Table 12, Figure 5), scaled > plain addition (Table 5), and
multi-head forms winning at tiny budgets (Table 4).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from analysis.design import SITE_NAMES
from analysis.matching import (
    BUDGET_TOLERANCE,
    Design,
    DesignSet,
    designs_of,
    matched_pairs,
    moves,
    tied_sites,
    units_along,
)
from finetune.spans import timed
from finetune.vocabulary import Form
from search import contract as C

COLUMNS = ["axis", "site", "a", "b", "diff", "ci_low", "ci_high", "n_pairs", "verdict"]  # effects.csv, in this order
MIN_PAIRS = 5  # without replicate seeds, fewer pairs than this give no trustworthy CI (all 4 agreeing: p = 1/16)
N_BOOT = 2000
LARGE_BUDGET, TINY_BUDGET = 0.01, 0.002  # fractions of the backbone: "larger" (>= 1%) and "tiny" (<= 0.2%)
FFN_SITES, ATTENTION_SITES = ("ffn", "fc1", "fc2"), ("head_attn", "attn", "query", "value")
CONCLUSIONS = ("parallel > sequential", "FFN > attention at larger budgets", "scaled > plain addition",
               "multi-head wins at tiny budgets")
Unit = tuple[list[Design], list[Design]]


@dataclass
class Comparison:
    """One row before it is measured: what is compared, the units of evidence, and what to say when there are none."""

    axis: str
    site: str
    a: str
    b: str
    units: list[Unit]
    missing: str  # the reason when there is no unit
    conclusion: str = ""


def bootstrap(units: Sequence[Unit], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """(mean difference, 2.5th, 97.5th percentile) over units; each unit's difference is mean(a) - mean(b).

    Two levels: units are resampled with replacement, and inside each design its replicate seeds.
    """
    rng = np.random.default_rng(seed)
    per_unit = np.empty((len(units), n_boot))
    point = []
    for p, (side_a, side_b) in enumerate(units):
        per_unit[p] = _side(side_a, rng, n_boot) - _side(side_b, rng, n_boot)
        point.append(np.mean([d.scores.mean() for d in side_a]) - np.mean([d.scores.mean() for d in side_b]))
    pick = rng.integers(0, len(units), size=(n_boot, len(units)))
    boot = per_unit[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    return float(np.mean(point)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def _side(designs: list[Design], rng: np.random.Generator, n_boot: int) -> np.ndarray:
    means = [np.full(n_boot, d.scores[0]) if d.scores.size == 1 else
             d.scores[rng.integers(0, d.scores.size, size=(n_boot, d.scores.size))].mean(axis=1) for d in designs]
    return np.mean(means, axis=0)


def measure(c: Comparison) -> dict[str, object]:
    row: dict[str, object] = {"axis": c.axis, "site": c.site, "a": c.a, "b": c.b, "diff": np.nan, "ci_low": np.nan,
                              "ci_high": np.nan, "n_pairs": len(c.units), "conclusion": c.conclusion}
    if not c.units:
        return {**row, "verdict": f"not testable: {c.missing}"}
    seeded = all(d.scores.size >= 2 for u in c.units for d in u[0] + u[1])
    if len(c.units) < MIN_PAIRS and not seeded:
        point = float(np.mean([np.mean([d.scores.mean() for d in a]) - np.mean([d.scores.mean() for d in b])
                               for a, b in c.units]))
        return {**row, "diff": point, "verdict": f"not testable: {len(c.units)} pair(s) and no replicate seeds give "
                f"no estimate of the noise (need {MIN_PAIRS} pairs or 2+ seeds per design)"}
    diff, lo, hi = bootstrap(c.units)
    verdict = "a better" if lo > 0 else "b better" if hi < 0 else "tie"
    return {**row, "diff": diff, "ci_low": lo, "ci_high": hi, "verdict": verdict}


# ---- the axes ------------------------------------------------------------------------------------------------------

def _composition(v: tuple[str, ...]) -> str:
    comp, scale, learn = v
    return f"scaled s={scale}" + (" learned" if learn == "true" else "") if comp == "scaled" else comp


_COMP_ORDER = {"gated": 0, "scaled": 1, "add": 2}
_FORM_ORDER = {f.value: i for i, f in enumerate(Form)}
# axis -> (site keys that make up its value, how a value reads, sort key: the first of a pair is `a`)
AXES: dict[str, tuple[tuple[str, ...], Callable[[tuple[str, ...]], str], Callable[[tuple[str, ...]], tuple]]] = {
    "insertion": (("insertion",), lambda v: v[0], lambda v: (v[0] != "parallel", v[0])),
    "composition": (("composition", "scale", "learn_scale"), _composition,
                    lambda v: (_COMP_ORDER.get(v[0], 9), -float(v[1] or 1), v[2] == "true")),
    "form": (("form",), lambda v: v[0], lambda v: (_FORM_ORDER.get(v[0], 99), v[0])),
    "budget": (("size",), lambda v: v[0], lambda v: (-float(v[0]),)),
}


def _values(designs: list[Design], sites: tuple[str, ...], keys: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for d in designs:
        if (mod := d.site(sites[0])) is not None:
            counts[tuple(mod.get(k, "") for k in keys)] += 1
    return counts


def site_comparisons(designs: list[Design]) -> list[Comparison]:
    """Per site and axis, every pair of values the site takes: the axis's own rows."""
    out = []
    for sites in tied_sites(designs):
        site = "+".join(sites)
        for axis, (keys, read, order) in AXES.items():
            values = sorted(_values(designs, sites, keys), key=order)
            budget = "l" if sites[0] == "head_attn" else "r"
            for va, vb in combinations(values, 2):
                a, b = (read(va), read(vb)) if axis != "budget" else (f"{budget}={va[0]}", f"{budget}={vb[0]}")
                units = units_along(designs, sites, keys, {va}, {vb}, check_budget=axis != "budget")
                why = f"{a} and {b} at {site} never occur with every other setting equal" + (
                    "" if axis == "budget" else f" and budgets within {BUDGET_TOLERANCE:.0%}")
                out.append(Comparison(axis, site, a, b, units, why))
    return out


def pooled_comparison(designs: list[Design], axis: str, a: str, b: str, conclusion: str = "") -> Comparison:
    """a vs b on a coarse axis value (insertion, or composition without its scale), pooled over every site."""
    keys = ("insertion",) if axis == "insertion" else ("composition", "scale", "learn_scale")
    value = keys[:1]
    units: list[Unit] = []
    where: dict[str, set[str]] = {a: set(), b: set()}
    for sites in tied_sites(designs):
        units += units_along(designs, sites, keys, {(a,)}, {(b,)}, value_keys=value)
        for (v,), _ in _values(designs, sites, value).items():
            if v in where:
                where[v].add("+".join(sites))
    if not where[a] or not where[b]:
        # `designs` are the full-fidelity runs: an early-stopped or failed run of a choice does not count
        why = f"{(b if where[a] else a)} never occurs at full fidelity in this search" if where[a] or where[b] else \
            f"neither {a} nor {b} occurs at full fidelity in this search"
    elif not where[a] & where[b]:
        why = (f"{a} only at {', '.join(sorted(where[a]))} and {b} only at {', '.join(sorted(where[b]))}: never at "
               "the same site")
    else:
        why = f"{a} and {b} never occur at one site with every other setting equal"
    return Comparison(axis, "all", a, b, units, why, conclusion)


def representation_comparison(designs: list[Design], a_of: Callable[[tuple[str, ...]], bool],
                              b_of: Callable[[tuple[str, ...]], bool], *, loose: bool, band: tuple[float, float],
                              labels: tuple[str, str, str], conclusion: str = "") -> Comparison:
    """The module at sites `a` vs at sites `b`, everything else equal, budgets matched one-to-one."""
    by_ctx: dict[object, tuple[list, list]] = {}
    for d in designs:
        if not band[0] <= d.fraction <= band[1]:
            continue
        for moved, ctx in moves(d, loose=loose):
            if a_of(moved) or b_of(moved):
                by_ctx.setdefault(ctx, ([], []))[0 if a_of(moved) else 1].append((d, moved))
    units: list[Unit] = [([x], [y]) for ctx in sorted(by_ctx, key=repr)
                         for x, y in matched_pairs(*by_ctx[ctx])]
    site, a, b = labels
    why = (f"no design with the module at {a} has a counterpart at {b} with every other setting equal and a budget "
           f"within {BUDGET_TOLERANCE:.0%}" + (f" in {site}" if site != "all" else ""))
    return Comparison("representation", site, a, b, units, why, conclusion)


def _within(sites: tuple[str, ...], allowed: Sequence[str]) -> bool:
    return set(sites) <= set(allowed)


def conclusions(designs: list[Design], large: float = LARGE_BUDGET, tiny: float = TINY_BUDGET) -> list[Comparison]:
    """The paper's four conclusions as like-for-like comparisons, in the paper's order."""
    return [
        pooled_comparison(designs, "insertion", "parallel", "sequential", CONCLUSIONS[0]),
        representation_comparison(designs, lambda m: _within(m, FFN_SITES), lambda m: _within(m, ATTENTION_SITES),
                                  loose=True, band=(large, 1.0), labels=(f"fraction >= {large:.3g}", "FFN",
                                                                         "attention"), conclusion=CONCLUSIONS[1]),
        pooled_comparison(designs, "composition", "scaled", "add", CONCLUSIONS[2]),
        representation_comparison(designs, lambda m: m == ("head_attn",),
                                  lambda m: len(m) == 1 and m[0] in ("attn", "ffn"), loose=True,
                                  band=(0.0, tiny), labels=(f"fraction <= {tiny:.3g}", "head_attn (multi-head)",
                                                            "attn or ffn (single-head)"), conclusion=CONCLUSIONS[3]),
    ]


def strict_representations(designs: list[Design]) -> list[Comparison]:
    """Every pair of disjoint site sets some context holds, the moved module's settings equal but its size."""
    seen: dict[tuple[tuple[str, ...], tuple[str, ...]], None] = {}
    by_ctx: dict[object, set[tuple[str, ...]]] = defaultdict(set)
    for d in designs:
        for moved, ctx in moves(d, loose=False):
            by_ctx[ctx].add(moved)
    order = {s: i for i, s in enumerate(SITE_NAMES)}
    rank = lambda m: (not _within(m, FFN_SITES), m != ("head_attn",), [order[s] for s in m])  # noqa: E731
    for sets in by_ctx.values():
        for x, y in combinations(sorted(sets, key=rank), 2):
            if not set(x) & set(y):
                seen[(x, y)] = None
    return [representation_comparison(designs, lambda m, x=x: m == x, lambda m, y=y: m == y, loose=False,
                                      band=(0.0, 1.0), labels=("all", "+".join(x), "+".join(y)))
            for x, y in seen]


@timed("report.effects")
def like_for_like(df: pd.DataFrame, reference: C.Reference | None = None, *, lr: str = "auto",
                  large: float = LARGE_BUDGET, tiny: float = TINY_BUDGET) -> pd.DataFrame:
    """The effects table of a loaded search: `COLUMNS` plus `conclusion` (the paper's claim a row tests, or "").

    `reference` (default: the search's, `df.attrs["reference"]`) decides which runs collapsed; `lr` is "auto", "best"
    or "equal" (see `analysis.matching.designs_of`). The frame's attrs carry `lr_mode`, `collapsed_runs` and
    `dropped_designs`.
    """
    reference = reference if reference is not None else df.attrs.get("reference")
    chosen: DesignSet = designs_of(df, reference, lr=lr)
    rows = [measure(c) for c in conclusions(chosen.designs, large, tiny)]
    present = {v for sites in tied_sites(chosen.designs) for (v,) in _values(chosen.designs, sites, ("composition",))}
    rows += [measure(pooled_comparison(chosen.designs, "composition", x, y))
             for x, y in (("gated", "scaled"), ("gated", "add")) if {x, y} <= present]
    rows += [measure(c) for c in site_comparisons(chosen.designs) + strict_representations(chosen.designs)]
    out = pd.DataFrame(rows, columns=COLUMNS + ["conclusion"])
    out.attrs.update(lr_mode=chosen.lr_mode, collapsed_runs=chosen.collapsed_runs,
                     dropped_designs=len(chosen.dropped), designs=len(chosen.designs))
    return out
