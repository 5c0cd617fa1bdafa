"""The study's design list (benchmarks/study/designs.yaml): matched pairs, exact prices, the protocol, the table."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from benchmarks.study import protocol
from benchmarks.study.designs import load_study, parse_study, price
from benchmarks.study.table import append_row, exclusive, read_rows, run_key

D, LAYERS = 384, 6  # MiniLM: d, layers; FFN width 4d


def test_every_conclusion_has_its_matched_pairs() -> None:
    study = load_study()
    assert len(study.designs) == 35
    by = {}
    for p in study.pairs:
        by.setdefault(p.conclusion, []).append((p.a, p.b))
    assert {c: len(v) for c, v in by.items()} == {"a": 4, "b": 8, "c": 5, "c_as_run": 1, "d": 8}
    # the paper's winner is read off the designs: parallel, FFN, scaled, multi-head
    assert ("pa_ffn_r64", "sa_ffn_r64") in by["a"] and ("lora_ffn_r51", "lora_qv_r128") in by["b"]
    assert ("spa_ffn_r256_s4", "pa_ffn_r256_lorainit") in by["c"] and ("mhpa_l2", "pa_ffn_r2") in by["d"]
    assert by["c_as_run"] == [("spa_ffn_r256_s4", "pa_ffn_r256")]


def test_stored_counts_are_the_hand_derived_ones() -> None:
    d = load_study().designs
    stored = {k: price(d[k].design).stored for k in d}
    adapter = lambda r, ln=0: LAYERS * (2 * r * D + r + D + ln)  # noqa: E731 - W_down, W_up, biases, LayerNorm
    assert stored["pa_ffn_r64"] == stored["sa_ffn_r64"] == adapter(64) == 297_600
    assert stored["pa_attn_r2"] == adapter(2, ln=2 * D) == 16_140
    assert stored["prefix_l8"] == stored["mhpa_l8"] == LAYERS * 2 * 8 * D == 36_864  # P_k, P_v; the MLP is folded
    assert stored["lora_ffn_r13"] == LAYERS * 2 * 13 * (D + 4 * D) == 299_520
    assert stored["lora_qv_r128"] == LAYERS * 2 * 128 * (D + D) == 1_179_648
    assert stored["spa_ffn_r256_learned"] == adapter(256) + LAYERS  # one learned s per layer
    assert stored["mam_l"] == LAYERS * 2 * 16 * D + adapter(240) == 1_183_392
    # BitFit: per layer q, k, v, o, FFN-in, FFN-out biases and two LayerNorm biases; the embeddings' LayerNorm bias
    assert stored["bitfit"] == LAYERS * (4 * D + 4 * D + D + 2 * D) + D == 25_728
    assert stored["head_only"] == 0 and stored["full"] == 22_565_376
    assert math.isclose(price(d["pa_ffn_r256"].design).fraction, 1_183_488 / 22_565_376)


def _mini(**edits: object) -> dict:
    data = {
        "model": "minilm", "lr_grids": {"adapter": [1e-3]}, "conclusions": {"a": {"claim": "", "paper": ""}},
        "designs": {
            "pa": {"method": "", "family": "PA", "budget": "M", "lr_grid": "adapter", "serves": ["a"],
                   "partners": {"a": ["sa"]}, "design": {"ffn": {"form": "relu", "size": 64}}},
            "sa": {"method": "", "family": "SA", "budget": "M", "lr_grid": "adapter", "serves": ["a"],
                   "partners": {"a": ["pa"]}, "design": {"ffn": {"form": "relu", "size": 64,
                                                                  "insertion": "sequential"}}},
        },
    }
    for path, value in edits.items():
        *head, last = path.split("__")
        node = data
        for k in head:
            node = node[k]
        node[last] = value
    return data


def test_a_valid_pair_orients_on_the_paper_s_winner() -> None:
    (pair,) = parse_study(_mini(), "x.yaml").pairs
    assert (pair.conclusion, pair.a, pair.b, pair.budget) == ("a", "pa", "sa", "M")


@pytest.mark.parametrize(("edits", "message"), [
    ({"designs__sa__partners": {"a": []}},
     r"x.yaml: design 'pa' lists 'sa' as its a partner but 'sa' does not list 'pa' back; partners are symmetric"),
    ({"designs__sa__design": {"ffn": {"form": "relu", "size": 32, "insertion": "sequential"}}},
     r"pair 'pa' / 'sa' is not like-for-like for conclusion a: the two must differ in the insertion of one site only"),
    ({"designs__sa__lr_grid": "lora"}, r"x.yaml: design 'sa': lr_grid must be one of \['adapter'\], got 'lora'"),
    ({"designs__pa__partners": {"b": ["sa"]}},
     r"design 'pa': partners are listed per conclusion it serves \['a'\], got \['b'\]"),
    ({"designs__pa__design": {"ffn": {"form": "relu", "size": 64, "insertion": "diagonal"}}},
     r"design 'pa': ffn.insertion must be one of \['sequential', 'parallel'\], got 'diagonal'"),
])
def test_an_unusable_design_list_is_refused_with_the_rule(edits: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_study(_mini(**edits), "x.yaml")


def test_a_pair_outside_the_budget_tolerance_is_refused() -> None:
    data = _mini(conclusions={"b": {"claim": "", "paper": ""}})
    data["designs"]["pa"].update(serves=["b"], partners={"b": ["sa"]})
    data["designs"]["sa"].update(serves=["b"], partners={"b": ["pa"]},
                                 design={"attn": {"form": "relu", "size": 128}})
    with pytest.raises(ValueError, match=r"'pa' \(297,600 stored\) / 'sa' \(592,896\) for b is not matched in "
                                         r"budget: ratio 1.99 > 1.2 allowed at M"):
        parse_study(data, "x.yaml")


def _row(design: str, lr: float, seed: int, score: float | None, loss: float = 0.5) -> dict:
    if score is None:
        return {"key": run_key(design, lr, seed), "status": "failed"}
    return {"key": run_key(design, lr, seed), "status": "finished", "selection": {"score": score, "eval_loss": loss}}


def test_the_plan_trains_the_grid_then_replicates_the_best_lr() -> None:
    grid, seeds = {"x": (1e-3, 3e-3), "y": (1e-3, 3e-3)}, (1, 2, 3)
    rows = {r["key"]: r for r in [_row("x", 1e-3, 1, 0.80), _row("x", 3e-3, 1, 0.85), _row("y", 1e-3, 1, 0.7)]}
    jobs = [(j.design_id, j.lr, j.seed, j.role) for j in protocol.plan(grid, seeds, rows)]
    assert jobs == [("x", 3e-3, 2, "replicate"), ("x", 3e-3, 3, "replicate"), ("y", 3e-3, 1, "lr-grid")]
    assert protocol.runs_left(grid, seeds, rows) == 5  # x: 2 seeds; y: 1 lr + 2 seeds not yet planned
    rows.update({r["key"]: r for r in [_row("x", 3e-3, 2, 0.5), _row("y", 3e-3, 1, None)]})
    jobs = [(j.design_id, j.lr, j.seed) for j in protocol.plan(grid, seeds, rows)]
    assert jobs == [("x", 3e-3, 3), ("y", 1e-3, 2), ("y", 1e-3, 3)]  # a failed lr is never kept
    kept = protocol.kept_runs(grid, seeds, rows)
    assert kept["x"][0] == 3e-3 and [r["selection"]["score"] for r in kept["x"][1]] == [0.85, 0.5]
    both_failed = {r["key"]: r for r in [_row("x", 1e-3, 1, None), _row("x", 3e-3, 1, None)]}
    assert protocol.plan({"x": grid["x"]}, seeds, both_failed) == []
    assert protocol.runs_left({"x": grid["x"]}, seeds, both_failed) == 0


def test_an_lr_tie_is_broken_by_selection_loss_then_the_smaller_lr() -> None:
    assert protocol.pick_lr({1e-3: _row("x", 1e-3, 1, 0.8, loss=0.4), 3e-3: _row("x", 3e-3, 1, 0.8, loss=0.3)}) == 3e-3
    assert protocol.pick_lr({1e-3: _row("x", 1e-3, 1, 0.8), 3e-3: _row("x", 3e-3, 1, 0.8)}) == 1e-3


def test_the_table_is_replaced_whole_and_refuses_a_torn_line(tmp_path: Path) -> None:
    table = tmp_path / "t.jsonl"
    append_row(table, {"key": "a", "v": 1})
    append_row(table, {"key": "b", "v": [1, 2]})
    assert read_rows(table) == [{"key": "a", "v": 1}, {"key": "b", "v": [1, 2]}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]  # no temporary file left behind
    table.write_text(table.read_text() + '{"key": "c", "v"\n')
    with pytest.raises(ValueError, match=r"t.jsonl:3: each line must be one JSON object, got invalid JSON"):
        read_rows(table)


def test_one_runner_per_table(tmp_path: Path) -> None:
    table = tmp_path / "t.jsonl"
    with exclusive(table):
        with pytest.raises(RuntimeError, match=r"another runner holds .*t.jsonl.lock: one runner per table"):
            with exclusive(table):
                pass
    with exclusive(table):  # released
        pass


def test_designs_round_trip_through_the_row_form() -> None:
    for d in load_study().designs.values():
        assert type(d.design).from_dict(json.loads(json.dumps(d.design.to_dict()))) == d.design
    assert copy.deepcopy(load_study().designs["mam_m"].design).describe().splitlines() == [
        "head_attn: softmax, parallel, gated, l=8, prefix MLP 800",
        "ffn: relu, parallel, scaled s=4, r=56, init=lora, dropout=0.1"]
