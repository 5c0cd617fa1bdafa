"""Replicate seeds and study mode without Ray trials: the searchers, their saved state, the grid, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.search_generator import SearchGenerator

from search.cli import main as search_main
from search.replicates import ReplicateSearcher, combine, replicate_seeds, with_replicate
from search.searcher import FullFidelityOptunaSearch
from search.spacefile import parse_space
from search.study import ConfigListSearcher, lr_free_key


def space(trial) -> dict:
    size = trial.suggest_categorical("ffn.size", [4, 8, 16])
    return {"design": {"ffn": {"form": "relu", "size": size}}, "train": {}, "fraction": size / 1000}


def replicated(seeds: int = 2) -> ReplicateSearcher:
    inner = FullFidelityOptunaSearch(space=space, max_steps=30, sampler=optuna.samplers.RandomSampler(seed=0))
    return ReplicateSearcher(inner, replicate_seeds(seeds, 42), max_steps=30)


def done(score: float, step: int = 30, fraction: float = 0.004, selected: float | None = None) -> dict:
    """A trial's last report: `score` at its last step, `selected_score` of its selected checkpoint."""
    return {"step": step, "score": score, "selected_score": score if selected is None else selected,
            "fraction": fraction}


def test_each_design_is_suggested_once_and_its_seeds_are_consecutive_trials() -> None:
    s = replicated(3)
    configs = [s.suggest(f"t{i}") for i in range(4)]
    assert [c["train"]["seed"] for c in configs] == [42, 43, 44, 42]
    assert configs[0]["design"] == configs[1]["design"] == configs[2]["design"]
    assert len({c["replicate"]["key"] for c in configs[:3]}) == 1 and configs[3]["replicate"]["index"] == 0
    assert [c["replicate"]["index"] for c in configs[:3]] == [0, 1, 2]
    assert len(s.searcher.study.trials) == 2  # Optuna was asked twice: once per design


def test_optuna_hears_of_a_design_once_every_seed_ended_with_the_mean() -> None:
    s = replicated(2)
    for i in range(6):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", done(0.80))
    assert s.searcher.study.trials[0].state == TrialState.RUNNING  # one seed is no result
    s.on_trial_complete("t1", done(0.90))
    first = s.searcher.study.trials[0]
    assert first.state == TrialState.COMPLETE and first.values == [pytest.approx(0.85), 0.004]
    s.on_trial_complete("t2", done(0.70))  # second design: one seed failed
    s.on_trial_complete("t3", {"failed": 1, "failure": "loss is nan", "step": 3, "fraction": 0.004})
    assert s.searcher.study.trials[1].state == TrialState.FAIL
    s.on_trial_complete("t4", done(0.70))  # third design: one seed stopped early
    s.on_trial_complete("t5", done(0.60, step=10))
    assert s.searcher.study.trials[2].state == TrialState.PRUNED
    assert [t.values for t in s.searcher.study.best_trials] == [[pytest.approx(0.85), 0.004]]


def test_combine_a_designs_seeds() -> None:
    # The optimizer is told the mean of the selected checkpoints' scores; the last steps' mean travels beside it.
    assert combine([(done(0.8, selected=0.9), False), (done(0.9, selected=1.0), False)], 30) == (
        {"fraction": 0.004, "selected_score": pytest.approx(0.95), "score": pytest.approx(0.85),
         "score_std": pytest.approx(0.0707107), "step": 30}, False)
    failed, _ = combine([(done(0.8), False), ({"failed": 1, "failure": "loss is nan", "step": 3}, False)], 30)
    assert failed["failed"] == 1 and failed["failure"] == "1 of 2 seeds failed: loss is nan" and failed["step"] == 3
    crashed, _ = combine([(done(0.8), False), (None, True)], 30)
    assert crashed["failure"] == "1 of 2 seeds failed: the trial raised"
    assert combine([({"over_budget": 1, "step": 0, "fraction": 0.5}, False)] * 2, 30)[0]["over_budget"] == 1
    assert combine([(done(0.8), False), (done(0.6, step=20), False)], 30)[0] == {"fraction": 0.004, "step": 20}
    with pytest.raises(ValueError, match=r"--seeds must be >= 1 \(replicates per design\), got 0"):
        replicate_seeds(0, 42)


