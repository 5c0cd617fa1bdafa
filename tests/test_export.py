"""Found designs outside the tool: LoRA designs load with `PeftModel.from_pretrained` and compute what our injected
model computes; every other design is refused for PEFT with its reason and keeps our format."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from finetune.checkpoint import load_trained, save_final
from finetune.designpoint import DesignPoint
from finetune.export import FALLBACK, export_peft, main, peft_refusal
from finetune.inject import inject
from finetune.presets import get_preset
from finetune.tiny import tiny_config

peft = pytest.importorskip("peft")


def trained_folder(base: torch.nn.Module, design: DesignPoint, folder: Path, meta: dict | None = None) -> Path:
    """A trial folder as training leaves it, with every trained tensor random (LoRA's B starts at 0)."""
    model = copy.deepcopy(base)
    inject(model, design)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.2)
    return save_final(folder, model, design, meta or {"task": "toy-cls", "model": None}, keep_resume=False)


def ours(base: torch.nn.Module, folder: Path) -> torch.nn.Module:
    model = copy.deepcopy(base)
    load_trained(model, folder)
    return model.eval()


def theirs(base: torch.nn.Module, out: Path) -> torch.nn.Module:
    return peft.PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()


LORA_MIXED = DesignPoint.from_dict({  # different r and s per site: rank_pattern / alpha_pattern
    "query": {"form": "identity", "size": 4, "composition": "scaled", "scale": 2.0, "dropout": 0.1},
    "value": {"form": "identity", "size": 4, "composition": "scaled", "scale": 2.0, "dropout": 0.1},
    "fc1": {"form": "identity", "size": 8, "composition": "scaled", "scale": 0.5, "dropout": 0.1},
    "fc2": {"form": "identity", "size": 2, "dropout": 0.1},  # composition add: s = 1
})


