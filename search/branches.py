"""Walking a compiled space's categorical branches: enumerate them (`iter_branches`, the grid of a study), check
that each gives a valid design (`SiteCheck`, `validate`), and replay a preset through the sampler to find the point
Optuna enqueues for it (`preset_params`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from finetune.presets import get_preset
from finetune.vocabulary import NONE, SITES, Representation
from search.space import (
    SCALED_ONLY,
    SITE_OPTIONS,
    Dim,
    SearchSpace,
    _error,
    _pair_ok,
)
from search.yamlsafe import short


class BranchWalker:
    """Answers suggest_* calls from a fixed path of choice indices, to enumerate every categorical branch."""

    def __init__(self, path: list[int]) -> None:
        self.path, self.widths, self.k = path, [], 0

    def suggest_categorical(self, name: str, choices: list) -> Any:
        i = self.path[self.k] if self.k < len(self.path) else 0
        self.widths.append(len(choices))
        self.k += 1
        return choices[i]

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return low


def iter_branches(sample: Callable[[Any], Any], limit: int = 100_000) -> Iterator[Any]:
    """`sample(walker)` once per categorical branch (numeric options at their low end), at most `limit` times."""
    path: list[int] = []
    for count in itertools.count(1):
        w = BranchWalker(path)
        yield sample(w)
        path = path[: len(w.widths)] + [0] * max(0, len(w.widths) - len(path))
        while path and path[-1] + 1 >= w.widths[len(path) - 1]:
            path.pop()
        if not path or count >= limit:
            return
        path[-1] += 1


def walk_branches(sample: Callable[[Any], Any], limit: int = 100_000) -> int:
    """Run `sample` once per categorical branch (numeric options at their low end); returns the branch count."""
    return sum(1 for _ in iter_branches(sample, limit))


def validate(space: SearchSpace) -> dict[str, int]:
    """Check every site's branches (sites are independent) and replay the presets; returns branches per site (the
    categorical paths `sample_site` can take: a range counts once)."""
    branches = {}
    free = [r for r in SITES if r in space.sites and r not in space.tie]
    for rep in free:
        must = [False, True] if rep == free[-1] and space.backbone == "frozen" else [False]
        for m in must:
            branches[rep.value] = SiteCheck(rep, space.sites[rep]).run(m)
    for name in space.presets if space.sites else ():
        preset_params(space, name)
    return branches


class SiteCheck:
    """Every path `sample_site` can take through one site's options, with three promises the schema makes:
    every option has a valid value on every path, a range is valid at both its ends (its low end alone is what
    sampling narrows by), and every listed value and option is used on some path (none is silently dropped).

    Paths are walked once per equivalence class: two values of an option lead to identical sub-trees when every
    later value is compatible with both or neither. The design rules (`DesignPoint`) relate at most two options at
    a time, so this is exact, and a site with 102 listed sizes costs one walk, not 102 (the full product is what
    took minutes).
    """

    def __init__(self, rep: Representation, dims: dict[str, Dim]) -> None:
        self.rep, self.dims = rep, dims
        self.order = [o for o in SITE_OPTIONS[1:] if o in dims]
        self.ever: dict[str, set] = {o: set() for o in dims}
        self.why: dict[str, dict[Any, str]] = {o: {} for o in dims}

    def run(self, must_modify: bool) -> int:
        rep, form_dim = self.rep, self.dims["form"]
        forms = tuple(f for f in form_dim.values if not (must_modify and f == NONE))
        if not forms:
            raise ValueError(f"site {rep.value}: the design must modify something, but form can only be none here")
        if set(forms) == {NONE} and len(self.dims) > 1:
            unused = sorted(set(self.dims) - {"form"})
            raise ValueError(f"site {rep.value}: form is only none, so its options {unused} are never used; list a "
                             "form or remove the site")
        count = 0
        for form in forms:
            if form != NONE and (err := _error(rep, {"form": form})) is not None:
                raise ValueError(f"{rep.value}.form={form!r} is not allowed: {err}")
            count += 1 if form == NONE else self._walk(0, {"form": form})
        self.ever["form"].update(form_dim.values)  # each form was checked above
        self._unused()
        return count

    def _candidates(self, opt: str) -> tuple:
        dim = self.dims[opt]
        return (dim.low, dim.high) if dim.kind in ("int", "float") else dim.values

    def _walk(self, k: int, chosen: dict[str, Any]) -> int:
        """Paths below `chosen` (options order[k:] still to draw)."""
        if k == len(self.order):
            return 1
        opt = self.order[k]
        dim = self.dims[opt]
        if opt in SCALED_ONLY and chosen.get("composition") != "scaled":
            return self._walk(k + 1, chosen)
        values = self._candidates(opt)
        errors = {v: _error(self.rep, {**chosen, opt: v}) for v in values}
        valid = [v for v in values if errors[v] is None]
        for v, err in errors.items():
            if err is not None:
                self.why[opt].setdefault(v, err)
        if dim.kind in ("int", "float") and len(valid) < len(values):
            end = "low" if errors[dim.low] is not None else "high"
            raise ValueError(f"{dim.name}: the range [{dim.low:g}, {dim.high:g}] must be valid up to both ends, "
                             f"but its {end} end is not (with {chosen}): {errors[values[0 if end == 'low' else 1]]}")
        if not valid:  # the design rule that excludes them, in its own words
            raise ValueError(f"{dim.name}: no listed value fits {chosen}: {errors[values[0]]}")
        self.ever[opt].update(valid)
        classes: dict[tuple, list] = {}
        for v in valid:
            classes.setdefault(self._signature(k, chosen, opt, v), []).append(v)
        if dim.kind != "choice":  # a range or a fixed value is one path
            return max(self._walk(k + 1, {**chosen, opt: vs[0]}) for vs in classes.values())
        return sum(len(vs) * self._walk(k + 1, {**chosen, opt: vs[0]}) for vs in classes.values())

    def _signature(self, k: int, chosen: dict[str, Any], opt: str, v: Any) -> tuple:
        """Which later values `v` is compatible with. Rules relate two options at a time, so the pair with the form
        decides (cached: a site with 102 sizes asks the same few questions on every path)."""
        later = ((o, w) for o in self.order[k + 1:] for w in self._candidates(o))
        form = chosen["form"]
        return (opt == "composition" and v == "scaled",
                *(_pair_ok(self.rep, form, opt, v, o, w) for o, w in later))

    def _unused(self) -> None:
        for opt, dim in self.dims.items():
            if opt in SCALED_ONLY and not self.ever[opt]:
                raise ValueError(f"{dim.name} is read only by composition=scaled, which site {self.rep.value} never "
                                 "draws; remove it or list scaled under composition")
            if dim.kind != "choice":
                continue
            dropped = [v for v in dim.values if v not in self.ever[opt]]
            if dropped:
                reason = self.why[opt].get(dropped[0], "")
                raise ValueError(f"{dim.name}: listed value(s) {short(dropped)} can never be drawn ({reason}); "
                                 "remove them")


class _Replay:
    """Answers suggest_* calls from a preset's values; what it was asked becomes the point Optuna enqueues."""

    def __init__(self, values: dict[str, Any], preset: str) -> None:
        self.values, self.preset, self.asked = values, preset, {}

    def _get(self, name: str) -> Any:
        key = name.split("|")[0]
        if key not in self.values:
            raise ValueError(f"preset {self.preset!r} does not set {key}, which this space samples")
        return self.values[key]

    def suggest_categorical(self, name: str, choices: list) -> Any:
        v = self._get(name)
        if v not in choices:
            raise ValueError(f"preset {self.preset!r} has {name.split('|')[0]}={v!r}, outside this space's choices "
                             f"{choices}; add the value to the space or drop the preset")
        self.asked[name] = v
        return v

    def _suggest_number(self, name: str, low: float, high: float) -> Any:
        v = self._get(name)
        if not low <= v <= high:
            raise ValueError(f"preset {self.preset!r} has {name}={v!r}, outside this space's range [{low}, {high}]; "
                             "widen the range or drop the preset")
        self.asked[name] = v
        return v

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        return int(self._suggest_number(name, low, high))

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return float(self._suggest_number(name, low, high))


