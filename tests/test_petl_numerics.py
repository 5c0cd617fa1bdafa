"""Numerical identities of the unified view on tiny random models (closed forms, merges, PEFT, causality, decoding)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from finetune.designpoint import DesignPoint, SiteSpec
from finetune.inject import fold_prefixes, inject
from finetune.petl.composition import gated_by_concatenation
from finetune.petl.insertion import HeadSite, SublayerSite, WeightSite
from finetune.presets import get_preset
from finetune.tiny import tiny_config
from finetune.vocabulary import Composition, Form, Init, Insertion

B, T, D, H = 2, 7, 32, 4
DH = D // H


def tiny(model_type: str = "bart"):
    auto = {"bart": AutoModelForSeq2SeqLM, "mbart": AutoModelForSeq2SeqLM,
            "roberta": AutoModelForSequenceClassification, "bert": AutoModelForSequenceClassification,
            }.get(model_type, AutoModelForCausalLM)
    return auto.from_config(tiny_config(model_type)).eval()


def batch(model_type: str = "bart") -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 128, (B, T))
    if model_type in ("bart", "mbart"):
        return {"input_ids": ids, "decoder_input_ids": torch.randint(5, 128, (B, 5))}
    return {"input_ids": ids}


def head_design(form: Form, composition: Composition, mlp: int = 0) -> DesignPoint:
    return DesignPoint(head_attn=SiteSpec(form=form, size=5, composition=composition, prefix_mlp=mlp))


def qkv(attn, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, T, H, DH).transpose(1, 2)  # (B, H, T, d_h)

    return split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))


def run_attn_with_prefix(dp: DesignPoint) -> tuple[torch.Tensor, torch.nn.Module, torch.Tensor, tuple]:
    model = tiny()
    inject(model, dp)
    attn = model.model.encoder.layers[0].self_attn
    x = torch.randn(B, T, D)
    prefix = (torch.randn(H, 5, DH), torch.randn(H, 5, DH))
    attn.petl_head.prefix = prefix
    out, _ = attn(hidden_states=x)
    return out, attn, x, prefix


def merge_heads(attn, heads: torch.Tensor) -> torch.Tensor:
    return attn.out_proj(heads.transpose(1, 2).reshape(B, T, D))


def test_prefix_tuning_equals_the_gated_closed_form() -> None:
    out, attn, x, (pk, pv) = run_attn_with_prefix(head_design(Form.SOFTMAX, Composition.GATED))
    q, k, v = qkv(attn, x)
    s = DH**-0.5
    base = torch.softmax(q @ k.transpose(-1, -2) * s, -1) @ v  # Attn(q, C W_k, C W_v)
    pre = torch.softmax(q @ pk.transpose(-1, -2) * s, -1) @ pv  # softmax(q P_kᵀ) P_v
    lp, lk = torch.logsumexp(q @ pk.transpose(-1, -2) * s, -1), torch.logsumexp(q @ k.transpose(-1, -2) * s, -1)
    lam = torch.sigmoid(lp - lk).unsqueeze(-1)  # Σ exp(q·p_k) / (Σ exp(q·p_k) + Σ exp(q·k)), He et al. Eq. 7
    expected = merge_heads(attn, (1 - lam) * base + lam * pre)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_gated_composition_is_attention_over_the_concatenation() -> None:
    """composition.py's identity, on the function itself: padding masked, grouped-query heads, causal."""
    torch.manual_seed(0)
    b, heads, kv, t, l, dh = 2, 4, 2, 6, 3, 8
    q, k, v = torch.randn(b, heads, t, dh), torch.randn(b, kv, t, dh), torch.randn(b, kv, t, dh)
    pk, pv = torch.randn(kv, l, dh), torch.randn(kv, l, dh)
    keep = torch.ones(b, 1, t, t, dtype=torch.bool).tril()  # causal
    keep[1, ..., :2] = False  # the second row's first two tokens are padding (left-padded)
    keep[1, :, :2, 0] = True  # ...but a fully masked query row would be undefined: let those rows see token 0
    module = torch.nn.Module()
    module.num_key_value_groups = heads // kv
    out = gated_by_concatenation(module, q, k, v, pk, pv, keep, 0.0, dh**-0.5, True)  # (B, T, H, d_h)
    rep = heads // kv
    k, v, pk, pv = (x.repeat_interleave(rep, dim=-3) for x in (k, v, pk, pv))
    logits = (q @ k.transpose(-1, -2) * dh**-0.5).masked_fill(~keep, float("-inf"))  # (B, H, T, T)
    plog = q @ pk.transpose(-1, -2) * dh**-0.5  # (B, H, T, l): prefix slots are always attendable
    h, dh_ = torch.softmax(logits, -1) @ v, torch.softmax(plog, -1) @ pv
    lam = (plog.exp().sum(-1) / (plog.exp().sum(-1) + logits.exp().sum(-1))).unsqueeze(-1)  # He et al. Eq. 7
    torch.testing.assert_close(out, ((1 - lam) * h + lam * dh_).transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_prefix_without_gate_is_plain_addition() -> None:
    out, attn, x, (pk, pv) = run_attn_with_prefix(head_design(Form.SOFTMAX, Composition.ADD))
    q, k, v = qkv(attn, x)
    s = DH**-0.5
    heads = torch.softmax(q @ k.transpose(-1, -2) * s, -1) @ v + torch.softmax(q @ pk.transpose(-1, -2) * s, -1) @ pv
    torch.testing.assert_close(out, merge_heads(attn, heads), atol=1e-5, rtol=1e-5)


def test_multi_head_parallel_adapter_per_head_formula() -> None:
    out, attn, x, (pk, pv) = run_attn_with_prefix(head_design(Form.RELU, Composition.ADD))
    q, k, v = qkv(attn, x)
    s = DH**-0.5
    # W_down^(i) = W_q^(i) P_k^(i)ᵀ / sqrt(d_h), W_up^(i) = P_v^(i): a ReLU bottleneck of width l per head.
    heads = torch.softmax(q @ k.transpose(-1, -2) * s, -1) @ v + F.relu(q @ pk.transpose(-1, -2) * s) @ pv
    torch.testing.assert_close(out, merge_heads(attn, heads), atol=1e-5, rtol=1e-5)


def test_prefix_sets_are_separate_per_attention_kind_and_fold_exactly() -> None:
    model = tiny()
    inject(model, head_design(Form.SOFTMAX, Composition.GATED, mlp=16))
    assert set(model.model.encoder.petl_prefix) == {"encoder"}
    assert set(model.model.decoder.petl_prefix) == {"decoder", "cross"}
    x = batch()
    before = model(**x).logits
    fold_prefixes(model)
    assert all(p.table is not None and not hasattr(p, "out") for p in model.model.decoder.petl_prefix.values())
    torch.testing.assert_close(model(**x).logits, before, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("model_type", ["bart", "roberta", "gpt2", "llama"])
@pytest.mark.parametrize("preset", ["lora_attn", "lora_ffn", "scaled_pa", "scaled_pa_learned"])
def test_zero_initialised_forms_leave_the_output_unchanged(model_type: str, preset: str) -> None:
    model, x = tiny(model_type), batch(model_type)
    before = model(**x).logits
    inject(model, get_preset(preset).design)
    assert torch.equal(model(**x).logits, before)


@pytest.mark.parametrize("preset", ["prefix", "mh_pa", "houlsby", "prompt_tuning", "pa_attn"])
def test_forms_that_are_not_identity_at_init(preset: str) -> None:
    # Prefix vectors, BERT-initialised adapters and prompts start non-zero, as in the official code.
    model, x = tiny(), batch()
    before = model(**x).logits
    inject(model, get_preset(preset).design)
    assert not torch.allclose(model(**x).logits, before, atol=1e-6)


def lora_design(r: int = 4, s: float = 2.0) -> DesignPoint:
    spec = SiteSpec(form=Form.IDENTITY, size=r, composition=Composition.SCALED, scale=s, init=Init.LORA)
    return DesignPoint(query=spec, value=spec)


def randomise_up(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WeightSite):
                m.delta.up.weight.normal_(0, 0.5)


@pytest.mark.parametrize("model_type", ["bart", "gpt2"])
def test_lora_equals_the_merged_weight(model_type: str) -> None:
    # y = x W' with W' = W + s·B·A in the host's layout: nn.Linear (d_out × d_in) on BART; on GPT-2 a Conv1D
    # (d_in × d_out) whose fused c_attn gets W_q's and W_v's updates in their own column blocks.
    base = tiny(model_type)
    model = copy.deepcopy(base)
    inject(model, lora_design())
    randomise_up(model)
    merged = copy.deepcopy(base)
    targets = dict(merged.named_modules())
    n = 0
    for name, mod in model.named_modules():
        for site in ("petl_query", "petl_value"):
            if isinstance(getattr(mod, site, None), WeightSite):
                targets[name].weight.data = getattr(mod, site).merged_weight(targets[name])
                n += 1
    assert n == {"bart": 2 * 3 * 2, "gpt2": 2 * 2}[model_type]  # GPT-2: q and v both live in c_attn
    x = batch(model_type)
    torch.testing.assert_close(model(**x).logits, merged(**x).logits, atol=1e-5, rtol=1e-5)


def test_merged_weight_refuses_non_linear_forms() -> None:
    model = tiny()
    inject(model, DesignPoint(fc1=SiteSpec(form=Form.RELU, size=4)))
    fc1 = model.model.encoder.layers[0].fc1
    with pytest.raises(ValueError, match=r"^merged_weight folds a linear Δ\(x\) = s·x AᵀBᵀ into W, but this site has "
                                         r"form=relu, so Δ is not linear in x; only form=identity \(LoRA\) merges"):
        fc1.petl_fc1.merged_weight(fc1)


def test_our_lora_equals_peft_lora_given_the_same_weights() -> None:
    peft = pytest.importorskip("peft")
    base = tiny()
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))  # scaling α/r = 2
    ours = copy.deepcopy(base)
    inject(ours, lora_design(r=4, s=2.0))
    theirs_modules = dict(theirs.base_model.model.named_modules())
    copied = 0
    for name, mod in ours.named_modules():
        for site in ("petl_query", "petl_value"):
            if hasattr(mod, site):
                peft_mod = theirs_modules[name]
                with torch.no_grad():
                    peft_mod.lora_B["default"].weight.normal_(0, 0.5)
                    getattr(mod, site).delta.down.weight.copy_(peft_mod.lora_A["default"].weight)
                    getattr(mod, site).delta.up.weight.copy_(peft_mod.lora_B["default"].weight)
                copied += 1
    assert copied == 2 * 3 * 2  # q and v of 3 attention kinds (encoder self, decoder self, cross) × 2 layers
    x = batch()
    torch.testing.assert_close(ours(**x).logits, theirs(**x).logits, atol=1e-5, rtol=1e-5)


