"""Put a design point into an unmodified HuggingFace model: modules attached as children of the modules they modify,
wired by forward hooks (and, for the per-head forms and the parallel attention adapter, by transformers'
attention-function registry), then the trainable set fixed by module type.

Every hook finds its PETL module through the module it runs on (see `finetune.petl.insertion`), so
`copy.deepcopy` of an injected model and DataParallel replicas run their own modules; `Injection.remove()` undoes
all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn

from finetune.designpoint import DesignPoint, SiteSpec
from finetune.petl.base import PetlModule, petl_named_parameters
from finetune.petl.forms import PrefixKV
from finetune.petl.insertion import (
    ATTN_IMPLEMENTATION,
    LINK,
    HeadSite,
    SublayerSite,
    WeightSite,
    attn_implementation,
    attn_input_hook,
    capture_input_hook,
    ffn_output_hook,
    link,
    link_hook,
    prefix_hook,
    sequential_output_hook,
    weight_output_hook,
)
from finetune.petl.prompt import Prompt, base_mask_hook, cross_mask_hook, encoder_mask_hook, prompt_hook
from finetune.sitemap import AttnSlot, FamilyMap, StackMap, dims, family_of, get_path, prompt_map, width
from finetune.vocabulary import Backbone, Insertion, Representation


@dataclass
class Injection:
    """What `inject` did, so `remove()` can undo it: hooks, added modules, links, the attention implementation and
    the trainable flags it changed."""

    design: DesignPoint
    family: FamilyMap
    model: nn.Module = field(repr=False)
    handles: list[Any] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # names of the PetlModules, as named_modules() gives them
    placed: list[tuple[nn.Module, str]] = field(default_factory=list)
    links: list[tuple[nn.Module, str]] = field(default_factory=list)
    attn_implementation: str | None = None  # the model's before injection
    requires_grad: dict[str, bool] = field(default_factory=dict)

    def remove(self) -> None:
        """Restore the model as it was before `inject`: no hook, no PETL module, its attention implementation and its
        trainable flags. Weights trained in place (BitFit biases, a task head) keep their trained values."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for parent, name in reversed(self.placed):
            delattr(parent, name)
        for module, name in self.links:
            module.__dict__.pop(LINK + name, None)
        self.placed.clear()
        self.links.clear()
        if attn_implementation(self.model.config) != self.attn_implementation and self.attn_implementation:
            self.model.set_attn_implementation(self.attn_implementation)
        for name, p in self.model.named_parameters():
            p.requires_grad_(self.requires_grad.get(name, p.requires_grad))
        self.added = []


def _place(inj: Injection, parent: nn.Module, name: str, module: PetlModule) -> PetlModule:
    """Attach `module` under `parent` on its device and dtype, in its train/eval mode."""
    ref = next(parent.parameters(), None)
    ref = next(inj.model.parameters()) if ref is None else ref
    module.to(device=ref.device, dtype=ref.dtype)
    module.train(parent.training)
    parent.add_module(name, module)
    inj.placed.append((parent, name))
    return module


def _weight_sites(inj: Injection, layer: nn.Module, spec: SiteSpec, rep: Representation, projs: tuple,
                  dm: Any) -> None:
    name = f"petl_{rep.value}"
    for proj in projs:
        host = get_path(layer, proj.path)
        d_in, d_out = width(dm, proj.d_in), width(dm, proj.d_out)
        start = None if proj.out_slice is None else proj.out_slice[0] * d_out
        _place(inj, host, name, WeightSite(spec, d_in, d_out, start))
        inj.handles.append(host.register_forward_hook(partial(weight_output_hook, name)))


