"""Named timing spans the product emits at its phase boundaries, so that a benchmark times the product as it runs
instead of patching its functions (benchmarks/bench_orchestration.py reads them).

Off unless the environment variable `PETL_SPANS` names a folder; then every process that emits (the search driver,
and each Ray worker, which inherits the variable from the driver) appends one JSON line per event to
`<folder>/spans-<pid>.jsonl`, written and flushed at once: a trial that Ray ends inside its final report still leaves
the events before it. Off, a span costs one environment lookup.

An event is `{"name", "kind", "t", "pid", **fields}`: `kind` is "begin" or "end" for a span (paired by name, process
and fields) and "mark" for an instant; `t` is wall-clock seconds since the epoch (`time.time()`, comparable across
the processes of one machine). Span names in use are listed in `NAMES`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

ENV = "PETL_SPANS"
NAMES = {  # what each emitted name times; a benchmark relies on these, so a rename is a change of contract
    "search.plan": "resolve and check the space, task, run configuration and model config (search.plan)",
    "search.check_tracking": "reach the MLflow store (search.store.check_tracking)",
    "search.ray_start": "start or join Ray (search.tuner)",
    "search.open": "create (or find) the MLflow parent run and the callback (search.driver.open_search)",
    "search.fit": "Ray Tune's whole fit: every trial (search.tuner.fit)",
    "search.finish": "the final report, the parent's status and the printed front (search.finish.finish)",
    "search.suggest": "one suggestion of the searcher Ray calls, fields: trial (search.replicates, search.study)",
    "search.tell": "that searcher told a trial's outcome, fields: trial (search.replicates, search.study)",
    "trial": "one trial in its worker, from entry to return, fields: trial (search.tuner)",
    "train": "finetune.loop.train, from the call to its return",
    "train.report": "mark: an evaluation is about to be reported, fields: step (finetune.loop)",
    "report.load": "analysis.load.load_search",
    "report.importance": "analysis.importance.param_importance (fANOVA)",
    "report.figure.front_figure_png": "the front as PNG (matplotlib, analysis.plots)",
    "report.figure.front_figure_html": "the front as HTML (plotly, analysis.plots)",
    "report.figure.importance_figure_png": "the fANOVA importances as PNG (analysis.plots)",
    "report.effects": "analysis.effects.like_for_like",
}
F = TypeVar("F", bound=Callable[..., Any])


def _folder() -> str | None:
    return os.environ.get(ENV) or None


def _emit(folder: str, name: str, kind: str, fields: dict[str, Any]) -> None:
    event = {"name": name, "kind": kind, "t": time.time(), "pid": os.getpid(), **fields}
    with open(os.path.join(folder, f"spans-{os.getpid()}.jsonl"), "a") as fh:  # one line per write: no interleaving
        fh.write(json.dumps(event, default=str) + "\n")


def mark(name: str, **fields: Any) -> None:
    """An instant named `name` (no-op unless PETL_SPANS is set)."""
    folder = _folder()
    if folder:
        _emit(folder, name, "mark", fields)


@contextmanager
def span(name: str, **fields: Any) -> Iterator[None]:
    """Time the block as `name`; the end is written whether the block returns or raises."""
    folder = _folder()
    if not folder:
        yield
        return
    _emit(folder, name, "begin", fields)
    try:
        yield
    finally:
        _emit(folder, name, "end", fields)


def timed(name: str, trial_arg: int | None = None) -> Callable[[F], F]:
    """Decorator: every call of the function is a span named `name`; with `trial_arg`, the span's field `trial` is
    the positional argument at that index (a method's trial id: `self` is index 0)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            fields = {} if trial_arg is None or len(args) <= trial_arg else {"trial": args[trial_arg]}
            with span(name, **fields):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def read_events(folder: str | Path) -> list[dict[str, Any]]:
    """Every event written under `folder`, by time. A torn last line (a process killed mid-write) is skipped."""
    events = []
    for path in sorted(Path(folder).glob("spans-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return sorted(events, key=lambda e: e["t"])


def _key(event: dict[str, Any]) -> tuple:
    return (event["name"], event["pid"], tuple(sorted((k, str(v)) for k, v in event.items()
                                                      if k not in ("name", "kind", "t", "pid"))))


def pair_spans(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Closed spans `{name, pid, start, end, seconds, **fields}` from begin/end events (nested spans of one key pair
    innermost first). A begin without its end (the process ended inside it) yields no span."""
    open_: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    spans = []
    for e in events:
        if e["kind"] == "begin":
            open_[_key(e)].append(e)
        elif e["kind"] == "end" and open_[_key(e)]:
            b = open_[_key(e)].pop()
            fields = {k: v for k, v in b.items() if k not in ("kind", "t")}
            spans.append({**fields, "start": b["t"], "end": e["t"], "seconds": e["t"] - b["t"]})
    return spans
