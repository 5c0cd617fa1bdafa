"""Fuzzed spaces (issue 12, item 8): a few hundred seeded mutations of a small valid space, each either accepted and
samplable into valid designs, or refused with one short line naming the file (and the key the mutation touched),
in well under a second: never a traceback, a hang, or an error after sampling. A sample of the refused ones goes
through the search command itself, which must stop with exit code 2 before Ray would start."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from finetune.trainconfig import check_setting
from search.spacefile import load_space

SEED, CASES = 12, 300
BASE: dict[str, Any] = {
    "task": "toy-cls",
    "sites": {
        "head_attn": {"form": ["none", "softmax"], "size": [2, 4], "composition": "gated", "prefix_mlp": [0, 8]},
        "ffn": {"form": ["none", "relu"], "size": {"low": 2, "high": 8}, "insertion": ["sequential", "parallel"],
                "composition": ["add", "scaled"], "scale": {"low": 0.5, "high": 4.0, "log": True}, "dropout": 0.1},
        "query": {"form": ["none", "identity"], "size": [2, 16], "composition": "scaled", "scale": 2.0,
                  "init": "lora", "dropout": 0.1},
        "value": {"form": ["none", "identity"], "size": [2, 16], "composition": "scaled", "scale": 2.0,
                  "init": "lora", "dropout": 0.1},
    },
    "tie": [["query", "value"]],
    "train": {"max_steps": 4, "eval_every": 2, "lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
              "dropout": [0.0, 0.1], "label_smoothing": {"low": 0.0, "high": 0.2}},
    "presets": ["lora_attn"],
}
BAD_VALUES: list[Any] = [
    None, -1, 0, 4.0, 1.0, float("inf"), float("nan"), 10**30, True, "x", "", "softmax", "sequential", "scaled",
    [], {}, [1, "a"], [None], [[["deep"]]], {"low": None, "high": 3}, {"low": 1, "high": "z"},
    {"low": 0, "high": 5.0}, {"low": -1, "high": 1e9}, {"low": 1, "high": float("inf")}, {"low": 3, "high": 1},
    {"low": 0.1, "high": 0.9, "log": "yes"}, {"lo": 1}, ["relu", "softmax"], ["parallel", "sequential"],
    [2, 2], [0.0, 4.0], [["query", "value"], ["value", "ffn"]], ["mam2"], {"ffn": 1},
]
TEXT_MUTATIONS = {
    "non-UTF-8 byte": lambda t, r: t[: r.randrange(len(t))] + "\udcff" + t[r.randrange(len(t)):],
    "bad float tag": lambda t, r: t + "prompt_length: !!float abc\n",
    "bad int tag": lambda t, r: t + "prompt_length: !!int x1\n",
    "alias bomb": lambda t, r: t + "x0: &a0 [q, q, q, q, q, q, q, q, q]\n" + "".join(
        f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)),
    "deep nesting": lambda t, r: t + "prompt_length: " + "[" * 1000 + "]" * 1000 + "\n",
    "deep mapping": lambda t, r: t + "prompt_length: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
    "truncated": lambda t, r: t[: r.randrange(1, len(t))],
    "stray character": lambda t, r: insert_at(t, r.randrange(len(t)), r.choice(":[]{}&*!|>'\"%@`\t-")),
}


def insert_at(text: str, i: int, char: str) -> str:
    return text[:i] + char + text[i:]


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a nested space (list items by index)."""
    out = [prefix] if prefix else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out += paths(v, (*prefix, k))
    return out