@pytest.mark.parametrize("model_type", ["bert", "roberta", "bart"])
def test_a_lora_design_with_its_task_head_loads_in_peft_and_computes_our_outputs(tmp_path: Path,
                                                                                  model_type: str) -> None:
    base = AutoModelForSequenceClassification.from_config(tiny_config(model_type, num_labels=3)).eval()
    folder = trained_folder(base, LORA_MIXED, tmp_path / "trial")
    out = export_peft(folder, base, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_dropout"] == 0.1 and config["bias"] == "none"
    assert config["modules_to_save"]  # the trained classification head
    assert sorted(set(config["rank_pattern"].values())) == [2, 8]  # fc1 and fc2 differ from query/value's r=4
    assert sorted(set(config["alpha_pattern"].values())) == [2.0, 4.0]  # alpha = s * r: 1 * 2 and 0.5 * 8
    ids = torch.randint(3, 128, (2, 9))  # eos (2) ends each example, as BART's head reads it; row 1 padded (1)
    ids[0, -1], ids[1, 5], ids[1, 6:] = 2, 2, 1
    mask = (ids != 1).long()
    with torch.no_grad():
        want = ours(base, folder)(input_ids=ids, attention_mask=mask).logits
        got = theirs(base, out)(input_ids=ids, attention_mask=mask).logits
        plain = base(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(want, plain, atol=1e-3)  # the adapter changes the outputs ...
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # ... and PEFT computes our change


def test_lora_on_a_gated_ffn_decoder_exports_every_projection(tmp_path: Path) -> None:
    # Llama's fc1 is gate_proj and up_proj, each with its own LoRA; GQA attention; LoRA's scale s maps to
    # lora_alpha = s * r.
    base = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    design = DesignPoint.from_dict({"query": {"form": "identity", "size": 4, "composition": "scaled", "scale": 4.0},
                                    "fc1": {"form": "identity", "size": 4, "composition": "scaled", "scale": 4.0},
                                    "fc2": {"form": "identity", "size": 4, "composition": "scaled", "scale": 4.0}})
    folder = trained_folder(base, design, tmp_path / "trial")
    out = export_peft(folder, base, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 16.0 and config["rank_pattern"] == {}
    assert sum(name.endswith(("gate_proj", "up_proj")) for name in config["target_modules"]) == 4  # 2 layers
    ids = torch.randint(3, 128, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(theirs(base, out)(input_ids=ids).logits, ours(base, folder)(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("design", "reason"), [
    (get_preset("prefix").design, "prefix tuning: PEFT passes the prefix as past keys/values and moves the input to "
                                  "positions l..l+T-1, ours keeps the input's positions, so the outputs differ"),
    (get_preset("prompt_tuning").design, "prompt tuning: PEFT prepends the prompt to the word embeddings (so it gets "
                                         "position embeddings and shifts the input's positions), ours joins after the "
                                         "position embeddings as the official code does"),
    (get_preset("mam").design, "prefix tuning: PEFT passes the prefix as past keys/values and moves the input to "
                               "positions l..l+T-1, ours keeps the input's positions, so the outputs differ"),
    (get_preset("scaled_pa").design, "the ffn sub-layer adapter (He et al.'s SA/PA family) has no PEFT counterpart"),
    (get_preset("mh_pa").design, "head_attn with form=relu, composition=add has no PEFT counterpart"),
    (get_preset("bitfit").design, "BitFit (backbone=bias) trains the backbone's biases and PEFT has no BitFit "
                                  "adapter"),
    (DesignPoint.from_dict({"value": {"form": "relu", "size": 4}}),
     "value: form=relu computes s·f(x A)B, while PEFT's LoRA is linear (s·x A B)"),
    (DesignPoint.from_dict({"value": {"form": "identity", "size": 4, "composition": "scaled", "learn_scale": True}}),
     "value: a learned scale s, while PEFT's LoRA scaling lora_alpha/r is a constant"),
    (DesignPoint.from_dict({"query": {"form": "identity", "size": 4, "dropout": 0.1},
                            "value": {"form": "identity", "size": 4}}),
     "PEFT's lora_dropout is one rate for every module, this design uses [0.0, 0.1]"),
    (DesignPoint(), "the design trains the task head only: there is no adapter to export"),
])
def test_designs_peft_cannot_compute_are_refused_with_the_reason(design: DesignPoint, reason: str) -> None:
    assert peft_refusal(design) == reason


def test_lora_on_a_fused_projection_is_refused_and_the_command_falls_back_to_our_format(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = AutoModelForCausalLM.from_config(tiny_config("gpt2")).eval()
    lora = get_preset("lora_attn").design
    assert peft_refusal(lora) is None
    folder = trained_folder(base, lora, tmp_path / "trial")
    with pytest.raises(ValueError) as err:
        export_peft(folder, base, tmp_path / "peft")
    assert str(err.value) == ("cannot export to PEFT: transformer.h.0.attn.c_attn is a fused projection (W_q, W_k, "
                              "W_v in one matrix, as GPT-2's c_attn) and PEFT's LoRA would update all of its columns; "
                              + FALLBACK)
    prefix = trained_folder(base, DesignPoint.from_dict({"head_attn": {"form": "softmax", "size": 4,
                                                                       "composition": "gated"}}), tmp_path / "prefix")
    assert main([str(prefix), "--out", str(tmp_path / "strict"), "--format", "peft"]) == 2
    assert capsys.readouterr().err.strip() == "error: cannot export to PEFT: " + peft_refusal(
        get_preset("prefix").design) + "; " + FALLBACK
    assert main([str(prefix), "--out", str(tmp_path / "ours")]) == 0
    assert "in the petl format (not PEFT: prefix tuning:" in capsys.readouterr().out
    ids = torch.randint(3, 128, (1, 5))
    with torch.no_grad():  # our format round-trips through its loader
        torch.testing.assert_close(ours(base, tmp_path / "ours")(input_ids=ids).logits,
                                   ours(base, prefix)(input_ids=ids).logits)


def test_the_command_exports_a_search_trial_for_its_own_checkpoint(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # A trial of the packaged MiniLM as a search leaves it (design.json names task and model): the command builds
    # that model, and the adapter it writes reproduces the trial on a fresh copy of it.
    from finetune.models import build
    from finetune.tasks import get_task

    design = get_preset("lora_attn").design
    base, _ = build(get_task("toy-cls"), design, "minilm")
    base.eval()
    folder = trained_folder(base, design, tmp_path / "trial", {"task": "toy-cls", "model": "minilm"})
    assert main([str(folder), "--out", str(tmp_path / "peft")]) == 0
    assert "as a PEFT LoRA adapter; load it with peft.PeftModel.from_pretrained" in capsys.readouterr().out
    ids = torch.randint(3, 1000, (2, 8))
    with torch.no_grad():  # the head was rebuilt at random by `build`: the adapter carries the trained one
        torch.testing.assert_close(theirs(base, tmp_path / "peft")(input_ids=ids).logits,
                                   ours(base, folder)(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert main([str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "is not a trial folder: design.json, petl.safetensors missing" in capsys.readouterr().err
