"""Parameter accounting: the paper's numbers on the real configs, and analytic == actual on every family."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from finetune.accounting import count_params
from finetune.count import main as count_main
from finetune.designpoint import DesignPoint
from finetune.hubconfigs import load_config
from finetune.inject import fold_prefixes, inject
from finetune.petl.base import petl_named_parameters
from finetune.presets import get_preset, load_presets
from finetune.tiny import TINY_TYPES, tiny_config
from finetune.vocabulary import Backbone

AUTO = {"seq2seq": AutoModelForSeq2SeqLM, "classification": AutoModelForSequenceClassification,
        "causal": AutoModelForCausalLM}


@pytest.mark.parametrize(
    ("preset", "model", "paper", "percent"),
    [
        # He et al. Table 6 / §4.1: N = formula count, percent = N / 409.6M (their anchor: prefix l=200 = 3.6%).
        ("prefix", "facebook/bart-large", 14_745_600, 3.6),  # 2·l·d·3·12 = 2·200·1024·36
        ("mam", "facebook/bart-large", 27_377_664, 6.7),  # 2·30·1024·36 + 2·512·1024·24
        ("mam", "facebook/mbart-large-cc25", 27_377_664, 6.7),
        ("lora_ffn", "facebook/bart-large", 25_067_520, 6.1),  # 2·102·(1024 + 4096)·24
        ("pfeiffer", "facebook/mbart-large-cc25", 29_491_200, 7.2),  # 2·600·1024·24
        ("pa_ffn", "facebook/bart-large", 50_331_648, 12.3),  # 2·1024·1024·24
        ("bitfit", "facebook/bart-large", 333_824, 0.1),  # every bias incl. LayerNorms; final_logits_bias is a buffer
        ("mam_glue", "roberta-base", 589_824, 0.5),  # 2·16·768·12 + 2·16·768·12, over RoBERTa-base
        ("lora_attn", "roberta-base", 589_824, 0.5),  # 4·16·768·12
    ],
)
def test_paper_counts_on_real_configs(preset: str, model: str, paper: int, percent: float) -> None:
    counts = count_params(get_preset(preset).design, load_config(model))
    assert counts.paper == paper
    assert round(counts.paper_percent, 1) == percent


def test_real_backbone_sizes_and_training_time_counts() -> None:
    bart = load_config("facebook/bart-large")
    mam = count_params(get_preset("mam").design, bart)
    assert mam.backbone == 406_291_456  # shared embeddings counted once (seed spec §3.3)
    # 3 prefix MLPs of 30·1024 + 1024·800 + 800 + 800·24576 + 24576 = 20,536,096 each, plus 24 adapters of
    # 1024·512·2 + 512 + 1024 = 1,050,112: the official code's trainable count (seed spec §3.4).
    assert mam.trainable == 3 * 20_536_096 + 24 * 1_050_112 == 86_810_976
    assert mam.stored == 2 * 30 * 1024 * 36 + 24 * 1_050_112 == 27_414_528
    assert mam.fraction == pytest.approx(27_414_528 / 406_291_456)
    assert count_params(get_preset("prefix").design, bart).trainable == 3 * 20_710_176  # 62,130,528
    assert count_params(get_preset("full").design, load_config("facebook/mbart-large-cc25")).backbone == 610_851_840
    glue = count_params(get_preset("mam_glue").design, load_config("roberta-base"))
    # one prefix set (RoBERTa has only self-attention) of 15,391,520 + 12 adapters of 25,360, plus the trained
    # classification head (768·768 + 768 + 768·2 + 2), counted apart.
    assert glue.petl_trainable == 15_391_520 + 12 * 25_360
    assert glue.task_head == 592_130 and glue.trainable == glue.petl_trainable + 592_130
    assert glue.backbone == 124_645_632 - (768 * 768 + 768)  # the sequence classifier has no pooler


@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_analytic_counts_equal_the_injected_model_for_every_preset(model_type: str) -> None:
    config = tiny_config(model_type)
    task = "seq2seq" if model_type in ("bart", "mbart") else ("classification" if model_type in ("bert", "roberta")
                                                              else "causal")
    for name, preset in load_presets().items():
        model = AUTO[task].from_config(config)
        if preset.design.backbone is Backbone.BIAS and model_type in ("llama", "mistral"):  # no bias vectors at all
            for refuse in (lambda: inject(model, preset.design), lambda: count_params(preset.design, config, task)):
                with pytest.raises(ValueError, match=rf"backbone=bias \(BitFit\) .* type '{model_type}' has none"):
                    refuse()
            continue
        if preset.design.prompt_length and task == "causal":
            with pytest.raises(ValueError, match=r"prompt tuning needs an encoder input .* is decoder-only"):
                inject(model, preset.design)
            with pytest.raises(ValueError, match=r"prompt tuning needs an encoder input"):
                count_params(preset.design, config, task)
            continue
        inject(model, preset.design)
        counts = count_params(preset.design, config, task)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == counts.trainable, (model_type, name)
        assert sum(p.numel() for p in model.parameters()) == counts.backbone + counts.task_head + counts.petl_trainable
        fold_prefixes(model)
        petl = sum(p.numel() for _, p in petl_named_parameters(model))
        assert petl + counts.backbone_trainable == counts.stored, (model_type, name)


@pytest.mark.parametrize("model", ["facebook/bart-large", "roberta-base"])
def test_analytic_counts_equal_injection_at_full_size_on_meta(model: str) -> None:
    config = load_config(model)
    task = "seq2seq" if config.model_type == "bart" else "classification"
    for name in ("mam", "houlsby", "lora_ffn", "mh_pa", "bitfit"):
        with torch.device("meta"):
            net = AUTO[task].from_config(config)
        dp = get_preset(name).design
        inject(net, dp)
        assert sum(p.numel() for p in net.parameters() if p.requires_grad) == count_params(dp, config).trainable


def test_frozen_head_is_not_counted() -> None:
    dp = DesignPoint.from_dict({"ffn": {"form": "relu", "size": 4}, "train_task_head": False})
    config = tiny_config("roberta")
    model = AutoModelForSequenceClassification.from_config(config)
    inject(model, dp)
    counts = count_params(dp, config)
    assert counts.task_head == 0
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == counts.trainable == counts.petl_trainable


def test_count_cli_json_and_listing(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert count_main(["--preset", "mam", "--model", "facebook/bart-large", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"trainable", "stored", "paper", "backbone", "fraction", "paper_percent"}
    assert out["paper"] == 27_377_664 and out["stored"] == 27_414_528 and out["backbone"] == 406_291_456
    config_path = tmp_path / "config.json"
    config_path.write_text(tiny_config("gpt2").to_json_string())
    assert count_main(["--preset", "lora_attn", "--model", str(config_path), "--json"]) == 0
    # GPT-2 tiny: 2 layers × (W_q: 16·(32+32) + W_v: 16·(32+32)) = 4,096
    assert json.loads(capsys.readouterr().out)["trainable"] == 4_096
    assert count_main(["--list-presets"]) == 0
    assert "mam_glue" in capsys.readouterr().out
    assert count_main(["--preset", "nope", "--model", "roberta-base"]) == 2
    assert "unknown preset 'nope'; expected one of" in capsys.readouterr().err


def test_unsupported_model_type_is_named() -> None:
    from transformers import T5Config

    with pytest.raises(ValueError, match=r"model type 't5' has no site map.*supported model types: \['bart', 'bert'"):
        count_params(get_preset("mam").design, T5Config(d_model=16, num_layers=1, num_heads=2, d_ff=32, d_kv=8))


COMPOSITE = [
    {"head_attn": {"form": "relu", "size": 3, "composition": "scaled", "scale": 2.0, "learn_scale": True,
                   "prefix_mlp": 8},
     "attn": {"form": "gelu", "size": 5, "insertion": "parallel", "layernorm": "out", "composition": "scaled",
              "scale": 2.0, "learn_scale": True},
     "ffn": {"form": "relu", "size": 4, "insertion": "sequential", "layernorm": "in"},
     "value": {"form": "identity", "size": 2, "composition": "scaled", "scale": 2.0, "learn_scale": True}},
    {"attn": {"form": "relu", "size": 5, "insertion": "sequential", "layernorm": "in"},
     "ffn": {"form": "relu", "size": 4, "insertion": "parallel", "layernorm": "out"},
     "fc1": {"form": "identity", "size": 2}, "backbone": "bias"},
]


@pytest.mark.parametrize("overrides", [{}, {"head_dim": 16}], ids=["d", "wide-heads"])
@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_analytic_counts_equal_the_injected_model_for_composite_designs(model_type: str, overrides: dict) -> None:
    # Every site kind with its LayerNorms and learned scales; "wide-heads" (Llama family: H·d_h = 64 ≠ d = 32) makes
    # the parallel attention adapter's output, which joins the head outputs before W_o, H·d_h wide.
    if overrides and model_type not in ("llama", "mistral", "qwen2"):
        pytest.skip("head_dim is a free parameter only in the Llama family")
    config = tiny_config(model_type, **overrides)
    task = "seq2seq" if model_type in ("bart", "mbart") else ("classification" if model_type in ("bert", "roberta")
                                                              else "causal")
    for raw in COMPOSITE:
        dp = DesignPoint.from_dict(raw)
        if dp.backbone is Backbone.BIAS and model_type in ("llama", "mistral"):
            continue
        model = AUTO[task].from_config(config)
        inject(model, dp)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == count_params(dp, config, task).trainable, (model_type, raw)
        model(input_ids=torch.randint(5, 100, (2, 6)), **({"decoder_input_ids": torch.randint(5, 100, (2, 3))}
                                                            if task == "seq2seq" else {}))
