"""Search parts without a Ray cluster: the truthful searcher, budget bands, outcomes, input errors before Ray."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main as search_main
from search.scheduler import BudgetBandedASHA, ParetoASHA, band_of, make_scheduler
from search.searcher import FullFidelityOptunaSearch, optuna_study, optuna_trials, outcome, told_trials
from search.store import check_tracking, close_interrupted


def space(trial) -> dict:
    trial.suggest_categorical("ffn.size", [4, 8, 16])
    return {"fraction": 0.01}


def test_the_ray_optuna_adapter_reaches_the_study_and_its_trials() -> None:
    """Ray's OptunaSearch keeps these private; if a Ray release renames them this fails before any search does."""
    searcher = FullFidelityOptunaSearch(space=space, max_steps=30, sampler=optuna.samplers.RandomSampler(seed=0))
    searcher.suggest("a")
    study, live = optuna_study(searcher), optuna_trials(searcher)
    assert isinstance(study, optuna.Study) and list(live) == ["a"] and isinstance(live["a"], optuna.Trial)
    assert live["a"].number == study.trials[0].number and told_trials(searcher) == set()
    searcher.on_trial_complete("a", {"step": 30, "score": 0.5, "selected_score": 0.5, "fraction": 0.01})
    assert "a" in told_trials(searcher) and study.trials[0].state == TrialState.COMPLETE
    searcher.__dict__.pop("_ot_trials")  # what a renamed attribute looks like to the adapter
    with pytest.raises(RuntimeError, match=r"^ray\.tune\.search\.optuna\.OptunaSearch \(ray [\d.]+\w*\) has no "
                                           r"attribute '_ot_trials', which search/searcher.py's adapter reads"):
        optuna_trials(searcher)


def test_only_full_fidelity_trials_complete_early_stopped_are_pruned_failed_fail() -> None:
    searcher = FullFidelityOptunaSearch(space=space, max_steps=30, sampler=optuna.samplers.RandomSampler(seed=0))
    for tid in ("full", "stopped", "nan", "crash", "over"):
        searcher.suggest(tid)
    # The front gets the selected checkpoint's score (0.9), not the last step's (0.85).
    searcher.on_trial_complete("full", {"step": 30, "score": 0.85, "selected_score": 0.9, "fraction": 0.01})
    searcher.on_trial_complete("stopped", {"step": 10, "score": 0.99, "fraction": 0.001})
    searcher.on_trial_complete("nan", {"failed": 1, "failure": "loss is nan", "step": 3, "fraction": 0.1})
    searcher.on_trial_complete("crash", None, error=True)
    searcher.on_trial_complete("over", {"over_budget": 1, "step": 0, "fraction": 0.5})
    states = [t.state for t in searcher.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.PRUNED]
    assert searcher.study.trials[1].user_attrs == {"outcome": "stopped", "fidelity": 10}
    # The stopped trial's partial 0.99 would dominate the front; it never reaches it.
    assert [t.values for t in searcher.study.best_trials] == [[0.9, 0.01]]


@pytest.mark.parametrize(
    ("result", "error", "expected"),
    [({"step": 30, "score": 0.5}, False, "finished"), ({"step": 20, "score": 0.5}, False, "stopped"),
     (None, False, "stopped"), ({"failed": 1, "step": 3}, False, "failed"), (None, True, "failed"),
     ({"over_budget": 1, "step": 0}, False, "skipped")],
)
def test_outcome(result: dict | None, error: bool, expected: str) -> None:
    assert outcome(result, 30, error) == expected


def fake_trial(tid: str, fraction: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, config={"fraction": fraction})


def test_budget_bands_keep_small_designs_from_competing_with_large_ones() -> None:
    assert band_of(0.001, 2) == -6 and band_of(0.0031, 2) == -6 and band_of(0.0032, 2) == -5
    sched = BudgetBandedASHA(max_t=30, grace_period=10, reduction_factor=3, bands_per_decade=2)
    big = [fake_trial(f"big{i}", 0.1) for i in range(6)]
    small = fake_trial("small", 0.001)
    for t in big + [small]:
        sched.on_trial_add(None, t)
    for i, t in enumerate(big):  # large designs learn fast: 0.9 .. 0.95 at the first rung
        sched.on_trial_result(None, t, {"step": 10, "score": 0.9 + i / 100})
    # The slow-learning small design scores far below every large one at the first rung, yet it is alone in its
    # band, so it is not stopped; plain ASHA over all trials would stop it.
    assert sched.on_trial_result(None, small, {"step": 10, "score": 0.6}) == "CONTINUE"
    from ray.tune.schedulers import AsyncHyperBandScheduler

    plain = AsyncHyperBandScheduler(time_attr="step", metric="score", mode="max", max_t=30, grace_period=10,
                                    reduction_factor=3, brackets=1)
    for t in big + [small]:
        plain.on_trial_add(None, t)
    for i, t in enumerate(big):
        plain.on_trial_result(None, t, {"step": 10, "score": 0.9 + i / 100})
    assert plain.on_trial_result(None, small, {"step": 10, "score": 0.6}) == "STOP"


