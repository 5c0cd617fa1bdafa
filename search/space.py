"""Design spaces in YAML (`spaces/*.yaml`, schema in `spaces/README.md`) compiled into one Optuna define-by-run.

A space is a file or a shipped space's name (`full`, `paper`, `smoke`; `shipped_spaces`).

The YAML is the only place a space is written. Loading checks every key, type and range, and walks every
categorical branch of the compiled space once, so an impossible combination is an error before Ray starts, and
every point the search can sample is a valid `DesignPoint`.

Conditional parameters: a site's options exist only when its form is not `none`; `scale` and `learn_scale` only when
its composition is `scaled`. A categorical option whose choices the design rules narrow given the choices already
made (e.g. `gated` exists only for `form: softmax`) is sampled under a branch name such as
`head_attn.composition|form=relu`, because Optuna needs a fixed choice list per parameter name.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from search.yamlsafe import load_yaml, short
from trainables.designpoint import DesignPoint
from trainables.presets import get_preset
from trainables.runconfig import setting_kinds, setting_type
from trainables.tasks import get_task
from trainables.trainconfig import check_setting, coerce
from trainables.vocabulary import NONE, SITES, Representation

SITE_OPTIONS = ("form", "composition", "scale", "learn_scale", "insertion", "layernorm", "init", "size", "dropout",
                "prefix_mlp")  # sampling order: a choice may depend only on those before it
SCALED_ONLY = ("scale", "learn_scale")
TOP_KEYS = {"description", "task", "model", "sites", "tie", "prompt_length", "backbone", "train", "presets"}
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
            raise ValueError(f"site {rep.value}: form is only none, so its options {sorted(set(self.dims) - {'form'})} "
                             "are never used; list a form or remove the site")
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
            raise ValueError(f"{dim.name}: the range [{dim.low:g}, {dim.high:g}] must be valid up to both ends, but its "
                             f"{end} end is not (with {chosen}): {errors[values[0 if end == 'low' else 1]]}")
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


def shipped_spaces() -> dict[str, Path]:
    """The spaces this package ships, by name: the `search.spaces` package data once installed, `spaces/` in a
    checkout (where `spaces/__init__.py` makes it importable too)."""
    try:
        folder = Path(str(files("search.spaces")))
    except ModuleNotFoundError:  # a checkout run without installing: the folder beside this package
        folder = Path(__file__).resolve().parents[1] / "spaces"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def space_file(name_or_path: str | Path) -> Path:
    """A space given as a path (`spaces/full.yaml`, `my.yaml`) or as a shipped space's name (`full`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_spaces()
    key = path.stem if path.suffix in (".yaml", ".yml") and str(path.parent) in (".", "spaces") else str(path)
    if key in shipped:
        return shipped[key]
    raise ValueError(f"space file {str(name_or_path)!r} does not exist and is not a shipped space; pass a YAML file "
                     f"or one of {sorted(shipped)}")


def load_space(path: str | Path) -> SearchSpace:
    """Load, check and compile a space from a YAML file or a shipped space's name (see `space_file`).

    Raises ValueError with one line "<file>: <key>: <rule>, got <value>; <fix>", quoting at most a few hundred
    characters of any value (`search.yamlsafe`)."""
    path = space_file(path)
    raw, text = load_yaml(path)
    try:
        space = parse_space(raw, str(path), text)
        validate(space)  # every categorical branch must give a valid design; presets must fit
    except ValueError as err:
        message = " ".join(str(err).split())
        raise ValueError(f"{path}: {message[:2000]}{'...' if len(message) > 2000 else ''}") from None
    return space


def parse_space(raw: Any, origin: str = "<space>", text: str = "") -> SearchSpace:
    if not isinstance(raw, Mapping):
        raise ValueError(f"a space is a mapping with keys {sorted(TOP_KEYS)}, got {type(raw).__name__}")
    unknown = sorted(map(str, set(raw) - TOP_KEYS))
    if unknown:
        raise ValueError(f"unknown space key(s) {short(unknown)}; expected some of {sorted(TOP_KEYS)}")
    _check_types(raw)
    sites: dict[Representation, dict[str, Dim]] = {}
    for name, opts in (raw.get("sites") or {}).items():
        rep = Representation.parse(name, "a site name under sites")
        if not isinstance(opts, Mapping) or "form" not in opts:
            raise ValueError(f"site {name}: give a mapping of options with at least 'form', got {short(opts)}")
        bad = sorted(map(str, set(opts) - set(SITE_OPTIONS)))
        if bad:
            raise ValueError(f"site {name}: unknown option(s) {short(bad)}; expected some of {sorted(SITE_OPTIONS)}")
        sites[rep] = {o: _dim(f"{name}.{o}", v, _site_kind(o)) for o, v in opts.items()}
        if "size" not in opts and set(sites[rep]["form"].values) != {NONE}:
            raise ValueError(f"site {name}: a budget 'size' (l or r) is required")
        _check_scale(sites[rep].get("scale"))
    tie = _ties(raw.get("tie") or [], sites)
    train = _train(raw.get("train") or {})
    presets = tuple(raw.get("presets") or ())
    for name in presets:
        get_preset(name)
    backbone = raw.get("backbone", "frozen")
    if backbone not in ("frozen", "bias"):
        raise ValueError(f"backbone must be frozen or bias in a space (full fine-tuning is the 'full' preset), "
                         f"got {short(backbone)}")
    if not sites and not presets:
        raise ValueError("the space is empty: list sites to search, or presets to evaluate")
    prompt_length = _dim("prompt_length", raw.get("prompt_length", 0), "int")
    low = prompt_length.low if prompt_length.kind == "int" else min(prompt_length.values)
    if low < 0:
        raise ValueError(f"prompt_length must be >= 0 (0: no prompt), got {short(raw.get('prompt_length'))}")
    return SearchSpace(
        path=origin, text=text, description=str(raw.get("description") or ""), task=raw.get("task"),
        model=raw.get("model"), sites=sites, tie=tie, prompt_length=prompt_length, backbone=backbone, train=train,
        presets=presets,
    )


