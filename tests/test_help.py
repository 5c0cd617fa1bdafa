"""Help that answers a user's questions (issue 16, item 8): defaults, the --set keys with their defaults, what
--data-dir must hold per task, MiniLM named, --storage's real rule; the commands' --help imports no torch;
petl-count takes the flags and the 'minilm' alias the other commands take."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.count import main as count_main
from finetune.runconfig import setting_kinds
from finetune.tasks import data_help, get_task, task_names
from search.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_every_default_is_shown() -> None:
    parser = build_parser()
    for action in parser._actions:  # argparse exposes no public list of a parser's actions
        if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
            assert "default" in parser.formatter_class("x")._get_help_string(action), action.option_strings
    text = parser.format_help()
    assert "(default: tpe)" in text and "(default: petl_runs)" in text and "(default: no budget)" in text


def test_set_keys_are_listed_with_their_defaults_from_the_run_configuration() -> None:
    text = build_parser().format_help()
    for key in setting_kinds():
        assert f"\n  {key} (" in text, key
    assert ("\n  lr (float): by task: en-ro 5e-05, xsum 5e-05, mnli 0.0001, sst2 0.0001, toy-cls 0.001, "
            "toy-s2s 0.003; must be > 0\n") in text
    assert "\n  schedule (str): polynomial; must be one of ['polynomial', 'linear', 'cosine', 'constant']\n" in text
    assert "\n  epochs (float): by task: en-ro -, xsum -, mnli 10, sst2 10, toy-cls -, toy-s2s -\n" in text


def test_data_dir_contents_per_task_come_from_the_task() -> None:
    text = build_parser().format_help()
    for name in task_names():
        if not get_task(name).generated:
            assert f"\n  {name}: {data_help(get_task(name))}\n" in text
    assert data_help(get_task("sst2")) == (
        "train.tsv (or train.jsonl) and dev.tsv (or validation.jsonl, validation.tsv): .jsonl one JSON object per "
        "line, .tsv a header row then tab-separated rows, UTF-8; columns sentence, label; label is an id or a name: "
        "0=negative, 1=positive")
    assert data_help(get_task("en-ro")).endswith("columns en, ro, or rows {'translation': {...}}")


def test_the_description_names_minilm_and_storage_promises_no_uri() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "with the pretrained MiniLM (all-MiniLM-L6-v2" in text and "tiny model" not in text
    assert "folder or URI" not in text and "other URIs such as s3:// are refused" in text


HEAVY = ("torch", "transformers", "ray", "mlflow", "pandas", "matplotlib", "optuna", "plotly")


def loaded_after(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after running `code`."""
    probe = f"{code}; import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().replace("'", '"'))


@pytest.mark.parametrize("module", ["search.cli", "finetune.count", "finetune.trial", "search.reevaluate",
                                    "analysis.report"])
def test_help_imports_nothing_heavy(module: str) -> None:
    """What made `--help` take seconds: torch and transformers, or pandas, MLflow, Optuna and matplotlib (the
    report's), imported before the arguments were parsed."""
    assert loaded_after(f"from {module} import build_parser; build_parser().format_help()") == []


def test_help_of_the_report_command_runs_without_its_heavy_imports() -> None:
    """`python -m analysis.report --help` as a user runs it: the help, and none of pandas/MLflow/Optuna/matplotlib."""
    code = ("import runpy, sys; sys.argv = ['analysis.report', '--help']\n"
            "try:\n    runpy.run_module('analysis.report', run_name='__main__')\nexcept SystemExit:\n    pass")
    out = subprocess.run([sys.executable, "-c", f"{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "usage: python -m analysis.report" in out and out.strip().splitlines()[-1] == "[]"


def test_the_pareto_code_is_pure_numpy() -> None:
    """`analysis.pareto` (the scheduler's hypervolume) imports no plotting, tracking or table library (issue 15.4)."""
    assert loaded_after("import analysis.pareto") == []
    assert loaded_after("from analysis import hypervolume, pareto_mask") == []


def test_the_report_functions_are_still_importable_from_the_command_module() -> None:
    """The search, the tests and the benchmarks import the report's functions from `analysis.report`."""
    import analysis
    import analysis.publish
    import analysis.report
    from analysis.report import update_search_report, write_report

    assert (write_report, update_search_report) == (analysis.publish.write_report,
                                                     analysis.publish.update_search_report)
    assert analysis.write_report is write_report
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        analysis.report.nothing  # noqa: B018 - the attribute access is the test


def test_count_takes_the_minilm_alias_and_the_dataset_flag(capsys: pytest.CaptureFixture[str]) -> None:
    # LoRA r=16 on W_q and W_v of MiniLM-L6 (d=384): 6 layers x 2 matrices x 16 x (384 + 384) = 147,456; the
    # classification head: pooler 384x384 + 384, classifier 384x2 + 2 = 148,610
    for args in (["--model", "minilm"], ["--model", "minilm", "--dataset", "sst2"],
                 ["--model", "minilm", "--task", "classification"], ["--model", "minilm", "--kind", "classification"]):
        assert count_main(["--preset", "lora_attn", "--json", *args]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["stored"], out["task_head"], out["backbone"]) == (147_456, 148_610, 22_565_376), args
    # the task's checkpoint (mBART-cc25, bundled): 12+12 layers of d=1024 like BART-large, so MAM stores what
    # test_counting pins for BART-large
    assert count_main(["--preset", "mam", "--dataset", "en-ro", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stored"] == 27_414_528
    assert count_main(["--preset", "mam", "--dataset", "en-ro", "--kind", "classification"]) == 2
    assert "--kind classification contradicts --dataset en-ro (seq2seq); drop --kind" in capsys.readouterr().err