def test_pareto_asha_rungs_and_promotion_by_front_and_contribution() -> None:
    sched = ParetoASHA(max_t=90, grace_period=10, reduction_factor=3)
    assert sched.rungs == [10.0, 30.0]  # 90 = max_t is not a rung: a trial there ends by itself
    trials = {"big": fake_trial("big", 1e-2), "mid": fake_trial("mid", 1e-3), "small": fake_trial("small", 1e-4),
              "worse": fake_trial("worse", 1e-2)}
    decide = lambda tid, step, score: sched.on_trial_result(None, trials[tid], {"step": step, "score": score})  # noqa: E731
    assert decide("big", 10, 0.80) == "CONTINUE"  # 1 recorded: ceil(1/3) = 1 promoted
    # The small design scores far below, but nothing recorded is cheaper: it is on front 0 and its contribution
    # (-2 - -4) * 0.55 = 1.1 beats big's (0 - -2) * (0.80 - 0.55) = 0.5, so it ranks first of 2 (1 promoted).
    assert decide("small", 10, 0.55) == "CONTINUE"
    # big is now second: a third trial dominated by big (same fraction, lower score) ranks last of 3.
    assert decide("worse", 10, 0.70) == "STOP"
    # mid (1e-3, 0.60) joins front 0 {small, mid, big}; contributions small (-3 - -4) * 0.55 = 0.55,
    # mid (-2 - -3) * 0.05 = 0.05, big 2 * 0.20 = 0.40 -> order small, big, mid, worse: ceil(4/3) = 2 promoted.
    assert decide("mid", 10, 0.60) == "STOP"
    # A trial decides once per rung; later results between rungs continue; the next rung decides anew.
    assert decide("big", 20, 0.10) == "CONTINUE"
    assert decide("big", 30, 0.85) == "CONTINUE"
    assert decide("small", 30, 0.50) == "CONTINUE"  # cheapest at rung 30: front 0, contribution 1.0 > big's 0.7
    # At max_t nothing is stopped (the trial ends itself after writing its final checkpoint).
    assert decide("small", 90, 0.10) == "CONTINUE"
    assert "rung 10: 4" in sched.debug_string()


def test_make_scheduler_kinds_and_errors() -> None:
    assert isinstance(make_scheduler("pareto", max_t=90, grace_period=10, reduction_factor=3, bands_per_decade=2),
                      ParetoASHA)
    with pytest.raises(ValueError,
                       match=r"scheduler must be one of \['pareto', 'banded', 'asha', 'none'\], got 'moasha'"):
        make_scheduler("moasha", max_t=90, grace_period=10, reduction_factor=3, bands_per_decade=2)
    with pytest.raises(ValueError, match=r"grace_period must be >= 1 and reduction_factor > 1, got 0, 3"):
        ParetoASHA(max_t=90, grace_period=0, reduction_factor=3)


