"""Lazy package attributes (PEP 562): a package lists what it exports and from which submodule, and each submodule
loads on first use. `import finetune` and `import analysis` stay cheap, and the pure-numpy Pareto code never pulls in
torch, MLflow or matplotlib through its package."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """The module `__getattr__` of `package`: `exports` maps an attribute name to the submodule that defines it.

    Raises AttributeError, as Python does, for a name that is not exported."""
    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__


def lazy_exports(package: str, by_module: Mapping[str, Iterable[str]]) -> tuple[Callable[[str], object], list[str]]:
    """`(__getattr__, __all__)` of `package`, from the names each submodule exports (submodule -> names)."""
    exports = {name: module for module, names in by_module.items() for name in names}
    return lazy_getattr(package, exports), sorted(exports)