def _check_types(raw: Mapping) -> None:
    """The top-level keys' types, before anything reads them (a list where a mapping belongs is one line too)."""
    for key, want in (("sites", Mapping), ("train", Mapping), ("tie", list), ("presets", list)):
        value = raw.get(key)
        if value is not None and not isinstance(value, want):
            kind = "mapping" if want is Mapping else "list"
            raise ValueError(f"{key} must be a {kind}, got {type(value).__name__} {short(value)}; see spaces/README.md")
    for name in raw.get("presets") or ():
        if not isinstance(name, str):
            raise ValueError(f"presets must be a list of preset names, got {short(name)}; see petl-count "
                             "--list-presets")
    for key in ("task", "model", "description", "backbone"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {type(value).__name__} {short(value)}")
    if raw.get("task") is not None:
        get_task(raw["task"])


def _check_scale(dim: Dim | None) -> None:
    """s multiplies Δh: a range through 0 would sample s = 0, a design that changes nothing."""
    if dim is not None and dim.kind == "float" and dim.low < 0 < dim.high:
        raise ValueError(f"space key {dim.name}: the range [{dim.low:g}, {dim.high:g}] holds 0, which turns the "
                         "module off; keep both ends on one side of 0 (e.g. low: 0.25, high: 8, log: true)")


def _ties(groups: list, sites: dict[Representation, dict[str, Dim]]) -> dict[Representation, Representation]:
    """follower → leader. A follower takes its leader's draw, so its own options must equal the leader's (options
    that differ would be silently ignored)."""
    tie: dict[Representation, Representation] = {}
    seen: set[Representation] = set()
    for group in groups:
        if not isinstance(group, list):
            raise ValueError(f"tie is a list of groups of sites, e.g. [[query, value]], got the group {short(group)}")
        reps = sorted({Representation.parse(g, "a site in tie") for g in group}, key=SITES.index)  # leader: sampled first
        missing = [r.value for r in reps if r not in sites]
        if len(reps) < 2 or missing:
            raise ValueError(f"tie groups need >= 2 sites listed under sites, got {short(group)} (missing {missing})")
        if seen & set(reps):
            raise ValueError(f"tie: site(s) {sorted(r.value for r in seen & set(reps))} are in two groups; merge the "
                             "groups into one")
        seen.update(reps)
        leader = reps[0]
        for rep in reps[1:]:
            differ = sorted(o for o in set(sites[rep]) | set(sites[leader])
                            if _dim_key(sites[rep].get(o)) != _dim_key(sites[leader].get(o)))
            if differ:
                raise ValueError(f"site {rep.value} is tied to {leader.value} and takes its draw, so its options must "
                                 f"equal {leader.value}'s, but {differ} differ and would be ignored; make them equal "
                                 "or remove the tie")
            tie[rep] = leader
    return tie


def _dim_key(dim: Dim | None) -> Any:
    return None if dim is None else (dim.kind, dim.values, dim.low, dim.high, dim.log)


def _train(raw: Mapping) -> dict[str, Dim]:
    """The space's `train:` values, each checked at every value it can take by the run configuration's own rule
    (`trainables.trainconfig.RULES`), so a bad high end is named here, with its key, not in every trial."""
    kinds = setting_kinds()  # the run configuration's settings (trainables.runconfig), epochs and eval_epochs included
    train: dict[str, Dim] = {}
    for key, value in raw.items():
        if key not in kinds:
            raise ValueError(f"train: unknown or reserved setting {short(key)}; expected some of {sorted(kinds)}")
        dim = train[key] = _dim(f"train.{key}", value, *kinds[key])
        values = (dim.low, dim.high) if dim.kind in ("int", "float") else dim.values
        for v in values:
            try:
                typed = coerce(setting_type(kinds[key]), v, key)
                check_setting(key, typed)
                if key in ("epochs", "eval_epochs") and not typed > 0:
                    raise ValueError(f"{key} must be > 0, got {typed!r}")
            except ValueError as err:
                raise ValueError(f"train.{key}: {err}") from None
    if "seed" in train and train["seed"].kind != "fixed":
        raise ValueError(f"train.seed is a replicate seed, never a searched value (the search would select lucky "
                         f"seeds), got {short(raw['seed'])}; fix it (seed: 42) and pass --seeds N to train each "
                         "design under N seeds")
    return train


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


__all__ = ["BranchWalker", "Dim", "SearchSpace", "load_space", "parse_space", "preset_params",
           "validate"]