def _attn_slot(inj: Injection, stack: nn.Module, sm: StackMap, slot: AttnSlot, layers: nn.ModuleList, dm: Any) -> None:
    dp = inj.design
    modules = [get_path(layer, slot.module) for layer in layers]
    if dp.head_attn is not None:
        for m in modules:
            _place(inj, m, "petl_head", HeadSite(dp.head_attn))
        if not hasattr(stack, "petl_prefix"):
            _place(inj, stack, "petl_prefix", nn.ModuleDict())
        prefix = PrefixKV(len(modules), dp.head_attn.size, dm.kv_heads, dm.head_dim, dm.d, dp.head_attn.prefix_mlp)
        _place(inj, stack.petl_prefix, slot.kind, prefix)
        inj.handles.append(stack.register_forward_pre_hook(partial(prefix_hook, slot.kind, sm.layers, slot.module)))
    for layer, module in zip(layers, modules):
        if dp.attn is not None and dp.attn.insertion is Insertion.PARALLEL:
            # the official PA at attention: Δ(x) of the attention input, added to the head outputs before W_o
            _place(inj, module, "petl_attn", SublayerSite(dp.attn, dm.d, dm.q_dim))
            inj.handles.append(module.register_forward_pre_hook(partial(attn_input_hook, "petl_attn"),
                                                                with_kwargs=True))
        elif dp.attn is not None:  # sequential (Houlsby): on W_o's output, before the layer's dropout
            out = get_path(layer, slot.out)
            _place(inj, out, "petl_attn", SublayerSite(dp.attn, dm.d, dm.d))
            inj.handles.append(out.register_forward_hook(partial(sequential_output_hook, "petl_attn")))
        for rep, proj in ((Representation.QUERY, slot.query), (Representation.VALUE, slot.value)):
            spec = getattr(dp, rep.value)
            if spec is not None:
                _weight_sites(inj, layer, spec, rep, (proj,), dm)


def _ffn(inj: Injection, layer: nn.Module, sm: StackMap, dm: Any) -> None:
    dp, slot = inj.design, sm.ffn
    for rep, projs in ((Representation.FC1, slot.fc1), (Representation.FC2, slot.fc2)):
        spec = getattr(dp, rep.value)
        if spec is not None:  # before the FFN adapter's hooks: LoRA is part of W, the adapter joins after it
            _weight_sites(inj, layer, spec, rep, projs, dm)
    if dp.ffn is None:
        return
    site = _place(inj, layer, "petl_ffn", SublayerSite(dp.ffn, dm.d, dm.d))
    paths = (slot.output, slot.residual) if site.parallel else (slot.output,)
    for path in paths:
        link(get_path(layer, path), "petl_ffn", site)
        inj.links.append((get_path(layer, path), "petl_ffn"))
    inj.handles.append(layer.register_forward_pre_hook(partial(link_hook, "petl_ffn", paths, slot.dropout)))
    if site.parallel:
        inj.handles.append(get_path(layer, slot.residual).register_forward_pre_hook(
            partial(capture_input_hook, "petl_ffn"), with_kwargs=True))
    inj.handles.append(get_path(layer, slot.output).register_forward_hook(
        partial(ffn_output_hook, "petl_ffn", slot.dropout is not None)))


def _prompt(inj: Injection, model: nn.Module) -> None:
    fam, length = inj.family, inj.design.prompt_length
    pm, base = prompt_map(fam, model.config.model_type, length), model.base_model
    norm = get_path(base, pm.norm)
    _place(inj, norm, "petl_prompt", Prompt(length, norm.weight.shape[0], at=pm.at))
    inj.handles.append(norm.register_forward_pre_hook(partial(prompt_hook, "petl_prompt")))
    mask_hook = encoder_mask_hook if pm.mask_4d else base_mask_hook
    inj.handles.append(get_path(base, pm.mask_host).register_forward_pre_hook(
        partial(mask_hook, length, pm.at), with_kwargs=True))
    if pm.decoder is not None:
        inj.handles.append(get_path(base, pm.decoder).register_forward_pre_hook(
            partial(cross_mask_hook, length, pm.at), with_kwargs=True))


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
    """Freeze by structure: backbone per `dp.backbone`, every PetlModule trains, the task head iff chosen.

    A task head is not part of the backbone: with train_task_head false it stays frozen, BitFit's biases included,
    which is what `finetune.accounting` counts."""
    petl = {id(p) for _, p in petl_named_parameters(model)}
    for name, p in model.named_parameters():
        if id(p) in petl:
            p.requires_grad_(True)
        elif dp.backbone is Backbone.FULL:
            p.requires_grad_(True)
        else:  # BitFit trains every bias of the backbone (He et al. Table 6, Ben Zaken et al.)
            p.requires_grad_(dp.backbone is Backbone.BIAS and name.rsplit(".", 1)[-1] == "bias")
    trains_head = dp.train_task_head or dp.backbone is Backbone.FULL
    for mod in task_head_modules(model, fam).values():
        mod.requires_grad_(trains_head)


