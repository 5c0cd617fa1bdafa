"""How search records reach MLflow (issue 12, items 3, 4, 6, 7, 11): exact lookups for any name or path, one safe
creation of a fresh SQLite store, writes queued through an outage, and a resumed search that continues its counts
and step points instead of repeating them. Real SQLite stores; the tracking server outage itself is in
tests/test_reliability_e2e.py."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient

from analysis.mlflow_filter import literal, runs_where, tag_filter
from finetune.trainconfig import TrainConfig
from search.outbox import Outbox
from search.store import check_tracking, parent_run
from search.tracking import MlflowSearchCallback
from search.trainable import ResultMemo

AWKWARD = ["o'neil", 'say "hi"', "both ' and \"", "back\\slash", "/home/o'neil/petl runs/s", "a = 'b' or 1", ""]


def test_runs_are_found_by_exact_tag_values_whatever_quotes_they_hold(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.create_experiment("quotes")
    ids = {v: client.create_run(exp, tags={"k": v, "role": "x"}).info.run_id for v in AWKWARD}
    client.create_run(exp, tags={"k": "o", "role": "x"})  # a prefix of a value must not match it
    for value, run_id in ids.items():
        assert [r.info.run_id for r in runs_where(client, [exp], {"k": value, "role": "x"})] == [run_id]
    assert literal("o'neil") == '"o\'neil"' and literal('say "hi"') == "'say \"hi\"'"
    assert literal("both ' and \"") is None  # MLflow's grammar has no escape: checked in Python instead
    assert tag_filter({"k": "both ' and \"", "role": "x"}, status="RUNNING") == \
        "tags.`role` = 'x' and attributes.status = 'RUNNING'"


def test_a_resumed_search_finds_its_parent_under_a_path_with_apostrophes(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    folder = str(tmp_path / "o'neil's \"runs\"" / "it's")
    first = parent_run(client, "exp 'q'", folder, {"a": 1}, {}, resume=False)
    assert parent_run(client, "exp 'q'", folder, {"a": 1}, {}, resume=True) == first  # today: a filter parse error


def _first_use(uri: str, barrier, results) -> None:
    barrier.wait()  # every process creates the same fresh store at the same moment
    try:
        check_tracking(uri)
        results.put("ok")
    except BaseException as err:  # noqa: BLE001 - reported to the test
        results.put(f"{type(err).__name__}: {err}")


def test_searches_starting_together_create_one_sound_sqlite_store(tmp_path: Path) -> None:
    # Before: in each of 3 rounds of 4 processes most failed (`duplicate column name: step`, alembic errors) and in
    # 2 the file was left broken for good (`table _alembic_tmp_latest_metrics already exists`).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_first_use, args=(uri, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(results.get(timeout=5) for _ in procs) == ["ok"] * 4
    client = check_tracking(uri)  # and it stays usable
    assert client.get_experiment_by_name("Default") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]  # no temporary left


def test_a_file_that_is_not_a_store_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError) as err:
        check_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot reach the MLflow tracking store at 'sqlite:///")
    assert message.endswith("the file is not a usable MLflow store: move it aside (a new one is created) or pass "
                            "--tracking-uri")


def test_a_store_mlflow_cannot_create_in_this_folder_is_one_clear_line(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow writes the default experiment's artifact path (<cwd>/mlruns) into raw SQL with Python's repr: a path
    # with both quote kinds is a SQL syntax error (an MLflow defect; a path with one kind works).
    cwd = tmp_path / "o'neil \"lab\""
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(ValueError, match=r"^MLflow cannot create a SQLite store from a folder whose path holds both "
                                         r"' and \" .*; start the search from another folder, or pass --tracking-uri"):
        check_tracking(f"sqlite:///{cwd / 'mlflow.db'}")
    assert not (cwd / "mlflow.db").exists()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def down() -> MlflowException:
    return MlflowException("API request to http://x/api failed with exception ConnectionError")


def test_the_outbox_keeps_order_backs_off_survives_a_restart_and_drops_only_refused_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, clock, sent = tmp_path / "outbox.json", Clock(), []
    state = {"up": True}

    def send(op: dict) -> None:
        if not state["up"]:
            raise down()
        if op.get("bad"):
            raise MlflowException("param too long", error_code=INVALID_PARAMETER_VALUE)
        sent.append(op["n"])

    box = Outbox(str(path), "the store", clock)
    box.put({"n": 1})
    assert box.flush(send) and sent == [1] and not path.exists()  # sending normally: nothing on disk
    state["up"] = False
    for n in (2, 3):
        box.put({"n": n})
        box.flush(send)
    assert box.next_try == 2.0 and json.loads(path.read_text()) == [{"n": 2}, {"n": 3}]  # 1 s, then 2 s
    clock.t = 2.0
    box.flush(send)
    assert box.next_try == 6.0  # doubled again
    restarted = Outbox(str(path), "the store", clock)  # a new driver (--resume) finds the queue on disk
    assert restarted.load() == 2
    state["up"] = True
    restarted.put({"n": 4, "bad": True})
    restarted.put({"n": 5})
    assert restarted.flush(send) and sent == [1, 2, 3, 5] and not path.exists()
    out = capsys.readouterr().out
    assert "tracking: the store unreachable (MlflowException: API request" in out
    assert 'tracking: the store refused a record, dropped (MlflowException: param too long): {"n": 4, "bad": true}' \
        in out


def trial(trial_id: str, fraction: float = 0.01) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, last_result=None, error_file=None, config={
        "design": {"ffn": {"form": "relu", "size": 2}}, "train": {"lr": 0.001}, "fraction": fraction,
        "counts": {"trainable": 10, "stored": 10}, "preset": None})


def result(step: int, score: float = 0.5) -> dict:
    return {"step": step, "score": score, "selected_score": score, "selected_step": step, "loss": 0.3,
            "eval_loss": 0.4, "tokens_per_s": 9.0, "elapsed_s": 1.0}


@pytest.fixture()
def search(tmp_path: Path) -> SimpleNamespace:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = check_tracking(uri)
    parent = parent_run(client, "s", str(tmp_path / "s"), {}, {}, resume=False)

    def callback() -> MlflowSearchCallback:
        cb = MlflowSearchCallback(uri, parent, max_steps=10, report_dir=str(tmp_path / "report"),
                                  refresh_every_s=1e9, num_samples=3, outbox=str(tmp_path / "s" / "outbox.json"))
        cb.setup()
        return cb

    return SimpleNamespace(client=client, parent=parent, callback=callback, outbox=tmp_path / "s" / "outbox.json")


def runs(s: SimpleNamespace) -> dict:
    exp = s.client.get_run(s.parent).info.experiment_id
    return {r.data.tags["petl.trial_id"]: r for r in runs_where(s.client, [exp], {"mlflow.parentRunId": s.parent})}


def test_records_written_while_the_store_is_away_are_logged_once_it_is_back(
        search: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cb = search.callback()
    a, b = trial("a"), trial("b")
    cb.on_trial_start(0, [], a)
    cb.on_trial_result(0, [], a, result(5))
    real_get_run = MlflowClient.get_run

    def unreachable(*args, **kwargs):
        raise down()

    for name in ("get_run", "create_run", "log_batch", "set_terminated", "search_runs", "update_run"):
        monkeypatch.setattr(MlflowClient, name, unreachable)
    cb.on_trial_result(0, [], a, result(10, 0.75))  # before: MlflowException out of the callback ended the search
    cb.on_trial_complete(0, [], a)
    cb.on_trial_start(0, [], b)  # a trial that starts during the outage: its run is created later
    cb.on_trial_result(0, [], b, result(5))
    assert len(cb.outbox.ops) == 4 and search.outbox.is_file()
    monkeypatch.undo()
    assert MlflowClient.get_run is real_get_run
    cb.outbox.next_try = 0.0  # the backoff has passed
    cb.on_step_begin(0, [])
    assert not cb.outbox.ops and not search.outbox.exists()
    found = runs(search)
    assert found["a"].data.tags["petl.status"] == "finished" and found["a"].info.status == "FINISHED"
    history = search.client.get_metric_history(found["a"].info.run_id, "score")
    assert [(m.step, m.value) for m in history] == [(5, 0.5), (10, 0.75)]
    assert [m.step for m in search.client.get_metric_history(found["b"].info.run_id, "score")] == [5]
    out = capsys.readouterr().out
    assert "[1/3] t001 PA r=2 finished score 0.7500" in out and "record(s) queued for tracking" in out
    assert "is back after" in out and "4 queued record(s) logged" in out


def test_a_resumed_search_continues_its_count_and_logs_no_step_twice(
        search: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    cb = search.callback()
    for t in (trial("a"), trial("b")):
        cb.on_trial_start(0, [], t)
        cb.on_trial_result(0, [], t, result(5))
        cb.on_trial_result(0, [], t, result(10, 0.75))
        cb.on_trial_complete(0, [], t)
    cb.on_trial_start(0, [], trial("c"))
    cb.on_trial_result(0, [], trial("c"), result(5))
    capsys.readouterr()
    # --resume: Ray restores the callback pickled at the start (all counts 0) and reruns b, which finished in the
    # second before the driver was killed, and c from its step-5 resume state.
    resumed = search.callback()
    b, c = trial("b"), trial("c")
    resumed.on_trial_start(0, [], b)
    resumed.on_trial_result(0, [], b, result(10, 0.75))  # answered from b's own result, reported again
    resumed.on_trial_complete(0, [], b)
    resumed.on_trial_start(0, [], c)
    resumed.on_trial_result(0, [], c, result(10, 0.6))
    resumed.on_trial_complete(0, [], c)
    out = capsys.readouterr().out.splitlines()
    # not [1/3]; each trial keeps the number it started with (read back from its run's tag)
    assert out[0].startswith("[2/3] t002 PA r=2 finished score 0.7500 (already recorded before the restart)")
    assert out[1].startswith("[3/3] t003 PA r=2 finished score 0.6000")
    found = runs(search)
    for tid in ("a", "b", "c"):
        steps = [m.step for m in search.client.get_metric_history(found[tid].info.run_id, "score")]
        assert steps == [5, 10], (tid, steps)  # before: b had step 10 twice
    assert "petl.reused_from" not in found["b"].data.tags


def test_a_trial_run_again_after_it_finished_answers_from_its_own_result_not_as_reuse(tmp_path: Path) -> None:
    config = {"design": {"ffn": {"form": "relu", "size": 2}}}
    cfg = TrainConfig.for_task("toy-cls", max_steps=4, eval_every=2, out_dir=str(tmp_path / "trials" / "t1"))
    final = {"step": 4, "score": 0.75, "fraction": 0.01}
    ResultMemo(tmp_path / "results", config, cfg, "t1").record(final)
    # The killed driver never saw t1 end, so --resume runs t1 again: it is answered as itself (before: reused
    # from itself), also when duplicates are not shared (--rerun-duplicates: before, it trained again).
    assert ResultMemo(tmp_path / "results", config, cfg, "t1").lookup() == final
    assert ResultMemo(tmp_path / "results", config, cfg, "t1", share=False).lookup() == final
    other = TrainConfig.for_task("toy-cls", max_steps=4, eval_every=2, out_dir=str(tmp_path / "trials" / "t2"))
    assert ResultMemo(tmp_path / "results", config, other, "t2").lookup() == {**final, "reused_from": "t1"}
    assert ResultMemo(tmp_path / "results", config, other, "t2", share=False).lookup() is None
