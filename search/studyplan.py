"""What a study or a replicated search will train, decided before Ray is imported (`--dry-run` prints it).

`replicate_seeds` and `with_replicate` define a design's replicate seeds (search/replicates.py runs them);
`grid_configs` and `planned_trials` list a study's configs and count its trials (search/study.py runs them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from search import contract as C
from search.branches import iter_branches
from search.space import SearchSpace


def replicate_seeds(count: int, base: int) -> list[int]:
    """The training seeds of `count` replicates: `base`, `base + 1`, ..."""
    if count < 1:
        raise ValueError(f"--seeds must be >= 1 (replicates per design), got {count}")
    return [base + i for i in range(count)]


def with_replicate(config: Mapping[str, Any], *, seed: int, index: int, count: int) -> dict[str, Any]:
    """`config` trained under `seed`: `train.seed` set, and `replicate` = {key, seed, index, count} for tracking."""
    out = copy.deepcopy(dict(config))
    out["train"] = {**out.get("train", {}), "seed": int(seed)}
    out["replicate"] = {"key": C.design_key(C.config_params(out)), "seed": int(seed), "index": index, "count": count}
    return out


GRID_LIMIT = 100_000  # combinations; beyond this a grid is not a study a search should run


def lr_free_key(config: dict[str, Any]) -> str:
    """The design key without the learning rate: what `--seeds-at-best-lr` chooses an lr for."""
    return C.design_key({k: v for k, v in C.config_params(config).items() if k != f"{C.TRAIN_PREFIX}lr"})


def _ranges(space: SearchSpace) -> list[str]:
    dims = [d for site in space.sites.values() for d in site.values()] + list(space.train.values())
    dims.append(space.prompt_length)
    return [f"{d.name} = {{low: {d.low:g}, high: {d.high:g}}}" for d in dims if d.kind in ("int", "float")]


def grid_configs(space: SearchSpace, sample: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """Every combination of `space`'s listed values as a trial config (`sample` is the search's define-by-run,
    `DefineByRunSpace`). A space's presets are among them: loading a space checks that it can express each one.

    Raises ValueError naming the first numeric range (a grid needs listed values) or an oversized grid.
    """
    ranges = _ranges(space)
    if ranges:
        raise ValueError(f"--sampler grid trains every combination of listed values, but {ranges[0]} is a range; "
                         "list the values to study instead, e.g. lr: [1.0e-4, 3.0e-4, 1.0e-3]")
    configs = list(iter_branches(sample, limit=GRID_LIMIT + 1))
    if len(configs) > GRID_LIMIT:
        raise ValueError(f"--sampler grid: the space has more than {GRID_LIMIT:,} combinations; list fewer values")
    unique: dict[str, dict[str, Any]] = {}
    for c in configs:
        unique.setdefault(C.design_key(C.config_params(c)), c)
    return list(unique.values())


def planned_trials(configs: Sequence[dict[str, Any]], seeds: int, best_lr: bool) -> int:
    """Trials a study runs: every config under every seed, or (best lr) every config once plus the other seeds of
    each design at one lr (an upper bound: a design none of whose lrs finished gets no further seeds)."""
    if not best_lr:
        return len(configs) * seeds
    return len(configs) + len({lr_free_key(c) for c in configs}) * (seeds - 1)