def preset_params(space: SearchSpace, name: str) -> dict[str, Any]:
    """The Optuna parameters that make `space.sample` reproduce preset `name` exactly (for warm-starting)."""
    design = get_preset(name).design
    if space.preset_only:
        return {"preset": name}
    params = design.to_params()
    params["prompt_length"] = params.pop("prompt.length")
    outside = [r.value for r in design.sites() if r not in space.sites]
    if outside:
        raise ValueError(f"preset {name!r} modifies {outside}, which this space does not list under sites")
    replay = _Replay({k: v for k, v in params.items()}, name)
    sampled, _, _ = space.sample(_TrainDefaults(replay, space))
    if sampled != design:
        diff = sorted(k for k, v in sampled.to_params().items() if design.to_params().get(k) != v)
        raise ValueError(f"preset {name!r} differs from what this space can express at {diff} (fixed values in the "
                         "space must equal the preset's)")
    return replay.asked


class _TrainDefaults:
    """Lets a replay skip the training dims (Optuna samples the ones a warm-start point leaves out)."""

    def __init__(self, inner: _Replay, space: SearchSpace) -> None:
        self.inner, self.train = inner, {f"train.{k}" for k in space.train}

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self.inner, attr)

        def call(name: str, *args: Any, **kw: Any) -> Any:
            if name in self.train:
                return args[0][0] if attr == "suggest_categorical" else args[0]
            return method(name, *args, **kw)

        return call


__all__ = ["BranchWalker", "SiteCheck", "iter_branches", "preset_params", "validate", "walk_branches"]