def test_replicate_state_survives_a_restart_through_rays_search_generator(tmp_path: Path) -> None:
    gen = SearchGenerator(replicated(3))
    first = gen.searcher.suggest("t0")
    gen.save_to_dir(str(tmp_path), session_str="s")
    again = SearchGenerator(replicated(3))
    again.restore_from_dir(str(tmp_path))
    nxt = again.searcher.suggest("t1")  # the design's second seed, not a new design
    assert nxt["design"] == first["design"] and nxt["train"]["seed"] == 43
    assert len(again.searcher.searcher.study.trials) == 1


def config(size: int, lr: float) -> dict:
    return {"design": {"ffn": {"form": "relu", "size": size}}, "train": {"lr": lr}, "fraction": size / 1000}


def test_a_study_lists_every_config_under_every_seed_then_finishes() -> None:
    s = ConfigListSearcher([config(4, 1e-3), config(8, 1e-3)], [0, 1], max_steps=30)
    out = [s.suggest(f"t{i}") for i in range(5)]
    assert [(c["design"]["ffn"]["size"], c["train"]["seed"]) for c in out[:4]] == [(4, 0), (4, 1), (8, 0), (8, 1)]
    assert out[4] == Searcher.FINISHED


def test_seeds_at_best_lr_train_every_lr_once_then_the_other_seeds_at_the_best(tmp_path: Path) -> None:
    configs = [config(4, 1e-3), config(4, 3e-3), config(8, 1e-3), config(8, 3e-3)]
    s = ConfigListSearcher(configs, [0, 1, 2], max_steps=30, best_lr=True)
    first = [s.suggest(f"t{i}") for i in range(4)]
    assert [c["train"]["seed"] for c in first] == [0] * 4 and s.suggest("t4") is None  # waits for the lrs
    assert lr_free_key(first[0]) == lr_free_key(first[1]) != lr_free_key(first[2])
    s.on_trial_complete("t0", done(0.70))
    s.on_trial_complete("t1", done(0.75))  # r=4: 3e-3 is better
    s.on_trial_complete("t2", done(0.80))
    s.on_trial_complete("t3", done(0.80))  # r=8: a tie goes to the lr listed first
    path = tmp_path / "study.pkl"
    s.save(str(path))
    restored = ConfigListSearcher([], [0], max_steps=30)
    restored.restore(str(path))
    rest = [restored.suggest(f"t{i}") for i in range(4, 8)]
    assert [(c["design"]["ffn"]["size"], c["train"]["lr"], c["train"]["seed"]) for c in rest] == [
        (4, 3e-3, 1), (4, 3e-3, 2), (8, 1e-3, 1), (8, 1e-3, 2)]
    assert restored.suggest("t8") == Searcher.FINISHED


def test_a_seed_is_never_a_searched_value() -> None:
    raw = {"sites": {"ffn": {"form": "relu", "size": 4}}, "train": {"seed": [1, 2, 3]}}
    with pytest.raises(ValueError, match=r"train.seed is a replicate seed, never a searched value .* got \[1, 2, 3\]; "
                                         r"fix it \(seed: 42\) and pass --seeds N"):
        parse_space(raw)
    assert parse_space({**raw, "train": {"seed": 7}}).train["seed"].values == (7,)


def test_the_result_memo_keys_on_the_seed(tmp_path: Path) -> None:
    from finetune.trainconfig import TrainConfig
    from search.trainable import ResultMemo

    seeded = with_replicate(config(4, 1e-3), seed=5, index=0, count=2)
    cfg = TrainConfig.for_task("toy-cls", max_steps=4, **seeded["train"])
    memo = ResultMemo(tmp_path, seeded, cfg, "a")
    assert ResultMemo(tmp_path, seeded, dataclasses.replace(cfg, seed=6), "b").path != memo.path
    assert ResultMemo(tmp_path, seeded, cfg, "c").path == memo.path


