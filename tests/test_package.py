"""A real package: every module and data file is in the wheel's configuration, and the console scripts work.

The wheel itself is built, installed outside the checkout and run by `.ci/run` (the accounting command and a tiny
search); these checks catch a missing package or data pattern before that, in seconds.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

import pytest

from search.spacefile import load_space, shipped_spaces

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the wheel step of .ci/run checks the package anyway
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_list_misses_no_package() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("finetune", "search", "analysis")
             for p in (ROOT / top).rglob("__init__.py")}
    # data folders installed as packages: spaces/ as search.spaces, the bundled configs as finetune.model_configs
    assert listed == found | {"search.spaces", "finetune.model_configs"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"search.spaces": "spaces"}


def test_every_data_file_matches_a_package_data_pattern() -> None:
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    assert sorted(p.name for p in ROOT.glob("spaces/*.yaml")) == sorted(shipped_spaces()[n].name
                                                                        for n in shipped_spaces())
    assert data["search.spaces"] == ["*.yaml", "README.md"] and data["finetune"] == ["presets.yaml"]
    assert data["finetune.model_configs"] == ["*.json"]
    assert (ROOT / "finetune" / "presets.yaml").is_file() and len(list((ROOT / "finetune" / "model_configs")
                                                                         .glob("*.json"))) == 3


@pytest.mark.parametrize(("script", "target"), [("petl-search", "search.cli:main"),
                                                ("petl-report", "analysis.report:main"),
                                                ("petl-count", "finetune.count:main"),
                                                ("petl-trial", "finetune.trial:main"),
                                                ("petl-submit", "search.submit:main"),
                                                ("petl-export", "finetune.export:main")])
def test_console_scripts_are_the_module_commands(script: str, target: str) -> None:
    assert PYPROJECT["project"]["scripts"][script] == target
    module, func = target.split(":")
    assert callable(getattr(import_module(module), func))


def test_shipped_spaces_load_by_name_and_by_checkout_path() -> None:
    assert {"full", "paper", "smoke"} <= set(shipped_spaces())
    assert load_space("full").presets == load_space("spaces/full.yaml").presets
    with pytest.raises(ValueError, match=r"space file 'nope' does not exist and is not a shipped space; pass a YAML "
                                         r"file or one of \[.*'full'"):
        load_space("nope")


def test_the_accounting_command_reads_presets_and_bundled_configs(capsys: pytest.CaptureFixture[str]) -> None:
    from finetune.count import main

    assert main(["--preset", "mam", "--model", "facebook/bart-large", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["paper"] == 27_377_664  # seed_spec §3.4: MAM l=30 + r=512


def test_the_single_trial_command_dry_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from finetune.trial import main

    assert main(["--preset", "lora_attn", "--dataset", "toy-cls", "--set", "epochs=2", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {"task", "model", "max_steps", "eval_every", "rungs", "trials", "train", "cost"} <= set(plan)
    assert (plan["max_steps"], plan["eval_every"], plan["rungs"], plan["trials"]) == (2 * 64, 50, [], 1)
    assert plan["cost"]["basis"].startswith("measured") and not list(tmp_path.iterdir())
    assert main(["--preset", "mam", "--dataset", "en-ro", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "length    max_steps 50,000 (recipe)" in text and "nothing was trained (--dry-run)" in text
