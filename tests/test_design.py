"""Design points: every cross-axis rule raises its pinned message; the flat and nested forms round-trip."""

from __future__ import annotations

import dataclasses

import pytest

from finetune.designpoint import DesignPoint, SiteSpec
from finetune.presets import load_presets, parse_presets
from finetune.vocabulary import Backbone, Composition, Form, Init, Insertion, LayerNormPos

RELU = dict(form=Form.RELU, size=8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(ffn=SiteSpec(form=Form.RELU, size=0)), r"site ffn: size \(l or r\) must be an integer >= 1, got 0"),
        (dict(ffn=SiteSpec(**RELU, dropout=1.0)), r"site ffn: dropout must be in \[0, 1\), got 1.0"),
        (dict(ffn=SiteSpec(**RELU, composition=Composition.SCALED, scale=float("nan"))),
         r"site ffn: scale must be a finite non-zero number, got nan"),
        (dict(ffn=SiteSpec(form=Form.SOFTMAX, size=8)),
         r"site ffn: form=softmax normalises over prefix positions and exists only at head_attn .*got it at ffn"),
        (dict(head_attn=SiteSpec(form=Form.SOFTMAX, size=8, insertion=Insertion.SEQUENTIAL)),
         r"site head_attn: .* insertion must be parallel, got insertion=sequential"),
        (dict(head_attn=SiteSpec(form=Form.SOFTMAX, size=8, init=Init.LORA)),
         r"site head_attn: init applies to bottleneck matrices.*got init=lora; remove it"),
        (dict(head_attn=SiteSpec(form=Form.RELU, size=8, dropout=0.1)),
         r"^site head_attn: the per-head branch's weights take the attention's own dropout \(as in the official "
         r"code\), got dropout=0\.1; remove it \(the model's attention dropout sets that rate\)$"),
        (dict(attn=SiteSpec(**RELU, prefix_mlp=64)),
         r"site attn: prefix_mlp reparametrises prefix vectors and exists only at head_attn, got prefix_mlp=64"),
        (dict(ffn=SiteSpec(**RELU, composition=Composition.GATED)),
         r"site ffn: composition=gated .* needs head_attn with form=softmax, got form=relu at ffn; use add or scaled"),
        (dict(head_attn=SiteSpec(form=Form.RELU, size=8, composition=Composition.GATED)),
         r"site head_attn: composition=gated .* got form=relu at head_attn"),
        (dict(ffn=SiteSpec(**RELU, scale=4.0)),
         r"site ffn: scale/learn_scale are read only by composition=scaled, got composition=add with scale=4.0"),
        (dict(ffn=SiteSpec(**RELU, learn_scale=True)),
         r"site ffn: scale/learn_scale .* learn_scale=True; set composition: scaled or drop them"),
        (dict(query=SiteSpec(form=Form.IDENTITY, size=4, insertion=Insertion.SEQUENTIAL)),
         r"site query: a weight-level modification .* insertion must be parallel, got insertion=sequential"),
        (dict(fc1=SiteSpec(form=Form.IDENTITY, size=4, layernorm=LayerNormPos.IN)),
         r"site fc1: layernorm in/out belongs to sub-layer adapters \(attn, ffn\), got layernorm=in at fc1"),
        (dict(head_attn=SiteSpec(form=Form.SOFTMAX, size=8, layernorm=LayerNormPos.OUT)),
         r"site head_attn: layernorm in/out belongs to sub-layer adapters"),
        (dict(prompt_length=-1), r"prompt.length must be an integer >= 0, got -1"),
        (dict(ffn=SiteSpec(**RELU), backbone=Backbone.FULL),
         r"backbone=full trains every weight, .*got sites \['ffn'\] and prompt.length=0; drop them"),
        (dict(train_task_head=False),
         r"a design must train something, got no site, prompt.length=0, backbone=frozen and train_task_head=false"),
    ],
)
def test_invalid_design_raises_pinned_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DesignPoint(**kwargs)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ffn": {"form": "relu", "size": 8, "bottleneck": 3}},
         r"site ffn: unknown option\(s\) \['bottleneck'\]; expected some of \['composition', 'dropout'"),
        ({"fnn": {"form": "relu", "size": 8}}, r"unknown design key\(s\) \['fnn'\]; expected some of \['attn'"),
        ({"ffn": {"form": "relu"}}, r"site ffn: size \(l or r\) is required, got options \['form'\]"),
        ({"ffn": {"form": "swish", "size": 8}},
         r"ffn.form must be one of \['softmax', 'relu', 'gelu', 'tanh', 'silu', 'sigmoid', 'identity'\], got 'swish'"),
        ({"ffn": {"form": "relu", "size": "eight"}}, r"ffn.size must be an integer, got 'eight'"),
        ({"ffn": {"form": "relu", "size": 8, "learn_scale": "yes"}}, r"ffn.learn_scale must be true or false"),
        ({"ffn": {"form": "none", "size": 8}}, r"site ffn has form=none but sets \['size'\]"),
        ({"backbone": "partial"}, r"backbone must be one of \['frozen', 'bias', 'full'\], got 'partial'"),
        ({"prompt": 20}, r"prompt must be a mapping with the single key 'length', got 20"),
    ],
)
def test_invalid_yaml_form_raises_pinned_message(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DesignPoint.from_dict(data)


@pytest.mark.parametrize("name", sorted(load_presets()))
def test_presets_round_trip_through_flat_and_nested_forms(name: str) -> None:
    dp = load_presets()[name].design
    assert DesignPoint.from_params(dp.to_params()) == dp
    assert DesignPoint.from_dict(dp.to_dict()) == dp
    # MLflow hands params back as strings: the round trip must survive that too.
    assert DesignPoint.from_params({k: str(v) for k, v in dp.to_params().items()}) == dp
    assert hash(dp) == hash(DesignPoint.from_params(dp.to_params()))


def test_flat_params_name_every_site_and_use_the_papers_words() -> None:
    params = load_presets()["mam"].design.to_params()
    assert params["head_attn.form"] == "softmax" and params["head_attn.composition"] == "gated"
    assert params["head_attn.size"] == 30 and params["head_attn.prefix_mlp"] == 800
    assert params["ffn.composition"] == "scaled" and params["ffn.scale"] == 4.0 and params["ffn.init"] == "lora"
    assert {params[f"{s}.form"] for s in ("attn", "query", "value", "fc1", "fc2")} == {"none"}
    assert "head_attn.init" not in params  # None means "the site's customary init" and is not logged


def test_yaml_ints_coerce_to_float_fields() -> None:
    dp = DesignPoint.from_dict({"ffn": {"form": "relu", "size": 8.0, "composition": "scaled", "scale": 4}})
    assert dp.ffn is not None and isinstance(dp.ffn.scale, float) and dp.ffn.size == 8


def test_describe_uses_the_papers_vocabulary() -> None:
    assert load_presets()["mam"].design.describe() == (
        "head_attn: softmax, parallel, gated, l=30, prefix MLP 800\n"
        "ffn: relu, parallel, scaled s=4, r=512, init=lora, dropout=0.1"
    )
    assert load_presets()["houlsby"].design.describe() == (
        "attn: relu, sequential, add, r=200, LayerNorm in, init=bert, dropout=0.1\n"
        "ffn: relu, sequential, add, r=200, init=bert, dropout=0.1"
    )
    assert load_presets()["scaled_pa_learned"].design.describe() == (
        "ffn: relu, parallel, scaled s=1 learned, r=512, init=lora, dropout=0.1")
    assert DesignPoint(backbone=Backbone.BIAS, train_task_head=False).describe() == "backbone: bias\ntask head: frozen"


_VARIANTS = {"form": list(Form), "size": [3], "insertion": list(Insertion), "composition": list(Composition),
             "scale": [2.5, 4.0000001], "learn_scale": [True, False], "init": [None, *Init],
             "layernorm": list(LayerNormPos), "dropout": [0.0, 0.2, 0.1000001], "prefix_mlp": [0, 64]}


def _single_setting_variants(base: DesignPoint) -> list[tuple[str, DesignPoint]]:
    """Every valid design that differs from `base` in exactly one setting."""
    out = []
    for rep, spec in base.sites().items():
        for name, values in _VARIANTS.items():
            for v in values:
                if getattr(spec, name) == v:
                    continue
                try:
                    changed = dataclasses.replace(base, **{rep.value: dataclasses.replace(spec, **{name: v})})
                except ValueError:
                    continue  # a design rule forbids it: not a design that could be described
                out.append((f"{rep.value}.{name}={v}", changed))
    for name, v in (("prompt_length", 5), ("backbone", Backbone.BIAS), ("train_task_head", False)):
        out.append((f"{name}={v}", dataclasses.replace(base, **{name: v})))
    return out


@pytest.mark.parametrize("composition", [Composition.SCALED, Composition.ADD])
def test_two_designs_that_differ_in_any_single_setting_describe_differently(composition: Composition) -> None:
    scaled = dict(composition=Composition.SCALED, scale=2.0) if composition is Composition.SCALED else {}
    base = DesignPoint(
        head_attn=SiteSpec(form=Form.SOFTMAX, size=8, composition=Composition.GATED, prefix_mlp=32),
        attn=SiteSpec(form=Form.RELU, size=8, insertion=Insertion.SEQUENTIAL, layernorm=LayerNormPos.IN,
                      init=Init.BERT, dropout=0.1, **scaled),
        ffn=SiteSpec(form=Form.GELU, size=16, **scaled),
        query=SiteSpec(form=Form.IDENTITY, size=4, init=Init.LORA, **scaled),
        fc2=SiteSpec(form=Form.IDENTITY, size=4, dropout=0.1, **scaled),
    )
    variants = _single_setting_variants(base)
    assert len(variants) >= 60  # every field of every site, where the rules allow a change
    changed_fields = {label.split("=")[0] for label, _ in variants}
    # Each field of the sub-layer sites that can change alone is exercised (scaled s=2 cannot become add alone).
    fixed = ("prefix_mlp", "composition") if composition is Composition.SCALED else ("prefix_mlp", "scale",
                                                                                    "learn_scale")
    for site in ("attn", "ffn"):
        assert {f"{site}.{f}" for f in _VARIANTS if f not in fixed} <= changed_fields
    assert "head_attn.prefix_mlp" in changed_fields
    for label, variant in variants:
        assert variant != base
        assert variant.describe() != base.describe(), label


def test_every_paper_method_has_a_preset() -> None:
    assert set(load_presets()) == {
        "full", "bitfit", "prompt_tuning", "prefix", "prefix_nogate", "houlsby", "pfeiffer", "sa_attn", "sa_ffn",
        "pa_attn", "pa_ffn", "mh_pa", "lora_attn", "lora_ffn", "scaled_pa", "scaled_pa_learned", "mam", "mam_glue",
        "pa_pa", "prefix_lora",
    }


def test_malformed_preset_file_names_the_preset() -> None:
    with pytest.raises(ValueError, match=r"x.yaml: preset 'bad': site ffn: size \(l or r\) must be an integer >= 1"):
        parse_presets({"bad": {"method": "m", "source": "s", "design": {"ffn": {"form": "relu", "size": 0}}}}, "x.yaml")
    with pytest.raises(ValueError, match=r"preset 'bad' must have exactly the keys \['design', 'method', 'source'\]"):
        parse_presets({"bad": {"design": {}}}, "x.yaml")