def probe_inputs(model: torch.nn.Module, site_type: type) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    for m in model.modules():
        if isinstance(m, site_type):
            m.delta.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()) and None)
    return seen


@pytest.mark.parametrize("insertion", [Insertion.SEQUENTIAL, Insertion.PARALLEL])
def test_sequential_reads_the_sublayer_output_and_parallel_its_input(insertion: Insertion) -> None:
    model = tiny()
    spec = SiteSpec(form=Form.RELU, size=4, insertion=insertion)
    inject(model, DesignPoint(attn=spec, ffn=spec))
    layer = model.model.encoder.layers[0]
    taps: dict[str, torch.Tensor] = {}
    def tap(key: str, value: torch.Tensor) -> None:
        taps.setdefault(key, value.detach().clone())

    layer.self_attn.register_forward_pre_hook(
        lambda m, a, kw: tap("attn_in", kw["hidden_states"] if "hidden_states" in kw else a[0]), with_kwargs=True)
    layer.self_attn.out_proj.register_forward_hook(lambda m, a, o: tap("attn_out", o), prepend=True)
    layer.fc1.register_forward_pre_hook(lambda m, a: tap("ffn_in", a[0]))
    layer.fc2.register_forward_hook(lambda m, a, o: tap("ffn_out", o), prepend=True)
    seen = probe_inputs(layer, SublayerSite)
    model(**batch())
    attn_read, ffn_read = seen[0], seen[1]  # first call of each site: encoder layer 0
    which = "out" if insertion is Insertion.SEQUENTIAL else "in"
    torch.testing.assert_close(attn_read, taps[f"attn_{which}"].detach())
    torch.testing.assert_close(ffn_read, taps[f"ffn_{which}"].detach())


