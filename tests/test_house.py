"""House rules checked on the source tree with `ast` (issue 15): one file name per module, functions of at most 60
lines. A newcomer finds a concept by its file name; a second `trial.py` or `report.py` sends them to the wrong one."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("finetune", "search", "analysis", "benchmarks")
MAX_LINES = 60


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                  if p.name not in ("__init__.py", "conftest.py") and ".venv" not in p.parts)


def long_functions() -> dict[str, int]:
    out = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    out[f"{path.relative_to(ROOT).as_posix()}::{node.name}"] = lines
    return out


def test_no_two_modules_share_a_file_name() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in modules():
        by_name[path.name].append(path.relative_to(ROOT).as_posix())
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}


def test_no_function_is_longer_than_60_lines() -> None:
    assert long_functions() == {}