def check_structure(model: nn.Module, fam: FamilyMap) -> None:
    """Fail before any change when the model class lacks a stack or layer module the family's site map names."""
    base = model.base_model
    for sm in fam.stacks:
        try:
            layers = get_path(get_path(base, sm.path), sm.layers)
            slot = sm.attn[0]
            for path in (slot.module, slot.out, sm.ffn.residual, sm.ffn.output):
                get_path(layers[0], path)
        except (AttributeError, IndexError, TypeError):
            raise ValueError(
                f"{type(model).__name__} is not supported: PETL sites of model type {model.config.model_type!r} are "
                f"placed through its {sm.path or 'base'!r} stack ({sm.path + '.' if sm.path else ''}{sm.layers}), "
                f"which {type(base).__name__} does not have; use the family's "
                f"{'encoder-decoder' if fam.default_task == 'seq2seq' else 'base'} model, its LM or its "
                "sequence-classification class"
            ) from None


def inject(model: nn.Module, dp: DesignPoint) -> Injection:
    """Add the design's modules to `model` (in place), keep its train/eval mode, and fix which parameters train.

    Raises ValueError, before changing anything, for an unsupported model type or class, a model that already
    carries a design, and BitFit on a backbone without biases.
    """
    from finetune.accounting import check_bitfit  # deferred on purpose: breaks the accounting -> inject cycle

    fam = family_of(model.config)
    if any(isinstance(m, PetlModule) for m in model.modules()):
        raise ValueError(f"this {type(model).__name__} already carries PETL modules (a design was injected); call "
                         "remove() on its Injection first, or inject into a fresh copy of the pretrained model")
    check_structure(model, fam)
    check_bitfit(dp, model.config, sum(1 for n, _ in _backbone_params(model, fam) if n.endswith(".bias")))
    inj = Injection(design=dp, family=fam, model=model, attn_implementation=attn_implementation(model.config),
                    requires_grad={n: p.requires_grad for n, p in model.named_parameters()})
    if dp.prompt_length:
        _prompt(inj, model)
    for sm in fam.stacks:
        stack = get_path(model.base_model, sm.path)
        layers = get_path(stack, sm.layers)
        dm = dims(model.config, sm)
        for slot in sm.attn:
            _attn_slot(inj, stack, sm, slot, layers, dm)
        for layer in layers:
            _ffn(inj, layer, sm, dm)
    if dp.head_attn is not None or (dp.attn is not None and dp.attn.insertion is Insertion.PARALLEL):
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    set_trainable(model, dp, fam)
    inj.added = [n for n, m in model.named_modules() if isinstance(m, PetlModule)]
    return inj


def _backbone_params(model: nn.Module, fam: FamilyMap) -> list[tuple[str, nn.Parameter]]:
    head = {id(p) for m in task_head_modules(model, fam).values() for p in m.parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in head]


def fold_prefixes(model: nn.Module) -> None:
    """Replace every prefix MLP by the vectors it produces (what is stored after training)."""
    for module in model.modules():
        if isinstance(module, PrefixKV):
            module.fold()
