"""Training FLOPs of a design on a frozen backbone, in closed form from the model config and a batch shape.

Nothing is built or run: the count walks the site map's stacks and dimensions (`finetune.sitemap`) in forward
order, so a plan can price a search before any GPU hour. Counted: matrix products only, 2 FLOPs per multiply-add
(element-wise ops, softmax, LayerNorm, embedding lookups and the optimizer update are not):

- forward: every projection of every layer (query, key, value, output of each attention module; the FFN matrices),
  the attention score and value products over all keys (the design's l prefix slots included; a causal mask is
  counted as the dense product a masked kernel executes, an upper bound by about half of those two products for
  kernels that skip masked blocks), the LM head on every target token or the classification head per row, and the
  design's own products: adapters (d·r down, r·d up) and LoRA factors (r·d_in, r·d_out) on every token where they
  sit, the prefix reparametrisation MLP once per micro-batch and attention module.
- input gradients: for a product Y = X·W, dX costs as much as the forward, and is computed only when X depends on a
  trainable parameter. Walking forward, that is false until the first trainable module: below it (the embeddings,
  and e.g. the whole first attention block of an FFN-only design) autograd computes no input gradient, and we count
  none. For the attention products, dQ, dK, dV and the probabilities' gradient each count where their input needs it.
- weight gradients: dW costs as much as the forward, and only trainable matrices get one: the design's adapters,
  LoRA factors and prefix MLP, the prefix keys and values themselves (dP_k, dP_v), the classification head when it
  trains, and the backbone's matrices only under full fine-tuning. A frozen matrix gets none; BitFit's bias
  gradients are sums, not products (its biases only make every projection's output depend on a trainable).

Checked exactly against torch's FlopCounterMode on executed tiny models (tests/test_flops.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from finetune.designpoint import DesignPoint
from finetune.gpus import PEAK_BF16, peak_flops  # noqa: F401 (re-exported for benchmarks)
from finetune.sitemap import AttnSlot, Dims, StackMap, dims, family_of, width
from finetune.vocabulary import Backbone


@dataclass(frozen=True)
class Shape:
    """One micro-batch: `rows` sequences of `src` source (input) tokens and `tgt` target tokens each, padded."""

    rows: float
    src: float
    tgt: float = 0.0


@dataclass(frozen=True)
class Flops:
    forward: float
    activation_grad: float
    weight_grad: float

    @property
    def total(self) -> float:
        return self.forward + self.activation_grad + self.weight_grad

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.forward + other.forward, self.activation_grad + other.activation_grad,
                     self.weight_grad + other.weight_grad)

    def scaled(self, k: float) -> Flops:
        return Flops(k * self.forward, k * self.activation_grad, k * self.weight_grad)


def micro_batch_flops(design: DesignPoint, config: PretrainedConfig, task_kind: str, shape: Shape) -> Flops:
    """Forward and backward FLOPs of one micro-batch of `shape` (see the module docstring for what is counted)."""
    fam = family_of(config)
    w = _Walk(design, full=design.backbone is Backbone.FULL, bias=design.backbone is Backbone.BIAS)
    src = shape.src + design.prompt_length  # prompt vectors are prepended to the encoder (or only) stack's input
    encoder_flows = False
    flow = False
    for i, sm in enumerate(fam.stacks):
        tokens = shape.tgt if i > 0 else src  # BART's second stack is the decoder; one-stack families read the input
        dm = dims(config, sm)
        # The token embeddings are frozen unless the whole backbone trains; BitFit's biases reach the embeddings'
        # LayerNorm, and prompt vectors (trainable) join the first stack's input.
        flow = w.full or w.bias or (i == 0 and design.prompt_length > 0)
        for _ in range(int(sm.n_layers(config))):
            for slot in sm.attn:
                kv_tokens, kv_flow = (src, encoder_flows) if slot.kind == "cross" else (tokens, flow)
                flow = w.attention(dm, slot, tokens, kv_tokens, flow, kv_flow)
            flow = w.ffn(dm, sm, tokens, flow)
        encoder_flows = flow
    w.head(config, task_kind, shape, flow)
    per_row = Flops(w.fwd, w.act, w.wgrad)
    return per_row.scaled(shape.rows) + _prefix_mlp(design, config)


class _Walk:
    """Accumulates per-row FLOPs in forward order; each method returns whether its output depends on a trainable."""

    def __init__(self, design: DesignPoint, full: bool, bias: bool) -> None:
        self.design, self.full, self.bias = design, full, bias
        self.fwd = self.act = self.wgrad = 0.0

    def mm(self, macs: float, input_flows: bool, trains: bool) -> None:
        self.fwd += 2.0 * macs
        self.act += 2.0 * macs if input_flows else 0.0
        self.wgrad += 2.0 * macs if trains else 0.0

    def backbone(self, macs: float, input_flows: bool) -> bool:
        """A backbone projection; its output depends on a trainable if its input does or its weight/bias trains."""
        self.mm(macs, input_flows, self.full)
        return input_flows or self.full or self.bias

    def lowrank(self, d_in: int, r: int, d_out: int, tokens: float, input_flows: bool) -> None:
        """x·A·B (an adapter's down/up, or LoRA's factors): A's input may not need a gradient, B's always does."""
        self.mm(d_in * r * tokens, input_flows, True)
        self.mm(r * d_out * tokens, True, True)

    def attention(self, dm: Dims, slot: AttnSlot, nq: float, nkv: float, flow_x: bool, flow_kv: bool) -> bool:
        dp = self.design
        flow_q = self.backbone(dm.d * dm.q_dim * nq, flow_x)
        flow_k = self.backbone(dm.d * dm.kv_dim * nkv, flow_kv)
        flow_v = self.backbone(dm.d * dm.kv_dim * nkv, flow_kv)
        for spec, proj, n, flows in ((dp.query, slot.query, nq, flow_x), (dp.value, slot.value, nkv, flow_kv)):
            if spec is not None:
                self.lowrank(width(dm, proj.d_in), spec.size, width(dm, proj.d_out), n, flows)
        flow_q, flow_v = flow_q or dp.query is not None, flow_v or dp.value is not None
        flow_o = self.scores(nq, nkv, dm.q_dim, flow_q, flow_k, flow_v)
        flow_h = self.backbone(dm.q_dim * dm.d * nq, flow_o)
        if dp.attn is not None:  # parallel reads the sub-layer input x, sequential its output h
            self.lowrank(dm.d, dp.attn.size, dm.d, nq, flow_x if dp.attn.insertion.value == "parallel" else flow_h)
            flow_h = True
        return flow_x or flow_h  # the residual stream after the sub-layer

    def scores(self, nq: float, ntok: float, dq: int, flow_q: bool, flow_k: bool, flow_v: bool) -> bool:
        """S = Q·Kᵀ, O = P·V over ntok token keys, and the design's l prefix slots (trainable keys and values):
        prepended to the keys (the gated form, one softmax: dK and dV are computed over the whole concatenation),
        or a separate Δ = f(Q·P_kᵀ)·P_v added to the heads (`finetune.petl.forms.head_form`)."""
        spec = self.design.head_attn
        l_prefix = spec.size if spec is not None else 0
        concat = spec is not None and spec.composition.value == "gated"
        tok = 2.0 * nq * ntok * dq  # one product over the token keys
        pre = 2.0 * nq * l_prefix * dq  # one product over the prefix slots
        if concat:
            self.fwd += 2 * (tok + pre)
            self.act += (tok + pre) * (1 + flow_q) + 2 * tok  # dP (softmax input); dQ; token rows of dK and dV
            self.wgrad += 2 * pre  # prefix rows of dK and dV: P_k's and P_v's gradients
            return True
        self.fwd += 2 * (tok + pre)
        self.act += tok * ((flow_q or flow_k) + flow_q + flow_k + flow_v)  # dP, dQ, dK, dV of the token attention
        if l_prefix:
            self.act += pre * (1 + flow_q)  # the prefix scores' gradient; dQ through them
            self.wgrad += 2 * pre  # dP_k, dP_v
        return flow_q or flow_k or flow_v or l_prefix > 0

    def ffn(self, dm: Dims, sm: StackMap, n: float, flow_x: bool) -> bool:
        dp = self.design
        mid = any([self.backbone(width(dm, p.d_in) * width(dm, p.d_out) * n, flow_x) for p in sm.ffn.fc1])
        if dp.fc1 is not None:
            for p in sm.ffn.fc1:
                self.lowrank(width(dm, p.d_in), dp.fc1.size, width(dm, p.d_out), n, flow_x)
        mid = mid or dp.fc1 is not None
        flow_h = any([self.backbone(width(dm, p.d_in) * width(dm, p.d_out) * n, mid) for p in sm.ffn.fc2])
        if dp.fc2 is not None:
            for p in sm.ffn.fc2:
                self.lowrank(width(dm, p.d_in), dp.fc2.size, width(dm, p.d_out), n, mid)
        flow_h = flow_h or mid or dp.fc2 is not None
        if dp.ffn is not None:
            self.lowrank(dm.d, dp.ffn.size, dm.d, n, flow_x if dp.ffn.insertion.value == "parallel" else flow_h)
            flow_h = True
        return flow_x or flow_h

    def head(self, config: PretrainedConfig, task_kind: str, shape: Shape, flow: bool) -> None:
        """The LM head on every target token (trains only under full fine-tuning), or the classification head on one
        token per row (dense d·d, output d·labels; trained with the design)."""
        d = int(config.hidden_size)
        if task_kind == "seq2seq":
            self.mm(d * int(config.vocab_size) * shape.tgt, flow, self.full)
            return
        trains = self.design.train_task_head or self.full
        self.mm(d * d, flow, trains)
        self.mm(d * int(getattr(config, "num_labels", 2)), flow or trains or self.bias, trains)


def _prefix_mlp(design: DesignPoint, config: PretrainedConfig) -> Flops:
    """The prefix reparametrisation MLP: once per micro-batch and attention module (not per row). Each module runs the
    shared embedding → Linear(d, mlp) → tanh on its own and then its own row block of the last Linear
    (`finetune.petl.forms.PrefixKV`: per-module graphs for gradient checkpointing and ZeRO-3), so the first
    product is executed n times per kind. Its input is the trainable prefix embedding, so both products need input and
    weight gradients."""
    spec = design.head_attn
    if spec is None or not spec.prefix_mlp:
        return Flops(0.0, 0.0, 0.0)
    macs = 0.0
    for sm in family_of(config).stacks:
        dm, n = dims(config, sm), int(sm.n_layers(config))
        macs += len(sm.attn) * n * spec.size * (dm.d * spec.prefix_mlp + spec.prefix_mlp * 2 * dm.kv_dim)
    return Flops(2.0 * macs, 2.0 * macs, 2.0 * macs)
