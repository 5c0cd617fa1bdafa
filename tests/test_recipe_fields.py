"""Every field of a task's recipe changes what a trial runs: one test per field (the recipe is the first layer of the
run configuration, so each test changes the *recipe* of a task and looks at what the trial then builds or does)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from finetune import tasks as T
from finetune.batching import SentenceBatches, TokenBatches
from finetune.checkpoint import load_trained
from finetune.data import toy_tokenizer
from finetune.designpoint import DesignPoint
from finetune.engine import TorchEngine
from finetune.loop import (
    Data,
    Tally,
    evaluate,
    loss_of,
    lr_schedule,
    make_optimizer,
    prepare_data,
    seed_everything,
    train,
    train_step,
)
from finetune.models import build
from finetune.reporter import ListReporter
from finetune.runconfig import resolve_run
from finetune.trainconfig import TrainConfig

PA = DesignPoint.from_dict({"ffn": {"form": "relu", "size": 8, "composition": "scaled", "scale": 4.0, "init": "lora"}})
FAST = dict(eval_cap=32)  # recipe changes that keep the toy trainings to a second or two


def recipe_run(monkeypatch: pytest.MonkeyPatch, task: str = "toy-cls", **recipe: object) -> TrainConfig:
    """The TrainConfig a trial of `task` gets when the task's recipe has `recipe` changed (nothing else set)."""
    t = T.get_task(task)
    changed = dataclasses.replace(t, train=dataclasses.replace(t.train, **recipe))
    monkeypatch.setitem(T._LOOKUP, t.name, changed)
    run = resolve_run(task)
    assert all(run.origin.get(k, "recipe") == "recipe" for k in recipe)
    return run.train


def groups(cfg: TrainConfig) -> list[dict]:
    return make_optimizer(torch.nn.Linear(4, 2), cfg).param_groups  # [weights (decay), biases (no decay)]


def lrs(cfg: TrainConfig, steps: list[int]) -> list[float]:
    opt = make_optimizer(torch.nn.Linear(4, 2), cfg)
    sched, out, t = lr_schedule(opt, cfg), [], 0
    for step in steps:
        while t < step:
            opt.step()
            sched.step()
            t += 1
        out.append(opt.param_groups[0]["lr"])
    return out


def test_lr(monkeypatch: pytest.MonkeyPatch) -> None:
    assert groups(recipe_run(monkeypatch, lr=2e-3))[0]["lr"] == 2e-3


def test_betas(monkeypatch: pytest.MonkeyPatch) -> None:
    assert groups(recipe_run(monkeypatch, betas=(0.8, 0.9)))[0]["betas"] == (0.8, 0.9)


def test_eps(monkeypatch: pytest.MonkeyPatch) -> None:
    assert groups(recipe_run(monkeypatch, eps=1e-6))[0]["eps"] == 1e-6


def test_weight_decay(monkeypatch: pytest.MonkeyPatch) -> None:
    weights, biases = groups(recipe_run(monkeypatch, weight_decay=0.1))
    assert (weights["weight_decay"], biases["weight_decay"]) == (0.1, 0.0)  # biases and LayerNorms never decay


def test_warmup_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = recipe_run(monkeypatch, warmup_ratio=0.1, max_steps=100, lr=1e-3)
    assert lrs(cfg, [0, 5, 10]) == pytest.approx([0.0, 5e-4, 1e-3])  # linear warmup over 10 steps


def test_schedule_and_lr_end(monkeypatch: pytest.MonkeyPatch) -> None:
    poly = recipe_run(monkeypatch, schedule="polynomial", lr_end=1e-5, max_steps=100, lr=1e-3)
    # HF polynomial, power 1: lr(t) = (lr - lr_end)(1 - t/T) + lr_end
    assert lrs(poly, [50, 100]) == pytest.approx([(1e-3 - 1e-5) * 0.5 + 1e-5, 1e-5])
    assert lrs(dataclasses.replace(poly, lr_end=0.0), [100]) == pytest.approx([0.0])
    assert lrs(dataclasses.replace(poly, schedule="cosine"), [50, 100]) == pytest.approx([5e-4, 0.0], abs=1e-12)
    assert lrs(dataclasses.replace(poly, schedule="constant"), [50, 100]) == pytest.approx([1e-3, 1e-3])


