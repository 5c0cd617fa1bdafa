"""Put a design point into an unmodified HuggingFace model: modules attached as children of the modules they modify,
wired by forward hooks (and, for the per-head forms, by transformers' attention-function registry), then the
trainable set fixed by module type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from trainables.design import Backbone, DesignPoint, Representation, SiteSpec
from trainables.petl.base import PetlModule, petl_named_parameters
from trainables.petl.prefix import ATTN_IMPLEMENTATION, HeadSite, PrefixKV
from trainables.petl.prompt import Prompt
from trainables.petl.site import SublayerSite, WeightSite
from trainables.sitemap import AttnSlot, FamilyMap, Proj, StackMap, dims, family_of, get_path, width


@dataclass
class Injection:
    """What `inject` did: the hooks (so it can be undone) and the names of the modules it added."""

    design: DesignPoint
    family: FamilyMap
    handles: list[Any] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _place(parent: nn.Module, name: str, module: PetlModule, like: nn.Module) -> PetlModule:
    ref = next(like.parameters())
    module.to(device=ref.device, dtype=ref.dtype)
    parent.add_module(name, module)
    return module


def _weight_sites(inj: Injection, layer: nn.Module, spec: SiteSpec, rep: Representation,
                  projs: tuple[Proj, ...], dm: Any) -> None:
    for proj in projs:
        host = get_path(layer, proj.path)
        d_in, d_out = width(dm, proj.d_in), width(dm, proj.d_out)
        out_slice = None if proj.out_slice is None else (proj.out_slice[0] * d_out, proj.out_slice[1])
        site = _place(host, f"petl_{rep.value}", WeightSite(spec, d_in, d_out, out_slice), host)
        inj.handles += site.attach(host)


def _attn_slot(inj: Injection, stack: nn.Module, sm: StackMap, slot: AttnSlot, layers: nn.ModuleList, dm: Any) -> None:
    dp = inj.design
    modules = [get_path(layer, slot.module) for layer in layers]
    if dp.head_attn is not None:
        heads = [_place(m, "petl_head", HeadSite(dp.head_attn), m) for m in modules]
        prefix = PrefixKV(len(modules), dp.head_attn.size, dm.kv_heads, dm.head_dim, dm.d, dp.head_attn.prefix_mlp)
        if not hasattr(stack, "petl_prefix"):
            stack.add_module("petl_prefix", nn.ModuleDict())
        _place(stack.petl_prefix, slot.kind, prefix, stack)

        def set_prefix(_module: nn.Module, _args: Any, prefix: PrefixKV = prefix, heads: list = heads) -> None:
            p = prefix()  # one reparametrisation pass per stack call, not per layer: (n, 2, kv, l, d_h)
            for i, site in enumerate(heads):
                site.prefix = (p[i, 0], p[i, 1])

        inj.handles.append(stack.register_forward_pre_hook(set_prefix))
    for layer, module in zip(layers, modules):
        if dp.attn is not None:
            site = _place(module, "petl_attn", SublayerSite(dp.attn, dm.d), module)
            inj.handles += site.attach(module, get_path(layer, slot.out))
        for rep, proj in ((Representation.QUERY, slot.query), (Representation.VALUE, slot.value)):
            spec = getattr(dp, rep.value)
            if spec is not None:
                _weight_sites(inj, layer, spec, rep, (proj,), dm)


def _prompt(inj: Injection, model: nn.Module) -> None:
    fam, length = inj.family, inj.design.prompt_length
    base = model.base_model
    if fam.prompt == "encoder_decoder":
        enc_map, dec_map = fam.stacks
        encoder, decoder = get_path(base, enc_map.path), get_path(base, dec_map.path)
        embed = get_path(encoder, enc_map.embed or "")
        prompt = _place(encoder, "petl_prompt", Prompt(length, embed.weight.shape[1], embed, at=0), encoder)
        inj.handles.append(encoder.register_forward_pre_hook(prompt.encoder_hook, with_kwargs=True))
        inj.handles.append(decoder.register_forward_pre_hook(prompt.decoder_hook, with_kwargs=True))
    elif fam.prompt == "encoder":
        embed = base.get_input_embeddings()
        prompt = _place(base, "petl_prompt", Prompt(length, embed.weight.shape[1], embed, at=1), base)
        inj.handles.append(base.register_forward_pre_hook(prompt.encoder_hook, with_kwargs=True))
    else:
        raise ValueError(
            f"prompt tuning needs an encoder input to extend; model type {model.config.model_type!r} is decoder-only, "
            f"got prompt.length={length}; use head_attn with form softmax (prefix tuning) instead"
        )


def task_head_modules(model: nn.Module, fam: FamilyMap) -> dict[str, nn.Module]:
    """The task-specific modules of a task model (classification heads); none for a bare or LM model."""
    base = model.base_model
    if base is model:
        return {}
    found = {}
    for name in fam.task_heads:
        for owner, prefix in ((model, ""), (base, f"{model.base_model_prefix}.")):
            mod = getattr(owner, name, None)
            if isinstance(mod, nn.Module):
                found[prefix + name] = mod
                break
    return found


def set_trainable(model: nn.Module, dp: DesignPoint, fam: FamilyMap) -> None:
    """Freeze by structure: backbone per `dp.backbone`, every PetlModule trains, the task head if chosen."""
    petl = {id(p) for _, p in petl_named_parameters(model)}
    for name, p in model.named_parameters():
        if id(p) in petl:
            p.requires_grad_(True)
        elif dp.backbone is Backbone.FULL:
            p.requires_grad_(True)
        else:  # BitFit trains every bias of the backbone (He et al. Table 6, Ben Zaken et al.)
            p.requires_grad_(dp.backbone is Backbone.BIAS and name.rsplit(".", 1)[-1] == "bias")
    if dp.train_task_head:
        for mod in task_head_modules(model, fam).values():
            mod.requires_grad_(True)


def inject(model: nn.Module, dp: DesignPoint) -> Injection:
    """Add the design's modules to `model` (in place) and fix which parameters train."""
    fam = family_of(model.config)
    inj = Injection(design=dp, family=fam)
    if dp.prompt_length:
        _prompt(inj, model)
    for sm in fam.stacks:
        stack = get_path(model.base_model, sm.path)
        layers = get_path(stack, sm.layers)
        dm = dims(model.config, sm)
        for slot in sm.attn:
            _attn_slot(inj, stack, sm, slot, layers, dm)
        for layer in layers:
            if dp.ffn is not None:
                site = _place(layer, "petl_ffn", SublayerSite(dp.ffn, dm.d), layer)
                inj.handles += site.attach(get_path(layer, sm.ffn.input), get_path(layer, sm.ffn.output))
            for rep, projs in ((Representation.FC1, sm.ffn.fc1), (Representation.FC2, sm.ffn.fc2)):
                spec = getattr(dp, rep.value)
                if spec is not None:
                    _weight_sites(inj, layer, spec, rep, projs, dm)
    if dp.head_attn is not None:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    set_trainable(model, dp, fam)
    inj.added = [n for n, m in model.named_modules() if isinstance(m, PetlModule)]
    return inj


def fold_prefixes(model: nn.Module) -> None:
    """Replace every prefix MLP by the vectors it produces (what is stored after training)."""
    for module in model.modules():
        if isinstance(module, PrefixKV):
            module.fold()
