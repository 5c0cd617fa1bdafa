"""What a researcher reads: one name per trial, the task's metric by name, the fraction in percent, readable plots,
and progress lines with elapsed time, time left and where a stopped trial stopped."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from matplotlib.text import Text
from mlflow import MlflowClient

from analysis.load import load_search, runs_to_frame
from analysis.plots import front_figure, front_figure_html
from analysis.report import write_report
from analysis.synthetic import SyntheticTrial, fabricate_search, records_of, runs_of
from finetune.designpoint import DesignPoint
from finetune.presets import get_preset
from search import contract as C
from search.finish import front_table
from search.store import parent_run
from search.tracking import MlflowSearchCallback


def test_a_child_run_is_named_by_its_trial_number_and_its_design_in_short() -> None:
    assert C.run_name(3, get_preset("lora_attn").design, "lora_attn") == "t003 lora_attn"
    assert C.run_name(12, get_preset("mam").design) == "t012 MAM l=30 r=512"
    assert C.run_name(4, get_preset("prefix_lora").design, None, {"index": 1, "count": 3}) == \
        "t004 prefix+LoRA l=30 r=102 seed 2/3"
    assert C.run_name(1000, DesignPoint.from_dict({"backbone": "bias"})) == "t1000 BitFit"
    assert C.design_short(DesignPoint()) == "task head only"
    assert C.design_short(get_preset("prompt_tuning").design) == "prompt tuning l=200"


def _search(tmp_path: Path, trials: list[SyntheticTrial], metric: str = "accuracy") -> pd.DataFrame:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    s = fabricate_search(client, "read", trials=trials, reference=C.Reference(0.5, "chance"))
    if metric != "accuracy":
        client.set_tag(s.parent_run_id, C.METRIC_TAG, metric)
    return load_search(parent_run_id=s.parent_run_id, client=client)


def _trial(preset: str | None, score: float | None, fraction: float, status: str = C.FINISHED,
           design: dict | None = None) -> SyntheticTrial:
    dp = get_preset(preset).design if preset else DesignPoint.from_dict(design or {"ffn": {"form": "relu",
                                                                                             "size": 8}})
    return SyntheticTrial(dp, {"lr": 1e-3}, score, status, preset=preset, fraction=fraction)


def test_trials_csv_and_summary_use_the_trial_ids_of_the_console_and_the_metric_by_name(tmp_path: Path) -> None:
    df = _search(tmp_path, [_trial("lora_attn", 0.81, 0.005), _trial(None, 0.84, 0.02),
                            _trial(None, 0.70, 0.001, C.STOPPED)], metric="rouge")
    assert df["trial"].tolist() == ["t001", "t002", "t003"]
    assert df["run_name"].tolist() == ["t001 lora_attn", "t002 PA r=8", "t003 PA r=8"]
    write_report(df, tmp_path / "report", importance=False)
    csv = pd.read_csv(tmp_path / "report" / "trials.csv")
    assert list(csv.columns[:2]) == ["trial", "run_id"]
    assert {"rouge2", "last_rouge2", "fraction_pct"} <= set(csv.columns)
    assert not {"score", "last_score", "fraction"} & set(csv.columns)
    assert csv["fraction_pct"].tolist() == pytest.approx([0.5, 2.0, 0.1])
    assert csv["rouge2"].tolist()[:2] == pytest.approx([0.81, 0.84])
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "- task score: ROUGE-2 (F1, 0-100) of each trial's selected checkpoint" in summary
    front = summary[summary.index("## Pareto-optimal designs"):].split("\n\n")[1].splitlines()
    assert front[0] == ("| design | family | preset | ROUGE-2 | fraction | stored params | size MB (fp32) | trials |")
    assert [row.split(" | ")[-1] for row in front[2:]] == ["`t001` |", "`t002` |"]
    table = front_table(df).splitlines()
    assert table[0].startswith("ROUGE-2 (F1, 0-100), of the selected checkpoint; fraction = stored parameters, %")
    assert table[1].split() == ["trial", "ROUGE-2", "fraction", "stored", "design"]
    assert table[2].split()[:3] == ["t001", "0.8100", "0.500%"]


def _bbox_overlap(a, b) -> float:  # noqa: ANN001 - matplotlib Bboxes
    return max(min(a.x1, b.x1) - max(a.x0, b.x0), 0) * max(min(a.y1, b.y1) - max(a.y0, b.y0), 0)


def test_the_plot_names_the_metric_shows_percent_and_keeps_preset_labels_apart_and_inside() -> None:
    # Five presets crowded at almost one point, two of them at the largest fraction (the right edge): before, each
    # label sat 6 pt up-right of its point, so they overlapped and the rightmost ran off the axes.
    crowd = [("lora_attn", 0.800, 0.050), ("scaled_pa", 0.801, 0.051), ("pa_ffn", 0.802, 0.052),
             ("lora_ffn", 0.8015, 0.2), ("scaled_pa_learned", 0.8025, 0.2)]
    trials = [_trial(p, s, f) for p, s, f in crowd] + [_trial(None, 0.6, 0.0005)]
    df = runs_to_frame(runs_of(records_of(trials)))
    df.attrs["metric"] = "bleu_ro"
    fig = front_figure(df)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "BLEU (mBART en-ro protocol, 0-100), higher is better"
    assert ax.get_xlabel() == "stored parameters, % of the backbone's (log scale)"
    assert ax.xaxis.get_major_formatter()(0.001, 0) == "0.1%"
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text() in {p for p, _, _ in crowd}]
    assert sorted(t.get_text() for t in labels) == sorted(p for p, _, _ in crowd)
    boxes = [(t.update_positions(renderer), Text.get_window_extent(t, renderer))[1]  # the text, not its line
             for t in labels]
    frame = ax.get_window_extent(renderer)
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, box
    for a, b in itertools.combinations(boxes, 2):
        assert _bbox_overlap(a, b) == 0


def _drawn_tick_labels(fig: object) -> list[str]:
    fig.canvas.draw()  # tick labels are made at draw time
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    return [t.get_text() for t in ax.get_xticklabels(which="both") if t.get_text() and lo <= t.get_position()[0] <= hi]


@pytest.mark.parametrize("fractions, expected", [
    # within one decade matplotlib labels the minor ticks: before, they read 2x10^-3 ... beside percent labels
    ((0.0020, 0.0045, 0.0030, 0.0060), ["0.2%", "0.3%", "0.4%", "0.6%"]),
    # over several decades only the decades are labelled
    ((0.00005, 0.002, 0.03, 0.6), ["0.01%", "0.1%", "1%", "10%"]),
])
def test_every_tick_label_of_the_front_is_in_percent_and_each_family_is_listed_once(
        fractions: tuple[float, ...], expected: list[str]) -> None:
    # LoRA and scaled PA are each a family with Pareto-optimal points only (before: listed twice, once for an empty
    # scatter of its dominated points); PA has a dominated design and an early-stopped run.
    trials = [_trial("lora_attn", 0.80, fractions[0]), _trial("scaled_pa", 0.82, fractions[1]),
              _trial(None, 0.78, fractions[2]), _trial(None, 0.75, fractions[3], C.STOPPED)]
    fig = front_figure(runs_to_frame(runs_of(records_of(trials))))
    labels = _drawn_tick_labels(fig)
    assert labels == expected
    assert all(t.endswith("%") for t in labels)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:3] == ["LoRA (1 config)", "scaled PA (1 config)", "PA (1 config)"]
    assert len(legend) == len(set(legend))
    assert "early-stopped / partial fidelity (1 run)" in legend


def test_front_html_is_not_fixed_at_1000_px_and_shows_percent(tmp_path: Path) -> None:
    df = runs_to_frame(runs_of(records_of([_trial("lora_attn", 0.8, 0.005), _trial(None, 0.7, 0.001)])))
    html = front_figure_html(df, tmp_path / "front.html").read_text()
    assert '"width":1000' not in html and 'style="height:100%; width:100%;"' in html
    assert '"responsive": true' in html
    assert '"ticksuffix":"%"' in html and "stored parameters, % of the backbone's (log scale)" in html


def _progress_callback(tmp_path: Path) -> MlflowSearchCallback:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(tracking_uri=uri)
    parent = parent_run(client, "progress", str(tmp_path / "s"), {}, {}, resume=False)
    return MlflowSearchCallback(uri, parent, max_steps=40, report_dir=str(tmp_path / "report"),
                                refresh_every_s=float("inf"), num_samples=4, metric="accuracy")


def test_progress_lines_say_where_a_trial_stopped_how_long_it_took_and_how_long_is_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clock = iter([1000.0, 1065.0, 1200.0])  # the callback's start, then the two trials' ends
    monkeypatch.setattr("search.tracking.time.monotonic", lambda: next(clock))
    cb = _progress_callback(tmp_path)
    config = {"design": {"ffn": {"form": "relu", "size": 8}}, "fraction": 0.002, "train": {"lr": 1e-3}}
    stopped = SimpleNamespace(trial_id="ray_x", config=config, last_result=None, error_file=None)
    done = SimpleNamespace(trial_id="ray_y", config={**config, "preset": "lora_attn"}, last_result=None,
                           error_file=None)
    for trial, reports in ((stopped, [(10, 0.61)]), (done, [(20, 0.83), (40, 0.79)])):
        cb.on_trial_start(0, [], trial)
        for step, score in reports:
            best = max(s for st, s in reports if st <= step)
            cb.on_trial_result(0, [], trial, {"step": step, "score": score, "selected_score": best,
                                              "selected_step": 20 if step == 40 else step})
        cb.on_trial_complete(0, [], trial)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("[1/4] t001 PA r=8 stopped at step 10/40, last accuracy 0.6100 @ 0.200% | 0 running, "
                        "1 stopped | elapsed 1m05s, about 3m15s left (3 trials at this run's pace, one per 1m05s)")
    assert lines[1] == ("[2/4] t002 lora_attn finished accuracy 0.8300 (selected step 20) @ 0.200% | 0 running, "
                        "1 finished, 1 stopped | front: 1 designs, best accuracy 0.8300 | elapsed 3m20s, about "
                        "3m20s left (2 trials at this run's pace, one per 1m40s)")
