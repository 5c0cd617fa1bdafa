"""YAML design spaces: pinned schema errors, every branch valid, seeded sampling, presets replayed exactly."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from finetune.designpoint import DesignPoint
from finetune.presets import get_preset
from finetune.tiny import tiny_config
from search.branches import BranchWalker, preset_params, validate
from search.driver import DefineByRunSpace
from search.spacefile import load_space, parse_space

SPACES = Path(__file__).resolve().parents[1] / "spaces"
FFN = {"form": ["none", "relu"], "size": [4, 8]}


def space_file(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sites": {"ffn": FFN}, "budget": 3}, r"unknown space key\(s\) \['budget'\]; expected some of"),
        ({"sites": {"fnn": FFN}}, r"a site name under sites must be one of \['head_attn', 'attn', 'ffn', 'query'.*got 'fnn'"),
        ({"sites": {"ffn": {**FFN, "rank": 4}}}, r"site ffn: unknown option\(s\) \['rank'\]"),
        ({"sites": {"ffn": {"form": ["relu"]}}}, r"site ffn: a budget 'size' \(l or r\) is required"),
        ({"sites": {"ffn": {**FFN, "size": []}}}, r"space key ffn.size: an empty list of choices leaves nothing"),
        ({"sites": {"ffn": {**FFN, "size": {"low": 64, "high": 8}}}},
         r"space key ffn.size: need low <= high .*got low=64, high=8"),
        ({"sites": {"ffn": {**FFN, "size": ["big"]}}}, r"space key ffn.size: expected int value\(s\), got 'big'"),
        ({"sites": {"ffn": {**FFN, "insertion": {"low": 1, "high": 2}}}},
         r"space key ffn.insertion: a range \{low, high\} needs a numeric option"),
        ({"sites": {"ffn": {**FFN, "form": ["relu", "softmax"]}}},
         r"ffn.form='softmax' is not allowed: site ffn: form=softmax normalises over prefix positions"),
        ({"sites": {"head_attn": {"form": ["softmax"], "size": 4, "insertion": ["sequential"]}}},
         r"head_attn.insertion: no listed value fits .* insertion must be parallel"),
        ({"sites": {"ffn": FFN}, "train": {"lerning_rate": 1e-3}}, r"train: unknown or reserved setting 'lerning_rate'"),
        ({"sites": {"ffn": FFN}, "train": {"lr": "fast"}}, r"space key train.lr: expected float value\(s\), got 'fast'"),
        ({"sites": {"ffn": FFN}, "presets": ["mam2"]}, r"unknown preset 'mam2'; expected one of"),
        ({"sites": {"ffn": FFN}, "presets": ["mam"]}, r"preset 'mam' modifies \['head_attn'\], which this space does"),
        ({"sites": {"ffn": FFN}, "presets": ["scaled_pa"]},
         r"preset 'scaled_pa' has ffn.size=512, outside this space's choices \[4, 8\]"),
        ({"sites": {"ffn": FFN}, "backbone": "full"}, r"backbone must be frozen or bias in a space"),
        ({}, r"the space is empty: list sites to search, or presets to evaluate"),
        ({"sites": {"ffn": {"form": "none"}}}, r"the design must modify something, but form can only be none"),
        ({"sites": {"ffn": FFN}, "tie": [["ffn", "query"]]}, r"tie groups need >= 2 sites listed under sites"),
    ],
)
def test_schema_errors_are_pinned(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_space(space_file(tmp_path, data))


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"space file '.*nope.yaml' does not exist"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [unclosed")
    with pytest.raises(ValueError, match=r"bad.yaml: not valid YAML"):
        load_space(bad)


@pytest.mark.parametrize("name", ["full", "paper", "smoke"])
def test_shipped_spaces_load_and_every_branch_is_a_valid_design(name: str) -> None:
    space = load_space(SPACES / f"{name}.yaml")
    seen: list[DesignPoint] = []
    branches = validate(space)  # walks every categorical branch of every site through DesignPoint's rules
    assert all(n >= 1 for n in branches.values())
    seen.append(space.sample(BranchWalker([]))[0])
    assert DesignPoint.from_params(seen[0].to_params()) == seen[0]  # what Optuna samples and MLflow records


def test_gated_is_offered_only_to_softmax_under_a_branch_name() -> None:
    space = parse_space({"sites": {"head_attn": {"form": ["softmax", "relu"], "size": 4,
                                                 "composition": ["add", "gated"]}}})
    assert validate(space) == {"head_attn": 3}  # softmax×{add, gated} + relu×{add}
    trial = optuna.trial.FixedTrial({"head_attn.form": "relu", "head_attn.composition|form=relu": "add"})
    design, _, _ = space.sample(trial)
    assert design.head_attn is not None and design.head_attn.composition.value == "add"


def test_seeded_sampling_gives_only_valid_points_and_is_reproducible() -> None:
    space = load_space(SPACES / "full.yaml")
    sampler = DefineByRunSpace(space, tiny_config("mbart"), "seq2seq")

    def first_points(seed: int, n: int) -> list[dict]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
        out = []
        for _ in range(n):
            trial = study.ask()
            point = sampler(trial)
            DesignPoint.from_dict(point["design"])  # valid by construction; raises otherwise
            assert 0 < point["fraction"] and point["counts"]["stored"] > 0
            out.append(point)
            study.tell(trial, [len(out) % 3, point["fraction"]])
        return out

    points = first_points(0, 200)
    assert len({str(p["design"]) for p in points}) > 150  # it explores
    assert first_points(0, 5) == points[:5]  # the same seed proposes the same first points


@pytest.mark.parametrize("preset", ["mam", "prefix", "lora_ffn", "pa_ffn", "scaled_pa", "houlsby", "pfeiffer"])
def test_presets_replay_exactly_through_the_compiled_space(preset: str) -> None:
    space = load_space(SPACES / "full.yaml")
    params = preset_params(space, preset)
    trial = optuna.trial.FixedTrial({**params, "train.lr": 1e-4})
    design, train, _ = space.sample(trial)
    assert design == get_preset(preset).design and train == {"lr": 1e-4}


def test_paper_space_evaluates_each_named_method() -> None:
    space = load_space(SPACES / "paper.yaml")
    assert space.preset_only and len(space.presets) == 20
    design, _, name = space.sample(optuna.trial.FixedTrial({"preset": "mam"}))
    assert name == "mam" and design == get_preset("mam").design


def test_ties_share_one_specification() -> None:
    space = load_space(SPACES / "smoke.yaml")
    design, _, _ = space.sample(optuna.trial.FixedTrial({
        "head_attn.form": "none", "ffn.form": "none", "query.form|modify": "identity", "query.size": 2,
        "train.lr": 1e-3}))
    assert design.query == design.value and design.query is not None and design.query.size == 2


SITE = "sites:\n  ffn: {form: relu, size: 2"


@pytest.mark.parametrize(("text", "message"), [
    (SITE + ", scale: 2.0, composition: scaled, dropout: {low: null, high: 0.5}}\n",
     r"space key ffn.dropout: the range's low must be a finite number, got None"),
    (SITE + ", composition: scaled, scale: {low: 1.0, high: .inf}}\n",
     r"space key ffn.scale: the range's high must be a finite number, got inf"),
    (SITE + ", dropout: {low: 0.0, high: 4.0}}\n",
     r"ffn.dropout: the range \[0, 4\] must be valid up to both ends, but its high end is not .*dropout must be in "
     r"\[0, 1\), got 4.0"),
    (SITE + ", composition: scaled, scale: {low: -1.0, high: 1.0}}\n", r"space key ffn.scale: the range \[-1, 1\] holds 0"),
    (SITE + "}\ntrain: {label_smoothing: {low: 0.0, high: 5.0}}\n",
     r"train.label_smoothing: label_smoothing must be in \[0, 1\), got 5.0"),
    (SITE + "}\ntrain: {max_length: -5}\n", r"train.max_length: max_length must be >= 1, got -5"),
    (SITE + "}\ntrain: {eval_cap: [-1, 8]}\n", r"train.eval_cap: eval_cap must be >= 1 .*got -1"),
    (SITE + "}\ntrain: {train_limit: {low: -3, high: 8}}\n", r"train.train_limit: train_limit must be >= 1"),
    (SITE + "}\ntie: query\n", r"tie must be a list, got str 'query'"),
    (SITE + "}\npresets: mam\n", r"presets must be a list, got str 'mam'"),
    ("sites: [ffn]\n", r"sites must be a mapping, got list \['ffn'\]"),
    (SITE + "}\ntrain: [lr]\n", r"train must be a mapping, got list \['lr'\]"),
    (SITE + "}\ntask: 3\n", r"task must be a string, got int 3"),
    (SITE + "}\nmodel: [a]\n", r"model must be a string, got list \['a'\]"),
    (SITE + "}\nprompt_length: {low: -2, high: 4}\n", r"prompt_length must be >= 0"),
    ("sites:\n  query: {form: identity, size: 2}\n  value: {form: identity, size: 8, dropout: 0.3}\n"
     "tie: [[query, value]]\n",
     r"site value is tied to query and takes its draw, so its options must equal query's, but \['dropout', 'size'\] "
     r"differ and would be ignored"),
    ("sites:\n  head_attn: {form: softmax, size: 2, insertion: [parallel, sequential]}\n",
     r"head_attn.insertion: listed value\(s\) \['sequential'\] can never be drawn \(site head_attn: the per-head "
     r"modification is computed from the attention query, so insertion must be parallel"),
    (SITE + ", scale: 2.0}\n", r"ffn.scale is read only by composition=scaled, which site ffn never draws"),
    ("sites:\n  ffn: {form: none, size: 2}\n  query: {form: identity, size: 2}\n",
     r"site ffn: form is only none, so its options \['size'\] are never used"),
])
def test_issue_12_space_defects_are_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"^{path}: {message}") as err:
        load_space(path)
    assert "\n" not in str(err.value)


def test_the_site_check_counts_exactly_the_branches_the_sampler_can_take() -> None:
    """SiteCheck walks one value per equivalence class; its branch count must equal the full walk's (sample_site
    driven through every categorical path), on random small sites."""
    import random

    from finetune.vocabulary import Representation
    from search.branches import SiteCheck, walk_branches
    from search.space import _dim, _site_kind, sample_site

    rng = random.Random(0)
    pools = {"form": ["none", "relu", "identity", "softmax", "gelu"], "composition": ["add", "scaled", "gated"],
             "insertion": ["sequential", "parallel"], "layernorm": ["none", "in", "out"], "init": ["bert", "lora"],
             "size": [1, 2, 4, 8], "scale": [1.0, 2.0, 4.0], "learn_scale": [False, True], "dropout": [0.0, 0.1],
             "prefix_mlp": [0, 8]}
    checked = 0
    while checked < 40:
        rep = rng.choice(list(Representation))
        opts = {o: rng.sample(v, rng.randint(1, len(v))) for o, v in pools.items() if o in ("form", "size")
                or rng.random() < 0.5}
        dims = {o: _dim(f"{rep.value}.{o}", v if len(v) > 1 else v[0], _site_kind(o)) for o, v in opts.items()}
        try:
            fast = SiteCheck(rep, dims).run(False)
        except ValueError:
            continue
        assert fast == walk_branches(lambda t: sample_site(t, rep, dims, False)), (rep, opts)
        checked += 1