def test_unreachable_tracking_server_is_a_clear_error_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(ValueError, match=rf"cannot reach the MLflow tracking store at 'http://127.0.0.1:{port}'"):
        check_tracking(f"http://127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "cola"], "error: unknown task 'cola'; expected one of"),
        (["--space", "spaces/nope.yaml"], "error: space file 'spaces/nope.yaml' does not exist"),
        (["--set", "max_steps=0"], "error: max_steps must be >= 1, got 0"),
        (["--set", "lr=fast"], "error: lr must be of type float, got 'fast'"),
        (["--resume", "--name", "never-ran"], "error: --resume: no interrupted search named 'never-ran'"),
        (["--num-samples", "0"], "error: --num-samples must be >= 1, got 0"),
        (["--storage", "s3://bucket/runs"], "error: --storage must be a folder reachable by every node"),
        (["--name", "../x"], "error: --name must be a single folder name inside --storage (no '/', '\\', or '..'), "
                             "got '../x'"),
        (["--name", "/tmp/elsewhere"], "error: --name must be a single folder name inside --storage"),
    ],
)
def test_bad_input_fails_before_ray_starts(args: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    storage = [] if "--storage" in args else ["--storage", str(tmp_path / "runs")]
    code = search_main(args + storage + ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 2
    assert message in capsys.readouterr().out
    import ray

    assert not ray.is_initialized()


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        search_main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--space", "--dataset", "--num-samples", "--max-param-fraction", "--sampler", "--scheduler",
                 "--address", "--gpus-per-trial", "--workers-per-trial", "--max-failures", "--storage", "--resume",
                 "--tracking-uri"):
        assert flag in text


def test_search_end_closes_children_left_running_as_interrupted(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("s")
    parent = client.create_run(exp).info.run_id
    tags = {"mlflow.parentRunId": parent, "petl.role": "trial"}
    done = client.create_run(exp, tags={**tags, "petl.trial_id": "a", "petl.status": "finished"}).info.run_id
    client.set_terminated(done, "FINISHED")
    orphan = client.create_run(exp, tags={**tags, "petl.trial_id": "b", "petl.status": "running"}).info.run_id
    named = client.create_run(exp, run_name="t003 lora_attn", tags={**tags, "petl.trial_id": "c", "petl.status":
                                                                    "running", "petl.trial_number": "3"}).info.run_id
    assert sorted(close_interrupted(client, parent)) == ["b", "t003 lora_attn"]  # the name users see, where it has one
    assert client.get_run(named).info.status == "KILLED"
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(orphan).data.tags["petl.status"] == "interrupted"
    assert client.get_run(done).info.status == "FINISHED" and close_interrupted(client, parent) == []



def test_result_memo_keys_on_what_the_trial_computes_and_records_only_full_fidelity(tmp_path: Path) -> None:
    import dataclasses

    from finetune.trainconfig import TrainConfig
    from search.trainable import ResultMemo

    config = {"design": {"ffn": {"form": "relu", "size": 2}}}
    cfg = TrainConfig.for_task("toy-cls", max_steps=4, eval_every=2, lr=1e-3, out_dir=str(tmp_path / "a"))
    memo = ResultMemo(tmp_path, config, cfg, "first")
    same = ResultMemo(tmp_path, config, dataclasses.replace(cfg, out_dir=str(tmp_path / "b")), "second")
    assert same.path == memo.path  # where a trial writes is not what it computes
    assert ResultMemo(tmp_path, config, dataclasses.replace(cfg, lr=2e-3), "x").path != memo.path
    assert ResultMemo(tmp_path, {"design": {"ffn": {"form": "relu", "size": 4}}}, cfg, "x").path != memo.path
    assert ResultMemo(tmp_path, config, cfg, "x", workers=2).path != memo.path  # global batch = batch x workers
    memo.record({"step": 2, "score": 0.7, "fraction": 0.01})  # partial fidelity: not a result
    memo.record({"step": 4, "failed": 1, "failure": "loss is nan", "fraction": 0.01})
    assert same.lookup() is None
    memo.record({"step": 4, "score": 0.75, "loss": 0.3, "fraction": 0.01})
    assert same.lookup() == {"step": 4, "score": 0.75, "loss": 0.3, "fraction": 0.01, "reused_from": "first"}


def test_a_bare_resume_continues_the_search_as_it_was_started(tmp_path: Path) -> None:
    from search.cli import build_parser, given_flags
    from search.names import ARGS_FILE, SearchError, restore_args, save_args

    first = ["--name", "s", "--storage", str(tmp_path), "--num-samples", "2", "--set", "max_steps=4", "--seeds", "2"]
    started = build_parser().parse_args(first)
    save_args(tmp_path, started)
    assert "resume" not in json.loads((tmp_path / ARGS_FILE).read_text())
    # the README's form: only the name and --resume; every setting comes back, not the defaults
    bare = ["--name", "s", "--storage", str(tmp_path), "--resume", "--concurrency", "3"]
    args = build_parser().parse_args(bare)
    restore_args(args, given_flags(build_parser(), bare), tmp_path)
    assert (args.num_samples, args.set, args.seeds, args.resume, args.concurrency) == (2, ["max_steps=4"], 2, True, 3)
    changed = [*bare, "--num-samples", "5"]
    with pytest.raises(SearchError, match=r"^--resume continues search '.*' as it was started, but --num-samples is 5 "
                                          r"now and was 2; drop the flag, or start a new search with --name$"):
        restore_args(build_parser().parse_args(changed), given_flags(build_parser(), changed), tmp_path)
