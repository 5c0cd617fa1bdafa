"""Reading a space from YAML (`spaces/*.yaml`, schema in `spaces/README.md`): a file or a shipped space's name
(`full`, `paper`, `smoke`; `shipped_spaces`). Every key, type, range and tie is checked, then every branch is walked
(`search.branches.validate`), so an impossible combination is an error before Ray starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from finetune.presets import get_preset
from finetune.runconfig import setting_kinds, setting_type
from finetune.tasks import get_task
from finetune.trainconfig import check_setting, coerce
from finetune.vocabulary import NONE, SITES, Representation
from search.branches import validate
from search.space import (
    SITE_OPTIONS,
    Dim,
    SearchSpace,
    _dim,
    _site_kind,
)
from search.yamlsafe import load_yaml, short

TOP_KEYS = {"description", "task", "model", "sites", "tie", "prompt_length", "backbone", "train", "presets"}


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
            raise ValueError(f"{key} must be a {kind}, got {type(value).__name__} {short(value)}; "
                             "see spaces/README.md")
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
        # the leader is the site sampled first
        reps = sorted({Representation.parse(g, "a site in tie") for g in group}, key=SITES.index)
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
    (`finetune.trainconfig.RULES`), so a bad high end is named here, with its key, not in every trial."""
    kinds = setting_kinds()  # the run configuration's settings (finetune.runconfig), epochs and eval_epochs included
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


__all__ = ["TOP_KEYS", "load_space", "parse_space", "shipped_spaces", "space_file"]
