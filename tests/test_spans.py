"""finetune.spans: the timing events the product emits for benchmarks, off unless PETL_SPANS names a folder."""

from __future__ import annotations

import json
import os

import pytest

from finetune import spans


def test_off_without_the_variable_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(spans.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with spans.span("search.fit"):
        spans.mark("train.report", step=1)
    assert list(tmp_path.iterdir()) == []


def test_spans_pair_by_name_and_fields_and_survive_an_exception(tmp_path, monkeypatch):
    monkeypatch.setenv(spans.ENV, str(tmp_path))

    @spans.timed("search.suggest", trial_arg=1)
    def suggest(self, trial_id):
        return trial_id.upper()

    assert suggest(None, "t1") == "T1"  # the decorator returns what the function returns
    with pytest.raises(KeyError):
        with spans.span("trial", trial="t2"):
            with spans.span("trial", trial="t3"):
                spans.mark("train.report", step=5)
            raise KeyError("x")
    events = spans.read_events(tmp_path)
    assert [(e["name"], e["kind"]) for e in events] == [
        ("search.suggest", "begin"), ("search.suggest", "end"), ("trial", "begin"), ("trial", "begin"),
        ("train.report", "mark"), ("trial", "end"), ("trial", "end")]
    assert {e["pid"] for e in events} == {os.getpid()}
    closed = spans.pair_spans(events)
    assert [(s["name"], s.get("trial")) for s in closed] == [("search.suggest", "t1"), ("trial", "t3"),
                                                             ("trial", "t2")]
    for s in closed:
        assert s["seconds"] == pytest.approx(s["end"] - s["start"]) and s["seconds"] >= 0
    outer = closed[2]
    assert outer["start"] <= closed[1]["start"] and closed[1]["end"] <= outer["end"]  # t3 ran inside t2


def test_a_torn_line_and_an_unclosed_span_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv(spans.ENV, str(tmp_path))
    with spans.span("train"):
        pass
    spans._emit(str(tmp_path), "trial", "begin", {"trial": "t9"})  # a worker ended inside its trial
    path = next(tmp_path.glob("spans-*.jsonl"))
    with path.open("a") as fh:
        fh.write(json.dumps({"name": "train", "kind": "end"})[:17])  # killed mid-write
    events = spans.read_events(tmp_path)
    assert len(events) == 3
    assert [s["name"] for s in spans.pair_spans(events)] == ["train"]


def test_every_emitted_name_is_listed_and_every_listed_name_is_emitted():
    """NAMES is the contract benchmarks read by: a span added, renamed or dropped in the code must change it too."""
    import re
    from pathlib import Path

    root = Path(spans.__file__).resolve().parents[1]
    pattern = re.compile(r'\b(?:span|timed|mark)\(\s*"([a-z_.]+)"')
    emitted = {m for pkg in ("analysis", "search", "finetune") for path in (root / pkg).rglob("*.py")
               if path.name != "spans.py" for m in pattern.findall(path.read_text())}
    assert emitted == set(spans.NAMES)