@pytest.mark.parametrize(("model_type", "preset"), [("gpt2", "prefix"), ("llama", "mam"), ("bart", "mam")])
def test_decoder_causality_holds_with_prefixes(model_type: str, preset: str) -> None:
    model = tiny(model_type)
    inject(model, get_preset(preset).design)
    x = batch(model_type)
    key = "decoder_input_ids" if model_type == "bart" else "input_ids"
    changed = dict(x)
    changed[key] = x[key].clone()
    changed[key][:, -1] = (changed[key][:, -1] + 1) % 128
    a, b = model(**x).logits, model(**changed).logits
    torch.testing.assert_close(a[:, :-1], b[:, :-1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_padding_is_masked_but_prefix_slots_are_not() -> None:
    model = tiny("roberta")
    inject(model, get_preset("mam_glue").design)
    ids = torch.randint(5, 128, (1, T))
    padded = torch.cat([ids, torch.full((1, 3), 1)], dim=1)
    mask = torch.cat([torch.ones(1, T), torch.zeros(1, 3)], dim=1).long()
    torch.testing.assert_close(model(input_ids=ids).logits, model(input_ids=padded, attention_mask=mask).logits,
                               atol=1e-5, rtol=1e-5)


def greedy_by_full_forwards(model, input_ids: torch.Tensor, steps: int) -> torch.Tensor:
    dec = torch.full((input_ids.shape[0], 1), model.config.decoder_start_token_id)
    for _ in range(steps):
        logits = model(input_ids=input_ids, decoder_input_ids=dec).logits[:, -1]
        logits[:, model.config.eos_token_id] = -float("inf")  # what min_new_tokens does in generate()
        dec = torch.cat([dec, logits.argmax(-1, keepdim=True)], dim=1)
    return dec


@pytest.mark.parametrize("preset", ["mam", "prompt_tuning", "prefix_nogate", "mh_pa"])
def test_greedy_generate_with_kv_cache_matches_full_forwards(preset: str) -> None:
    model = tiny()
    inject(model, get_preset(preset).design)
    ids = torch.randint(5, 128, (B, T))
    out = model.generate(input_ids=ids, max_new_tokens=6, min_new_tokens=6, do_sample=False, num_beams=1,
                         forced_eos_token_id=None, forced_bos_token_id=None)
    torch.testing.assert_close(out, greedy_by_full_forwards(model, ids, 6))


def test_decoder_only_generate_with_prefix_matches_full_forwards() -> None:
    model = tiny("llama")
    inject(model, get_preset("prefix").design)
    ids = torch.randint(5, 128, (B, T))
    out = model.generate(input_ids=ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    seq = ids
    for _ in range(5):
        logits = model(input_ids=seq).logits[:, -1]
        logits[:, model.config.eos_token_id] = -float("inf")
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    torch.testing.assert_close(out, seq)


@pytest.mark.parametrize(("model_type", "preset"), [("roberta", "mam_glue"), ("bert", "prompt_tuning"),
                                                    ("bart", "prefix_lora"), ("gpt2", "houlsby")])
def test_only_petl_parameters_and_the_task_head_receive_gradients(model_type: str, preset: str) -> None:
    model = tiny(model_type).train()
    inject(model, get_preset(preset).design)
    x = batch(model_type)
    labels = torch.randint(0, 2, (B,)) if model_type in ("roberta", "bert") else x.get("decoder_input_ids",
                                                                                      x["input_ids"])
    model(**x, labels=labels).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # LoRA-initialised W_down gets an exactly-zero gradient at step 0 (W_up = 0), so test presence, not size.
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert all(".petl_" in n or n.startswith(("classifier", "bert.pooler")) for n in trainable)
    if model_type in ("roberta", "bert"):
        assert any(n.startswith("classifier") for n in trainable)


def test_learned_scale_and_gate_free_head_site_compose() -> None:
    dp = DesignPoint(head_attn=SiteSpec(form=Form.TANH, size=3, composition=Composition.SCALED, scale=0.5,
                                        learn_scale=True))
    model = tiny()
    inject(model, dp)
    heads = [m for m in model.modules() if isinstance(m, HeadSite)]
    assert len(heads) == 3 * 2 and all(h.scale is not None and h.scale.s.requires_grad for h in heads)
    model(**batch(), labels=batch()["decoder_input_ids"]).loss.backward()
    assert all(h.scale.s.grad is not None for h in heads)