def write_space(tmp_path: Path, lr: object) -> Path:
    lora = {"form": "identity", "size": 16, "composition": "scaled", "scale": 2.0, "init": "lora", "dropout": 0.1}
    data = {"task": "toy-cls", "sites": {"ffn": {"form": ["none", "relu"], "size": [2, 16], "composition": "scaled",
                                                 "scale": 2.0, "init": "lora"}, "query": lora, "value": lora},
            "tie": [["query", "value"]], "train": {"max_steps": 4, "lr": lr}, "presets": ["lora_attn"]}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_grid_is_every_combination_of_listed_values_presets_included(tmp_path: Path) -> None:
    from search.cli import build_parser
    from search.driver import make_searcher, plan

    args = build_parser().parse_args(["--space", str(write_space(tmp_path, [1e-3, 3e-3])), "--sampler", "grid",
                                      "--seeds", "2"])
    p = plan(args)
    assert args.scheduler == "none" and p.schedule.kind == "none"
    searcher, trials = make_searcher(p), p.num_samples
    configs = searcher._queue[::2]
    # ffn none, r=2, r=16 (with LoRA on query and value) x lr in {1e-3, 3e-3}; the ffn-less one is the lora_attn preset
    assert trials == 12 and len(configs) == 6
    assert sorted((c["design"].get("ffn", {}).get("size", 0), c["train"]["lr"]) for c in configs) == sorted(
        [(2, 1e-3), (2, 3e-3), (16, 1e-3), (16, 3e-3), (0, 1e-3), (0, 3e-3)])
    assert [c["preset"] for c in configs if "ffn" not in c["design"]] == ["lora_attn", "lora_attn"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sampler", "grid"], "error: --sampler grid trains every combination of listed values, but "
                                "train.lr = {low: 0.001, high: 0.01} is a range; list the values to study instead"),
        (["--sampler", "grid", "--scheduler", "pareto"],
         "error: a study (--sampler grid, or a re-evaluated front) trains every design to full fidelity, so it cannot "
         "use early stopping; got --scheduler pareto: drop it"),
        (["--sampler", "grid", "--num-samples", "4"],
         "error: a study trains every configuration it lists (x --seeds); got --num-samples 4"),
        (["--seeds-at-best-lr"], "error: --seeds-at-best-lr chooses each design's lr among a grid's listed values"),
        (["--seeds", "0"], "error: --seeds must be >= 1 (replicates per design), got 0"),
    ],
)
def test_study_input_errors_come_before_ray(extra: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    space = write_space(tmp_path, {"low": 1e-3, "high": 1e-2, "log": True})
    code = search_main(["--space", str(space), "--storage", str(tmp_path / "runs"), "--tracking-uri",
                        f"sqlite:///{tmp_path / 'mlflow.db'}", *extra])
    assert code == 2 and message in capsys.readouterr().out
    import ray

    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


def test_a_front_is_priced_again_on_the_task_it_is_reevaluated_on(tmp_path: Path) -> None:
    from analysis.load import runs_to_frame
    from analysis.synthetic import synthetic_fraction, synthetic_runs
    from finetune.accounting import count_params
    from finetune.designpoint import DesignPoint
    from search.cli import build_parser
    from search.driver import make_searcher, plan
    from search.reevaluate import front_configs

    source = runs_to_frame(synthetic_runs(30, seed=5))  # a RoBERTa-base-sized search
    front = front_configs(source)
    assert front and all("seed" not in c["train"] and c["train"]["lr"] > 0 for c in front)
    args = build_parser().parse_args(["--space", str(write_space(tmp_path, 1e-3)), "--seeds", "2"])
    args.front = front
    p = plan(args)  # toy-cls on its tiny RoBERTa
    searcher, trials = make_searcher(p), p.num_samples
    assert trials == 2 * len(front) and args.scheduler == "none"
    for c, f in zip(searcher._queue[::2], front):
        design = DesignPoint.from_dict(c["design"])
        assert c["design"] == f["design"] and c["train"]["lr"] == f["train"]["lr"]
        assert c["fraction"] == count_params(design, p.define_by_run.config, "classification").fraction
        assert c["fraction"] != pytest.approx(synthetic_fraction(design))
