"""A newcomer's path through the README (issue 16): every command the README shows is one its command accepts (flags
that exist, a space that loads), and the next steps it documents are there: local data, an offline cluster, the
MLflow UI and the export. The steps themselves are tested where they live (offline checks and bad input:
test_bad_input_cli.py; names, metric and plots: test_what_users_read.py; MLflow statuses through the REST API:
test_analysis_server.py; help: test_help.py; export: test_export.py)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# The console scripts and module commands of a checkout (pyproject's [project.scripts]; tests/test_package.py pins
# them) -> the module whose build_parser() parses them.
PARSERS = {"petl-search": "search.cli", "petl-report": "analysis.report", "petl-count": "finetune.count",
           "petl-trial": "finetune.trial", "petl-submit": "search.submit", "petl-export": "finetune.export",
           "search.reevaluate": "search.reevaluate"}
NOT_OURS = ("python3 -m venv", ". .venv/bin/activate", "pip install", "mlflow ui", "python -m pytest")  # not ours


def readme_commands() -> tuple[list[list[str]], list[str]]:
    """Every command of our tools in the README's bash blocks, as argv lists (comments, `VAR=value` prefixes, `&&`
    chains and the `...` that stands for "more flags" removed), and the lines that are neither ours nor known."""
    commands, unknown = [], []
    for block in re.findall(r"^\s*```bash\n(.*?)^\s*```", README, flags=re.S | re.M):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = [w for w in shlex.split(part, comments=True) if w != "..."]
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]
                if words[:3] == ["python", "-m", "search.reevaluate"]:
                    words = words[2:]
                if words and words[0] in PARSERS:
                    commands.append(words)
                elif words and not " ".join(words).startswith(NOT_OURS):
                    unknown.append(" ".join(words))
    return commands, unknown


COMMANDS = readme_commands()[0]


def test_the_readme_shows_every_command() -> None:
    assert readme_commands()[1] == []  # a command this test does not check: add it to PARSERS or NOT_OURS
    assert {c[0] for c in COMMANDS} == set(PARSERS)
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_each_readme_command_is_accepted_by_its_command(argv: list[str]) -> None:
    import importlib

    from search.spacefile import load_space

    module = importlib.import_module(PARSERS[argv[0]])
    args = argv[1:]
    if argv[0] == "petl-submit":  # its own flags, then `--` and the search's
        own, search = module.split_argv(args)
        module.build_parser().parse_args(own)
        args, module = search, importlib.import_module("search.cli")
    elif argv[0] == "search.reevaluate":  # its own flags, and the search's beside them
        args = module.build_parser().parse_known_args(args)[1]
        module = importlib.import_module("search.cli")
    parsed = _parse(module.build_parser(), args)
    if getattr(parsed, "space", None):
        load_space(str(ROOT / parsed.space) if "/" in parsed.space else parsed.space)  # shipped name or checkout path


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(args)
    except SystemExit as exc:  # argparse's way of refusing: name the command that drifted
        raise AssertionError(f"{parser.prog} refuses the README's {' '.join(args)!r}") from exc


@pytest.mark.parametrize("step, words", [
    ("local data", ["**Your own data**", "--data-dir DIR", "file names and columns each task reads"]),
    ("an offline cluster", ["**An offline cluster**", "HF_HUB_OFFLINE=1", "--model DIR", "save_pretrained",
                            "one line naming everything missing"]),
    ("the MLflow UI", ["mlflow ui --backend-store-uri sqlite:///mlflow.db", "http://127.0.0.1:5000", "**Runs**",
                       "Artifacts → analysis/", "KILLED", "`interrupted`"]),
    ("the export", ["petl-export", "PeftModel.from_pretrained", "--format petl", "load_trained"]),
])
def test_the_readme_documents_the_next_steps(step: str, words: list[str]) -> None:
    text = " ".join(README.split())
    for w in words:
        assert " ".join(w.split()) in text, (step, w)
