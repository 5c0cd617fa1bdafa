"""The training loop on tiny models: learning, every task type, checkpoints, resume, failures, DeepSpeed on CPU."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.trainer_pt_utils import get_length_grouped_indices

from finetune import loop
from finetune.batching import SentenceBatches
from finetune.checkpoint import load_trained, read_design
from finetune.data import word_tokenizer
from finetune.designpoint import DesignPoint
from finetune.loop import train
from finetune.models import build
from finetune.presets import get_preset
from finetune.reporter import REPORT_KEYS, ListReporter, TrialFailure
from finetune.tasks import get_task
from finetune.tiny import tiny_config
from finetune.trainconfig import TrainConfig
from finetune.trial import main as trial_main

FAST = dict(batch_size=16, eval_cap=64)
PA = DesignPoint.from_dict({"ffn": {"form": "relu", "size": 8, "composition": "scaled", "scale": 4.0, "init": "lora"}})


def test_loss_goes_down_on_the_generated_classification_task() -> None:
    rep = ListReporter()
    train(get_preset("full").design, TrainConfig.for_task("toy-cls", max_steps=100, eval_every=50, lr=3e-3, **FAST),
          rep)
    assert rep.reports[-1]["loss"] < 0.5 * rep.reports[0]["loss"]
    assert rep.reports[-1]["score"] >= 0.9
    for r in rep.reports:
        assert set(REPORT_KEYS) <= set(r) and r["metric.accuracy"] == r["score"]


def test_loss_goes_down_on_the_generated_seq2seq_task() -> None:
    rep = ListReporter()
    train(get_preset("full").design, TrainConfig.for_task("toy-s2s", max_steps=150, eval_every=50, lr=3e-3,
                                                          num_beams=1, **FAST), rep)
    assert rep.reports[-1]["loss"] < 0.75 * rep.reports[0]["loss"]


PAIRS = [("the house is big", "casa este mare"), ("the cat is small", "pisica este mică"),
         ("the dog is big", "câinele este mare"), ("the house is small", "casa este mică")] * 4


@pytest.fixture()
def tiny_bart_dir(tmp_path: Path) -> Path:
    """A local checkpoint folder (tiny BART + word tokenizer): the path users with their own models take."""
    words = sorted({w for pair in PAIRS for s in pair for w in s.split()})
    tok = word_tokenizer(words)
    folder = tmp_path / "tiny-bart"
    # 512 positions: the xsum recipe truncates sources at 512 tokens, which the model must be able to embed
    config = tiny_config("bart", vocab_size=len(tok), max_positions=512)
    AutoModelForSeq2SeqLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("task", ["en-ro", "xsum"])
def test_translation_and_summarization_from_local_files(task: str, tiny_bart_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation"):
        with open(data / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for en, ro in PAIRS:
                row = {"en": en, "ro": ro} if task == "en-ro" else {"document": en, "summary": ro, "id": "0"}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    rep = ListReporter()
    cfg = TrainConfig.for_task(task, model=str(tiny_bart_dir), data_dir=str(data), max_steps=60, eval_every=30,
                               lr=3e-3, num_beams=2, batch_size=8, label_smoothing=0.0, max_grad_norm=1.0)
    train(get_preset("full").design, cfg, rep)
    assert rep.reports[-1]["loss"] < 0.75 * rep.reports[0]["loss"]
    metric_keys = {"metric.bleu_ro"} if task == "en-ro" else {"metric.rouge1", "metric.rouge2", "metric.rougeLsum"}
    assert metric_keys <= set(rep.reports[-1])


def test_checkpoint_save_and_load_reproduces_logits_exactly(tmp_path: Path) -> None:
    cfg = TrainConfig.for_task("toy-cls", max_steps=12, eval_every=6, lr=1e-2, out_dir=str(tmp_path / "t"), **FAST)
    design = get_preset("mam_glue").design
    result = train(design, cfg)
    files = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert files == ["design.json", "petl.safetensors"]  # resume state is dropped once the trial finished
    assert read_design(tmp_path / "t")[0] == design
    loop.seed_everything(cfg.seed)  # a fresh base model: the same random init as the trial's
    fresh, _ = build(cfg.resolved_task(), design)
    load_trained(fresh, tmp_path / "t")
    ids = torch.randint(5, 30, (3, 9))
    trained, fresh = result.model.eval(), fresh.eval()
    assert torch.equal(fresh(input_ids=ids).logits, trained(input_ids=ids).logits)


def test_resume_continues_at_the_right_step_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    class StopAfterFirst(ListReporter):
        def report(self, metrics):  # the driver being killed right after the first evaluation
            super().report(metrics)
            raise KeyboardInterrupt

    kwargs = dict(max_steps=10, eval_every=5, lr=1e-2, **FAST)
    design = get_preset("mam_glue").design
    full = train(design, TrainConfig.for_task("toy-cls", out_dir=str(tmp_path / "full"), **kwargs))
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(design, TrainConfig.for_task("toy-cls", out_dir=str(out), **kwargs), StopAfterFirst())
    assert (out / "resume" / "state.pt").is_file()
    rep = ListReporter()
    resumed = train(design, TrainConfig.for_task("toy-cls", out_dir=str(out), **kwargs), rep)
    # The step-5 evaluation is reported again from the resume point (the driver may never have received it; the
    # receivers keep one report per step), then training continues at step 6.
    assert [r["step"] for r in rep.reports] == [5, 10]
    assert rep.reports[1]["score"] == full.score
    # The selection made before the interruption survives it: same checkpoint, same score, same weights kept.
    assert (resumed.selected_step, resumed.selected_score) == (full.selected_step, full.selected_score)
    ids = torch.randint(5, 30, (3, 9))  # both models are the selected checkpoint, saved folded; compare outputs
    torch.testing.assert_close(resumed.model.eval()(input_ids=ids).logits, full.model.eval()(input_ids=ids).logits,
                               atol=1e-5, rtol=1e-5)


def test_an_evaluation_whose_report_never_left_the_trial_is_reported_on_resume(tmp_path: Path) -> None:
    """Issue 13 defect 3: the resume point of step 5 was written, then the trial was stopped before its step-5
    report reached the driver; before the fix the resumed trial reported only step 10 and step 5 was lost."""
    class KilledBeforeReport(ListReporter):
        def report(self, metrics):
            raise KeyboardInterrupt  # SIGINT between save_resume and the report

    kwargs = dict(max_steps=10, eval_every=5, lr=1e-2, **FAST)
    design = get_preset("mam_glue").design
    full_rep = ListReporter()
    train(design, TrainConfig.for_task("toy-cls", out_dir=str(tmp_path / "full"), **kwargs), full_rep)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(design, TrainConfig.for_task("toy-cls", out_dir=str(out), **kwargs), KilledBeforeReport())
    rep = ListReporter()
    train(design, TrainConfig.for_task("toy-cls", out_dir=str(out), **kwargs), rep)
    assert [r["step"] for r in rep.reports] == [5, 10]
    for got, want in zip(rep.reports, full_rep.reports):  # the same evaluations, bit for bit (elapsed time aside)
        assert {k: v for k, v in got.items() if k not in ("elapsed_s", "tokens_per_s")} == \
            {k: v for k, v in want.items() if k not in ("elapsed_s", "tokens_per_s")}


def test_nan_loss_ends_the_trial_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop.loss_of
    calls = {"n": 0}

    def poisoned(out, labels, smoothing):
        calls["n"] += 1
        loss = real(out, labels, smoothing)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop, "loss_of", poisoned)
    rep = ListReporter()
    with pytest.raises(TrialFailure, match=r"trial failed at step 3: loss is nan \(not finite\)"):
        train(PA, TrainConfig.for_task("toy-cls", max_steps=10, eval_every=5, **FAST), rep)
    assert rep.reports == []  # nothing reported as if it were a score


def test_diverging_loss_ends_the_trial_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop.loss_of
    calls = {"n": 0}

    def exploding(out, labels, smoothing):
        calls["n"] += 1
        return real(out, labels, smoothing) * (100.0 if calls["n"] > 15 else 1.0)

    monkeypatch.setattr(loop, "loss_of", exploding)
    with pytest.raises(TrialFailure, match=r"loss diverged: smoothed loss .* > 10 × its best"):
        train(PA, TrainConfig.for_task("toy-cls", max_steps=40, eval_every=40, **FAST))


@pytest.mark.slow
def test_deepspeed_engine_on_cpu_matches_the_plain_pytorch_loop() -> None:
    kwargs = dict(max_steps=6, eval_every=3, lr=1e-2, grad_accum=2, **FAST)
    ds_rep, torch_rep = ListReporter(), ListReporter()
    ds = train(PA, TrainConfig.for_task("toy-cls", engine="deepspeed", **kwargs), ds_rep)
    pt = train(PA, TrainConfig.for_task("toy-cls", engine="torch", **kwargs), torch_rep)
    assert (ds.engine, pt.engine) == ("DeepSpeedEngine", "TorchEngine")
    assert [round(r["loss"], 5) for r in ds_rep.reports] == [round(r["loss"], 5) for r in torch_rep.reports]


@pytest.mark.slow
def test_deepspeed_bf16_accumulates_gradients_in_fp32() -> None:
    from finetune.engine import deepspeed_config, make_engine

    cfg = TrainConfig.for_task("toy-cls", engine="deepspeed", precision="bf16", grad_accum=2, max_steps=4,
                               eval_every=4, **FAST)
    ds = deepspeed_config(cfg, 8)
    assert ds["zero_optimization"]["stage"] == 1 and ds["data_types"] == {"grad_accum_dtype": "fp32"}
    assert "data_types" not in deepspeed_config(dataclasses.replace(cfg, zero_stage=2), 8)
    model = torch.nn.Linear(4, 1)
    engine = make_engine(model, torch.optim.AdamW(model.parameters(), lr=1e-3), None, cfg)
    assert type(engine.optimizer).__name__ == "BF16_Optimizer"  # fp32 grads + master weights
    rep = ListReporter()
    assert train(PA, cfg, rep).engine == "DeepSpeedEngine"
    assert len(rep.reports) == 1 and math.isfinite(rep.reports[0]["loss"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(task="cola"), r"unknown task 'cola'; expected one of"),
        (dict(task="toy-cls", max_steps=0), r"max_steps must be >= 1, got 0"),
        (dict(task="toy-cls", engine="jax"), r"engine must be one of \['auto', 'torch', 'deepspeed'\], got 'jax'"),
        (dict(task="toy-cls", lerning_rate=1e-3), r"unknown training setting\(s\) \['lerning_rate'\]"),
    ],
)
def test_bad_run_config_is_rejected_before_training(overrides: dict, message: str) -> None:
    task = overrides.pop("task")
    with pytest.raises(ValueError, match=message):
        TrainConfig.for_task(task, **overrides)


def test_a_design_that_does_not_fit_the_model_is_rejected_before_weights_load(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "gpt2"
    AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab_size=64)).save_pretrained(folder)
    word_tokenizer(["a", "b"]).save_pretrained(folder)
    with pytest.raises(ValueError, match=r"task 'en-ro' is sequence-to-sequence but model type 'gpt2'"):
        build(get_task("en-ro"), PA, str(folder))
    with pytest.raises(ValueError, match=r"prompt tuning needs an encoder input .* 'gpt2' is decoder-only"):
        build(get_task("en-ro"), get_preset("prompt_tuning").design, str(folder))


def test_missing_columns_in_local_files_fail_before_training(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("text\tlabel\nfine movie\t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine movie\t1\n")
    with pytest.raises(ValueError, match=r"train.tsv.*sentence"):
        train(PA, TrainConfig.for_task("sst2", model="minilm", data_dir=str(tmp_path), max_steps=1))


def test_single_trial_command_prints_a_one_line_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = trial_main(["--preset", "lora_attn", "--dataset", "toy-cls", "--max-steps", "4", "--eval-every", "2",
                       "--set", "batch_size=8", "--set", "eval_cap=16", "--out", str(tmp_path / "o"), "--json"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 4 and 0 <= line["score"] <= 1 and line["out"] == str(tmp_path / "o")
    assert trial_main(["--preset", "mam", "--dataset", "toy-cls", "--set", "lr"]) == 2
    assert "--set expects KEY=VALUE, got 'lr'" in capsys.readouterr().err


def test_minilm_classification_runs_offline() -> None:
    model, tok = build(get_task("sst2"), PA, "minilm")
    assert model.config.model_type == "bert" and tok("a fine film")["input_ids"][0] == tok.cls_token_id
    with torch.no_grad():  # the packaged weights, injected, classify: one logit per SST-2 label
        assert model(**tok("a fine film", return_tensors="pt")).logits.shape == (1, 2)


def test_the_final_checkpoint_is_written_before_the_last_report(tmp_path: Path) -> None:
    class StopAtLast(ListReporter):  # Ray's ASHA stops a trial at max_t from inside the report call
        def report(self, metrics):
            super().report(metrics)
            if metrics["step"] == 6:
                raise SystemExit(0)

    with pytest.raises(SystemExit):
        train(PA, TrainConfig.for_task("toy-cls", max_steps=6, eval_every=3, out_dir=str(tmp_path / "t"), **FAST),
              StopAtLast())
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["design.json", "petl.safetensors"]


def test_length_grouped_batches_pad_to_their_own_length() -> None:
    torch.manual_seed(0)
    lengths = (3 + torch.distributions.Geometric(0.1).sample((3200,)).clamp(max=60)).int().tolist()  # SST-2-like
    n, size = len(lengths), 32
    grouped, plain = SentenceBatches(n, size, 5, lengths), SentenceBatches(n, size, 5)
    epoch = [grouped.rows(k) for k in range(n // size)]
    assert sorted(i for b in epoch for i in b) == list(range(n))  # each row once per epoch
    assert [i for b in epoch for i in b] == get_length_grouped_indices(lengths, size,
                                                                       generator=torch.Generator().manual_seed(5))
    padded = lambda order: sum(size * max(lengths[i] for i in order.rows(k)) for k in range(n // size))  # noqa: E731
    assert padded(grouped) < 0.6 * padded(plain)
    assert grouped.rows(n // size) != epoch[0]  # the next epoch is grouped again from a new permutation
    # Two ranks split one global batch of 2 x size rows, grouped as one
    both = grouped.rows(0, 0, 2) + grouped.rows(0, 1, 2)
    assert len(both) == 2 * size and sorted(both) == sorted(SentenceBatches(n, 2 * size, 5, lengths).rows(0))
    with pytest.raises(ValueError, match=r"lengths must give one length per training row \(10\), got 3"):
        SentenceBatches(10, 2, 0, [1, 2, 3])


def test_group_by_length_groups_the_loop_s_training_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.trainer_pt_utils as pt_utils

    seen = []
    real = pt_utils.get_length_grouped_indices

    def spy(lengths, size, generator=None):
        seen.append((len(lengths), size))
        return real(lengths, size, generator=generator)

    monkeypatch.setattr(pt_utils, "get_length_grouped_indices", spy)
    train(PA, TrainConfig.for_task("toy-cls", max_steps=3, eval_every=3, group_by_length=True, **FAST))
    assert seen == [(2048, FAST["batch_size"])]  # toy-cls has 2,048 training rows; one epoch ordered once


def test_a_design_with_no_site_trains_the_classification_head_alone() -> None:
    head = DesignPoint()  # frozen backbone, no site, no prompt: a linear probe, the control PETL must beat
    res = train(head, TrainConfig.for_task("toy-cls", max_steps=2, eval_every=2, **FAST))
    trainable = {n: p.numel() for n, p in res.model.named_parameters() if p.requires_grad}
    assert sorted(trainable) == ["classifier.dense.bias", "classifier.dense.weight", "classifier.out_proj.bias",
                                 "classifier.out_proj.weight"]
    # tiny RoBERTa head, d=32, 2 labels: dense 32·32 + 32, out_proj 32·2 + 2
    assert sum(trainable.values()) == res.counts.trainable == 32 * 32 + 32 + 32 * 2 + 2
    assert (res.counts.stored, res.counts.fraction, head.describe()) == (0, 0.0, "task head only")
    with pytest.raises(ValueError, match=r"trains only a classification head, but task 'toy-s2s' is seq2seq"):
        train(head, TrainConfig.for_task("toy-s2s", max_steps=1, **FAST))
