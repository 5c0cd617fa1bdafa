"""Where each module reads and joins, pinned against hand formulas (docs/deviations.md lists each choice and why).

The official code (jxhe/unify-parameter-efficient-tuning, seed spec §1.3, §1.5, §7) is followed on BART, mBART and
RoBERTa; BERT, GPT-2 and Llama take the analogous placement.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from finetune.designpoint import DesignPoint, SiteSpec
from finetune.inject import inject
from finetune.sitemap import get_path
from finetune.tiny import tiny_config
from finetune.vocabulary import Composition, Form, Init, Insertion, LayerNormPos

B, T, D, H = 8, 16, 32, 4
DH = D // H
P = 0.5  # the model's dropout in the statistics tests

# Per family, written out here rather than read from finetune.sitemap: the first layer; x, the module whose input
# is the residual the skip connection adds back; the FFN's last projection (its output y0 goes through the layer's
# dropout); and the point where residual + FFN output (+ Δh) is formed.
FAMILIES = {
    "bart": dict(auto=AutoModelForSeq2SeqLM, layer="model.encoder.layers.0", x="fc1", y0="fc2",
                 sum=("pre", "final_layer_norm"), dropout=dict(dropout=P, attention_dropout=0.0)),
    "mbart": dict(auto=AutoModelForSeq2SeqLM, layer="model.encoder.layers.0", x="final_layer_norm", y0="fc2",
                  sum=("out", ""), dropout=dict(dropout=P, attention_dropout=0.0)),
    "roberta": dict(auto=AutoModelForSequenceClassification, layer="roberta.encoder.layer.0", x="intermediate",
                    y0="output.dense", sum=("pre", "output.LayerNorm"),
                    dropout=dict(hidden_dropout_prob=P, attention_probs_dropout_prob=0.0)),
    "gpt2": dict(auto=AutoModelForCausalLM, layer="transformer.h.0", x="ln_2", y0="mlp.c_proj", sum=("out", ""),
                 dropout=dict(resid_pdrop=P, attn_pdrop=0.0, embd_pdrop=0.0)),
    "llama": dict(auto=AutoModelForCausalLM, layer="model.layers.0", x="post_attention_layernorm",
                  y0="mlp.down_proj", sum=("out", ""), dropout={}),
}


def build(model_type: str, **overrides: object) -> torch.nn.Module:
    fam = FAMILIES[model_type]
    return fam["auto"].from_config(tiny_config(model_type, **{**fam["dropout"], **overrides}))


def inputs(model_type: str, t: int = T) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 128, (B, t))
    if model_type in ("bart", "mbart"):
        return {"input_ids": ids, "decoder_input_ids": torch.randint(5, 128, (B, 3))}
    return {"input_ids": ids}


def keep(seen: dict, key: str, value: torch.Tensor) -> None:
    """First value seen under `key` (hooks must return None, or they would replace the module's input/output)."""
    seen.setdefault(key, value.detach().clone())


def taps(model: torch.nn.Module, model_type: str) -> dict[str, torch.Tensor]:
    """Record, on the first layer: x (the residual), y0 (the FFN output before dropout), s (residual + FFN (+ Δh))."""
    fam, seen = FAMILIES[model_type], {}
    layer = get_path(model, fam["layer"])
    get_path(layer, fam["x"]).register_forward_pre_hook(lambda m, a: keep(seen, "x", a[0]))
    get_path(layer, fam["y0"]).register_forward_hook(lambda m, a, o: keep(seen, "y0", o), prepend=True)
    kind, path = fam["sum"]
    if kind == "pre":
        get_path(layer, path).register_forward_pre_hook(lambda m, a: keep(seen, "s", a[0]))
    else:
        layer.register_forward_hook(lambda m, a, o: keep(seen, "s", o[0] if isinstance(o, tuple) else o))
    return seen


def hand_delta(site: torch.nn.Module, x: torch.Tensor, s: float) -> torch.Tensor:
    """s · (ReLU(x W_downᵀ + b_down) W_upᵀ + b_up), from the site's weights."""
    d, u = site.delta.down, site.delta.up
    return s * F.linear(F.relu(F.linear(x, d.weight, d.bias)), u.weight, u.bias)


def adapter(insertion: Insertion, **kw: object) -> SiteSpec:
    return SiteSpec(form=Form.RELU, size=4, insertion=insertion, composition=Composition.SCALED, scale=2.0,
                    init=Init.BERT, **kw)


# ---- item 1: the FFN adapter joins after the FFN's output dropout -------------------------------------------------
@pytest.mark.parametrize("model_type", ["bart", "mbart", "roberta", "gpt2"])
def test_parallel_ffn_adapter_joins_after_the_ffn_dropout_and_reads_the_residual(model_type: str) -> None:
    # Official code: out = residual + dropout(FFN(·)) + s·Δ(x) with x the residual the layer adds back (the FFN input
    # in post-LN BART/RoBERTa, the un-normalised residual stream in pre-LN mBART and GPT-2). So s − x − s·Δ(x) is
    # the dropped FFN output: each element 0 or y0 / (1 − p), zero about half the time, while Δh is never dropped.
    model = build(model_type).train()
    inject(model, DesignPoint(ffn=adapter(Insertion.PARALLEL)))
    seen = taps(model, model_type)
    model(**inputs(model_type))
    site = get_path(model, FAMILIES[model_type]["layer"]).petl_ffn
    rest = seen["s"] - seen["x"] - hand_delta(site, seen["x"], 2.0)
    dropped = rest.abs() <= 1e-5
    kept = torch.isclose(rest, seen["y0"] / (1 - P), atol=1e-5, rtol=1e-4)
    assert bool((dropped | kept).all())
    assert 0.45 < dropped.float().mean().item() < 0.55  # B·T·D = 4,096 Bernoulli(0.5) draws


@pytest.mark.parametrize("model_type", ["bart", "mbart", "roberta", "gpt2"])
def test_sequential_ffn_adapter_reads_and_joins_the_dropped_ffn_output(model_type: str) -> None:
    # Official code: y = dropout(FFN(·)); y ← y + a(y). With the FFN's last projection zeroed, y = 0 exactly, so the
    # layer adds a(0) = s·(ReLU(b_down) W_upᵀ + b_up) to every position, never dropped (before: ~half zero, rest × 2).
    model = build(model_type).train()
    inject(model, DesignPoint(ffn=adapter(Insertion.SEQUENTIAL)))
    layer = get_path(model, FAMILIES[model_type]["layer"])
    with torch.no_grad():
        proj = get_path(layer, FAMILIES[model_type]["y0"])
        proj.weight.zero_()
        proj.bias.zero_()
        layer.petl_ffn.delta.down.bias.normal_()
        layer.petl_ffn.delta.up.bias.normal_()
    seen = taps(model, model_type)
    model(**inputs(model_type))
    a0 = hand_delta(layer.petl_ffn, torch.zeros(D), 2.0)
    assert bool((a0 != 0).all())
    torch.testing.assert_close(seen["s"] - seen["x"], a0.expand_as(seen["x"]), atol=1e-5, rtol=1e-5)


class _Identity(torch.autograd.Function):
    """What DeepSpeed ZeRO-3's forward hooks apply to every module output."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.detach()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad


def test_bart_ffn_adapter_stays_after_the_dropout_when_other_hooks_wrap_fc2() -> None:
    # BART's FFN site applies the layer's F.dropout itself and marks its output so the layer's own call is the
    # identity; a hook registered later (ZeRO-3 registers its own after injection) must not lose that mark, or the
    # output would be dropped twice and Δh with it.
    model = build("bart").train()
    inject(model, DesignPoint(ffn=adapter(Insertion.SEQUENTIAL)))
    layer = model.model.encoder.layers[0]
    with torch.no_grad():
        layer.fc2.weight.zero_()
        layer.fc2.bias.zero_()
        layer.petl_ffn.delta.up.bias.normal_()
    layer.fc2.register_forward_hook(lambda m, a, o: _Identity.apply(o))
    seen = taps(model, "bart")
    model(**inputs("bart"))
    a0 = hand_delta(layer.petl_ffn, torch.zeros(D), 2.0)
    torch.testing.assert_close(seen["s"] - seen["x"], a0.expand_as(seen["x"]), atol=1e-5, rtol=1e-5)


def test_llama_parallel_ffn_adapter_reads_the_residual_stream() -> None:
    # Pre-LN like mBART (no dropout in Llama's MLP): out = x + MLP(RMSNorm(x)) + s·Δ(x), x un-normalised.
    model = build("llama").eval()
    inject(model, DesignPoint(ffn=adapter(Insertion.PARALLEL)))
    seen = taps(model, "llama")
    model(**inputs("llama"))
    site = model.model.layers[0].petl_ffn
    torch.testing.assert_close(seen["s"], seen["x"] + seen["y0"] + hand_delta(site, seen["x"], 2.0),
                               atol=1e-5, rtol=1e-5)


def test_layernorm_out_is_inside_the_scaled_delta() -> None:
    # Ours: h + s·LN(Δ). The official code computes LN(s·Δ), in which s cancels (LayerNorm is scale-invariant up to
    # its ε), so scaled composition with layernorm out would be plain addition there; see docs/deviations.md.
    model = build("bart").eval()
    inject(model, DesignPoint(ffn=adapter(Insertion.PARALLEL, layernorm=LayerNormPos.OUT)))
    seen = taps(model, "bart")
    model(**inputs("bart"))
    site = model.model.encoder.layers[0].petl_ffn
    ln = site.delta.ln_out
    dh = F.layer_norm(hand_delta(site, seen["x"], 1.0), (D,), ln.weight, ln.bias, ln.eps)
    torch.testing.assert_close(seen["s"], seen["x"] + seen["y0"] + 2.0 * dh, atol=1e-5, rtol=1e-5)


# ---- item 2: attention-side placements ------------------------------------------------------------------------------
def heads_of(attn: torch.nn.Module, x: torch.Tensor, q: str, k: str, v: str) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d_h)) v per head, concatenated: (B, T, D), the input of W_o."""
    split = lambda t: t.view(B, T, H, DH).transpose(1, 2)  # noqa: E731
    qh, kh, vh = (split(get_path(attn, n)(x)) for n in (q, k, v))
    out = torch.softmax(qh @ kh.transpose(-1, -2) * DH**-0.5, -1) @ vh
    return out.transpose(1, 2).reshape(B, T, D)


@pytest.mark.parametrize(("model_type", "attn", "names", "w_o"), [
    ("bart", "model.encoder.layers.0.self_attn", ("q_proj", "k_proj", "v_proj"), "out_proj"),
    ("roberta", "roberta.encoder.layer.0.attention.self", ("query", "key", "value"), None),
])
def test_parallel_attention_adapter_joins_the_head_outputs_before_w_o(model_type: str, attn: str, names: tuple,
                                                                      w_o: str | None) -> None:
    # Official PA (attn): W_o(heads + Δ(x)), x the attention module's input. BART's attention module applies W_o
    # itself; BERT/RoBERTa's `attention.self` returns the heads and `attention.output.dense` is W_o.
    model = build(model_type).eval()
    inject(model, DesignPoint(attn=adapter(Insertion.PARALLEL, layernorm=LayerNormPos.IN)))
    module, seen = get_path(model, attn), {}
    module.register_forward_hook(lambda m, a, kw, o: seen.update(x=(a[0] if a else kw["hidden_states"]).clone(),
                                                                 out=o[0].clone()), with_kwargs=True)
    model(**inputs(model_type))
    x, site = seen["x"], module.petl_attn
    ln = site.delta.ln_in
    dh = hand_delta(site, F.layer_norm(x, (D,), ln.weight, ln.bias, ln.eps), 2.0)
    expected = heads_of(module, x, *names) + dh
    if w_o is not None:
        expected = get_path(module, w_o)(expected)
    torch.testing.assert_close(seen["out"], expected, atol=1e-5, rtol=1e-5)


def test_sequential_attention_adapter_reads_and_joins_the_output_of_w_o() -> None:
    # Official SA (attn, Houlsby): h ← h + a(h) on W_o's output, before the layer's dropout and residual.
    model = build("bart").eval()
    inject(model, DesignPoint(attn=adapter(Insertion.SEQUENTIAL)))
    out_proj, seen = model.model.encoder.layers[0].self_attn.out_proj, {}
    out_proj.register_forward_hook(lambda m, a, o: seen.update(h=F.linear(a[0], m.weight, m.bias), out=o.clone()))
    model(**inputs("bart"))
    torch.testing.assert_close(seen["out"], seen["h"] + hand_delta(out_proj.petl_attn, seen["h"], 2.0),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p", [0.0, P])
def test_multi_head_adapter_branch_takes_the_attention_dropout(p: float) -> None:
    # Official MH PA: dropout(ReLU(q P_kᵀ), p = attention dropout) P_v. With W_v = 0 the ordinary heads are 0 and,
    # with one prefix slot and P_v = 1, each (token, head) output is ReLU(q·p_k s) dropped with the attention's rate:
    # 0 or ×1/(1−p); the site's own `dropout` option is refused at head_attn (test_design).
    model = build("bart", attention_dropout=p, dropout=0.0).train()
    inject(model, DesignPoint(head_attn=SiteSpec(form=Form.RELU, size=1)))
    attn, seen = model.model.encoder.layers[0].self_attn, {}
    with torch.no_grad():
        attn.v_proj.weight.zero_()
        attn.v_proj.bias.zero_()
        model.model.encoder.petl_prefix["encoder"].table[:, 1].fill_(1.0)  # P_v = 1 in every layer and head
    attn.out_proj.register_forward_pre_hook(lambda m, a: keep(seen, "heads", a[0]))
    attn.register_forward_pre_hook(lambda m, a, kw: keep(seen, "x", a[0] if a else kw["hidden_states"]),
                                   with_kwargs=True)
    model(**inputs("bart"))
    pk = model.model.encoder.petl_prefix["encoder"].table[0, 0, :, 0]  # (H, d_h), l = 1
    q = attn.q_proj(seen["x"]).view(B, T, H, DH)
    hand = F.relu((q * pk).sum(-1) * DH**-0.5)  # (B, T, H)
    got = seen["heads"].view(B, T, H, DH)[..., 0]
    live = hand > 1e-3
    ratio = got[live] / hand[live]
    dropped = ratio.abs() < 1e-4
    assert bool((dropped | torch.isclose(ratio, torch.tensor(1 / (1 - p)), rtol=1e-4)).all())
    frac = dropped.float().mean().item()
    assert frac == 0.0 if p == 0 else 0.4 < frac < 0.6, frac


# ---- item 3: prompt tuning joins after the position embeddings ------------------------------------------------------
def norm_input(model: torch.nn.Module, path: str) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    get_path(model, path).register_forward_pre_hook(lambda m, a: keep(seen, "e", a[0]))  # after ours: sees P too
    return seen


@pytest.mark.parametrize("model_type", ["bart", "mbart"])
def test_prompt_vectors_precede_the_summed_embeddings_and_take_no_position(model_type: str) -> None:
    # Official code: cat(P, embed_tokens(ids)·scale + embed_positions) before layernorm_embedding; the real tokens keep
    # positions 0..T-1 (BART's learned table is offset by 2 rows).
    model = build(model_type).eval()
    inject(model, DesignPoint(prompt_length=5))
    enc = model.model.encoder
    seen = norm_input(model, "model.encoder.layernorm_embedding")
    x = inputs(model_type)
    model(**x)
    e = enc.embed_tokens(x["input_ids"]) + enc.embed_positions.weight[2:2 + T]
    torch.testing.assert_close(seen["e"], torch.cat([enc.layernorm_embedding.petl_prompt.vectors.expand(B, -1, -1), e],
                                                    dim=1), atol=0, rtol=0)


@pytest.mark.parametrize("model_type", ["roberta", "bert"])
def test_prompt_vectors_follow_the_first_token_and_keep_every_position_and_token_type(model_type: str) -> None:
    # Encoder-only: [e_0, P, e_1, ..., e_{T-1}] with e_t = word(id_t) + position + token type as without a prompt:
    # RoBERTa numbers real tokens from padding_idx + 1 and gives padding padding_idx; BERT numbers from 0.
    model = AutoModelForSequenceClassification.from_config(tiny_config(model_type, type_vocab_size=2)).eval()
    inject(model, DesignPoint(prompt_length=5))
    base = model.base_model
    seen = norm_input(model, f"{model.base_model_prefix}.embeddings.LayerNorm")
    ids = torch.randint(5, 128, (B, T))
    ids[1, -3:] = 1  # padding in the second row
    mask = (ids != 1).long()
    types = torch.zeros_like(ids)
    types[:, T // 2:] = 1
    model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    emb = base.embeddings
    if model_type == "roberta":
        pos = torch.cumsum(mask, dim=1) * mask + 1  # padding_idx = 1
    else:
        pos = torch.arange(T).expand(B, T)
    e = emb.word_embeddings(ids) + emb.position_embeddings(pos) + emb.token_type_embeddings(types)
    prompt = emb.LayerNorm.petl_prompt.vectors.expand(B, -1, -1)
    torch.testing.assert_close(seen["e"], torch.cat([e[:, :1], prompt, e[:, 1:]], dim=1), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("model_type", ["bart", "roberta"])
def test_prompt_tuning_keeps_padding_masked(model_type: str) -> None:
    # Padding must stay invisible with the (T + l)-long masks: BART's encoder gets a finished 4-D mask, its decoder a
    # widened cross-attention mask; RoBERTa a widened 2-D mask.
    model = build(model_type).eval()
    inject(model, DesignPoint(prompt_length=5))
    x = inputs(model_type)
    ids = x["input_ids"][:1]
    padded = torch.cat([ids, torch.ones(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, T), torch.zeros(1, 4)], dim=1).long()
    extra = {"decoder_input_ids": x["decoder_input_ids"][:1]} if model_type == "bart" else {}
    torch.testing.assert_close(model(input_ids=ids, **extra).logits,
                               model(input_ids=padded, attention_mask=mask, **extra).logits, atol=1e-5, rtol=1e-5)


def test_prompt_length_does_not_count_against_the_position_table() -> None:
    # Before, prompts took positions: l = 200 plus 100 tokens overflowed RoBERTa's 256-position tiny table with an
    # index error mid-trial. Now only the input needs positions (see test_models for the refusal of long inputs).
    model = build("roberta").eval()
    inject(model, DesignPoint(prompt_length=200))
    out = model(input_ids=torch.randint(5, 128, (1, 100)), output_hidden_states=True)
    assert out.hidden_states[-1].shape == (1, 300, D)