def test_max_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = recipe_run(monkeypatch, max_steps=5, eval_every=5, **FAST)
    rep = ListReporter()
    assert train(PA, cfg, rep).step == 5 and [r["step"] for r in rep.reports] == [5]
    assert lrs(dataclasses.replace(cfg, lr_end=0.0), [5]) == pytest.approx([0.0])  # the schedule ends there too


def test_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = recipe_run(monkeypatch, max_steps=None, epochs=3, batch_size=64)
    assert cfg.max_steps == 3 * (2048 // 64)  # toy-cls generates 2,048 training rows


def test_eval_every_and_eval_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    rep = ListReporter()
    train(PA, recipe_run(monkeypatch, max_steps=6, eval_every=2, **FAST), rep)
    assert [r["step"] for r in rep.reports] == [2, 4, 6]
    by_epoch = recipe_run(monkeypatch, max_steps=None, epochs=2, eval_every=1, eval_unit="epoch", batch_size=256)
    assert (by_epoch.max_steps, by_epoch.eval_every) == (16, 8)  # 2,048 rows // 256 = 8 steps per epoch


def test_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    task = T.get_task("toy-cls")
    data = prepare_data(task, toy_tokenizer(task), recipe_run(monkeypatch, batch_size=8))
    assert isinstance(data.batches, SentenceBatches) and len(data.batches.rows(0)) == 8


def test_max_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    task = T.get_task("toy-s2s")
    data = prepare_data(task, toy_tokenizer(task), recipe_run(monkeypatch, "toy-s2s", max_tokens=120,
                                                               batch_size=None))
    assert isinstance(data.batches, TokenBatches)
    for k in range(data.batches.per_epoch()):
        assert data.collate([data.train[i] for i in data.batches.rows(k)])["labels"].numel() <= 120


def test_batch_multiple(monkeypatch: pytest.MonkeyPatch) -> None:
    task = T.get_task("toy-s2s")
    cfg = recipe_run(monkeypatch, "toy-s2s", max_tokens=240, batch_size=None, batch_multiple=8)
    sizes = [len(b) for b in prepare_data(task, toy_tokenizer(task), cfg).batches.batches]
    assert all(n % 8 == 0 for n in sizes[:-1]) and sizes != [len(b) for b in prepare_data(
        task, toy_tokenizer(task), dataclasses.replace(cfg, batch_multiple=1)).batches.batches]


def test_grad_accum(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = recipe_run(monkeypatch, grad_accum=3, batch_size=4)
    calls = []

    class Engine:  # records the micro-batches one optimizer step trains on
        def __call__(self, **batch):
            calls.append(batch["input_ids"].shape[0])
            return type("Out", (), {"loss": torch.tensor(1.0, requires_grad=True)})()

        def backward(self, loss):
            pass

        def step(self):
            pass

    data = Data([{"input_ids": [0, 5, 2], "label": 0}] * 40, [], lambda rows: {
        "input_ids": torch.zeros(len(rows), 3, dtype=torch.long), "attention_mask": torch.ones(len(rows), 3),
        "labels": torch.zeros(len(rows), dtype=torch.long)}, SentenceBatches(40, 4, 0), [])
    train_step(Engine(), data, cfg, T.get_task("toy-cls"), 1, Tally(), "cpu")
    assert calls == [4, 4, 4]


def test_label_smoothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = recipe_run(monkeypatch, label_smoothing=0.2)
    logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    out = type("Out", (), {"logits": logits, "loss": F.cross_entropy(logits, labels)})()
    assert float(loss_of(out, labels, cfg.label_smoothing)) == pytest.approx(
        float(F.cross_entropy(logits, labels, label_smoothing=0.2)))
    assert float(loss_of(out, labels, cfg.label_smoothing)) != pytest.approx(float(out.loss))


def test_max_grad_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = recipe_run(monkeypatch, max_grad_norm=0.5)
    model = torch.nn.Linear(3, 1, bias=False)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    engine = TorchEngine(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), cfg, torch.device("cpu"))
    engine.backward((model(torch.full((1, 3), 100.0)) ** 2).sum())
    engine.step()
    assert float((model.weight - before).detach().norm()) == pytest.approx(0.5)  # the step is the clipped gradient


def test_select_metric_and_select_mode(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    task = T.get_task("toy-cls")
    kept = {}
    for metric, mode in (("loss", "min"), ("loss", "max"), ("accuracy", "max")):
        cfg = dataclasses.replace(recipe_run(monkeypatch, max_steps=6, eval_every=2, select_metric=metric,
                                             select_mode=mode, lr=1e-2, **FAST), out_dir=str(tmp_path / f"{metric}-{mode}"))
        rep = ListReporter()
        result = train(PA, cfg, rep)
        key = "eval_loss" if metric == "loss" else "metric.accuracy"
        values = [r[key] for r in rep.reports]
        best = values.index(min(values) if mode == "min" else max(values))  # ties: the earlier evaluation
        assert (result.selected_step, result.selected_score) == (rep.reports[best]["step"], rep.reports[best]["score"])
        assert rep.reports[-1]["score"] == result.score  # the last-step score is reported beside it
        kept[(metric, mode)] = (result.selected_step, rep.reports[best]["eval_loss"], cfg)
    assert kept[("loss", "min")][0] != kept[("loss", "max")][0]  # the mode changes which checkpoint counts
    step, eval_loss, cfg = next(v for v in kept.values() if v[0] < 6)
    seed_everything(cfg.seed)  # the same random tiny backbone the trial trained on
    model, tok = build(task, PA)
    load_trained(model, cfg.out_dir)  # the saved weights are the selected checkpoint's, not the last step's
    _, loaded_loss = evaluate(model, task, tok, prepare_data(task, tok, cfg), cfg, torch.device("cpu"))
    assert loaded_loss == pytest.approx(eval_loss, rel=1e-5)


def test_eval_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    task = T.get_task("toy-cls")
    assert len(prepare_data(task, toy_tokenizer(task), recipe_run(monkeypatch, eval_cap=40)).eval) == 40


@pytest.mark.parametrize("field", ["dropout", "attention_dropout"])
def test_dropout_and_attention_dropout(field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    task = T.get_task("toy-s2s")
    other = "attention_dropout" if field == "dropout" else "dropout"

    def outputs(p: float) -> tuple[float, bool]:
        cfg = recipe_run(monkeypatch, "toy-s2s", **{field: p, other: 0.0})  # tiny BART: activation dropout 0
        model, _ = build(task, PA, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout)
        model.train()
        ids = torch.randint(5, 20, (2, 6))
        same = torch.equal(model(input_ids=ids, labels=ids).logits, model(input_ids=ids, labels=ids).logits)
        return getattr(model.config, field), same

    assert outputs(0.0) == (0.0, True)  # nothing drops: deterministic even in train mode
    assert outputs(0.4) == (0.4, False)  # the recipe's probability reached the modules that run


def test_dropout_reaches_bert_like_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = recipe_run(monkeypatch, dropout=0.25, attention_dropout=0.05)
    model, _ = build(T.get_task("toy-cls"), PA, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout)
    assert (model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob) == (0.25, 0.05)
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} >= {0.25}


def test_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    task = T.get_task("toy-cls")
    a = prepare_data(task, toy_tokenizer(task), recipe_run(monkeypatch, seed=1)).batches.rows(0)
    b = prepare_data(task, toy_tokenizer(task), recipe_run(monkeypatch, seed=2)).batches.rows(0)
    assert a != b  # another permutation of the training rows (and another initialisation, from seed_everything)


def test_notes_are_documentation_not_a_setting() -> None:
    recipe = T.get_task("en-ro").train
    assert "notes" not in recipe.settings() and "label smoothing 0" in recipe.notes


def test_every_recipe_field_has_its_test() -> None:
    tested = {"lr", "betas", "eps", "weight_decay", "warmup_ratio", "schedule", "lr_end", "max_steps", "epochs",
              "eval_every", "eval_unit", "batch_size", "max_tokens", "batch_multiple", "grad_accum", "label_smoothing",
              "max_grad_norm", "select_metric", "select_mode", "eval_cap", "dropout", "attention_dropout", "seed",
              "notes"}
    assert {f.name for f in dataclasses.fields(T.Recipe)} == tested