def mutate(rng: random.Random) -> tuple[str, bytes, tuple]:
    """(what was done, the file's bytes, the key path it touched: () when the mutation names no key)."""
    space = copy.deepcopy(BASE)
    if rng.random() < 0.25:
        kind = rng.choice(sorted(TEXT_MUTATIONS))
        text = TEXT_MUTATIONS[kind](yaml.safe_dump(space), rng)
        return kind, text.encode("utf-8", "surrogateescape"), ()
    path = rng.choice(paths(space))
    parent = space
    for k in path[:-1]:
        parent = parent[k]
    action = rng.choice(["replace", "replace", "replace", "delete", "add"])
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
        return f"delete {path}", yaml.safe_dump(space).encode(), ()
    if action == "add" and isinstance(parent, dict):
        parent["bogus_key"] = 1
        return f"add bogus_key under {path[:-1]}", yaml.safe_dump(space).encode(), (*path[:-1], "bogus_key")
    value = copy.deepcopy(rng.choice(BAD_VALUES))
    parent[path[-1]] = value
    return f"{path} = {value!r}", yaml.dump(space).encode(), path


def assert_samplable(path: Path) -> None:
    """An accepted space samples only valid designs and valid training settings (no error after sampling)."""
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        design, train, _ = space.sample(study.ask())  # DesignPoint's constructor checks every rule
        assert design.sites() or design.prompt_length or design.backbone.value != "frozen"
        for key, value in train.items():
            check_setting(key, value)


def outcomes(tmp_path: Path) -> list[tuple[str, Path, tuple, str | None, float]]:
    rng = random.Random(SEED)
    out = []
    for i in range(CASES):
        what, data, touched = mutate(rng)
        path = tmp_path / f"space_{i:03d}.yaml"
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            assert_samplable(path)
            error = None
        except ValueError as err:
            error = str(err)
        out.append((what, path, touched, error, time.perf_counter() - start))
    return out


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path, tuple, str | None, float]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return outcomes(tmp_path_factory.mktemp("fuzz"))


def test_the_unmutated_space_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert_samplable(path)


def test_every_fuzzed_space_is_accepted_or_refused_in_one_short_line(fuzzed: list) -> None:
    refused = [c for c in fuzzed if c[3] is not None]
    assert 0.5 * CASES < len(refused) < CASES  # the mutations mostly break the space, and some survive
    for what, path, touched, error, seconds in fuzzed:
        assert seconds < 3.0, (what, seconds)  # the 102-choice product and alias bombs took minutes
        if error is None:
            continue
        assert "\n" not in error and len(error) < 3000, (what, error[:300])
        assert error.startswith(f"{path}: "), (what, error)
        names = [str(k) for k in touched if isinstance(k, str)]
        if names:  # the key the mutation touched (or, when it broke a preset or a tie, the site it sits in)
            assert any(n in error for n in names), (what, error)


def test_the_text_mutations_each_have_their_own_message(tmp_path: Path) -> None:
    base = yaml.safe_dump(BASE)
    expected = {"non-UTF-8 byte": r"not UTF-8 text \(byte 0xff on line \d+\); save the file as UTF-8",
                "bad float tag": r"a tagged value does not convert \(could not convert string to float: 'abc'\)",
                "alias bomb": r"expands to more than 100,000 values through YAML aliases",
                "deep nesting": r"nested deeper than 32 levels", "deep mapping": r"nested deeper than 32 levels"}
    for kind, pattern in expected.items():
        path = tmp_path / "space.yaml"
        path.write_bytes(TEXT_MUTATIONS[kind](base, random.Random(1)).encode("utf-8", "surrogateescape"))
        with pytest.raises(ValueError, match=rf"^{path}: .*{pattern}"):
            load_space(path)


def test_refused_spaces_stop_the_search_command_before_ray(fuzzed: list, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    import search.tuner
    from search.cli import main

    def ray_started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray would have started")

    monkeypatch.setattr(search.tuner, "fit", ray_started)
    refused = [c for c in fuzzed if c[3] is not None][::12]
    for what, path, _, error, _ in refused:
        rc = main(["--space", str(path), "--storage", str(tmp_path / "runs"), "--tracking-uri",
                   f"sqlite:///{tmp_path / 'never.db'}"])
        out = capsys.readouterr().out.strip()
        assert rc == 2 and out == f"error: {error}", (what, out[:300])
    assert not (tmp_path / "never.db").exists()
