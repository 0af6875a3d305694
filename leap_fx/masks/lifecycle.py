"""Masks on a model: prepare -> (train / calibrate) -> freeze (optional) -> fold.

``prepare`` registers one ``GranuleMask`` parametrization per prunable weight tensor; the weights of
a Plan family share one owner under the tied granules ``"head"`` / ``"neuron"``. Mixture of experts:
with ``ffn="neuron"`` every routed expert's neurons are tied on its slices of the fused expert tensors,
and every layer's whole experts (``ExpertsFamily``) are tied too (one granule per expert: its router row
and its slice of every fused tensor); fused tensors get no other masks. Which owner sits on
a grid is the caller's choice (``owner``: a factory ``(grid shape, key, device) -> MaskOwner``; each
method's handler passes its own).
``fold`` bakes the deterministic masks (real-valued too) into plain weights, leaving a model whose
state_dict keys equal the dense model's.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from leap_fx.masks.carrier import BlockSegment, GranuleMask, granule_sums
from leap_fx.masks.owner import FixedMask, MaskOwner
from leap_fx.masks.prune_api import LeapPruning
from leap_fx.masks.topk import LeapScores
from leap_fx.spec.mask import TIED, MaskSpec, parse_granule, stored_block
from passes.analyze.plan import EXPERTS, OUTPUT_ROLES

try:  # HF GPT-2 style Conv1D: weight stored [in, out]
    from transformers.pytorch_utils import Conv1D
except Exception:  # pragma: no cover - transformers is optional
    Conv1D = None

# module type -> (parameter name, output axis of the stored weight, needs a plan entry)
PRUNABLE: list[tuple[type, str, int, bool]] = [(nn.Linear, "weight", 0, False),
                                               (nn.MultiheadAttention, "in_proj_weight", 0, True)]
if Conv1D is not None:
    PRUNABLE.append((Conv1D, "weight", 1, False))

NEEDS_PLAN_MSG = "needs a Plan: plan = leap_fx.analyze(model, example_inputs)"
VALUE_ROLES = OUTPUT_ROLES  # tied slices that carry a real-valued owner's value (owner.py)
OwnerFactory = Callable[[tuple, str, Optional[torch.device]], MaskOwner]


def prunable(model: nn.Module, spec: MaskSpec, plan) -> dict[str, tuple[nn.Module, str, int]]:
    """weight name -> (module, parameter name, output axis) for every weight the spec masks."""
    in_plan = set(plan.weight_names()) if plan is not None else set()
    found = {}
    for fqn, mod in model.named_modules():
        for typ, pname, out_axis, plan_only in PRUNABLE:
            if isinstance(mod, typ) and spec.included(fqn):
                name = f"{fqn}.{pname}" if fqn else pname
                if getattr(mod, pname, None) is not None and (not plan_only or name in in_plan):
                    found[name] = (mod, pname, out_axis)
                break
    return found


def _check_plan(model: nn.Module, plan) -> None:
    """Every Plan slice must name an existing 2-D parameter (3-D for a fused experts tensor) whose axis holds it."""
    for fam in plan.families.values():
        for s in fam.slices:
            try:
                w = getattr(model.get_submodule(s.fqn), s.param)
            except AttributeError:
                w = None
            dims = 3 if s.expert is not None or (fam.kind == EXPERTS and s.role != "router") else 2
            if s.expert is not None and isinstance(w, torch.Tensor) and w.dim() == 3 and s.expert >= w.shape[0]:
                w = None
            if not isinstance(w, torch.Tensor) or w.dim() != dims or max(s.positions(), default=-1) >= w.shape[s.axis]:
                raise ValueError(f"Plan slice {s.role}={s.weight_name}{s.describe()} on axis "
                                 f"{s.axis} does not fit this model: build the plan from this model with "
                                 f"plan = leap_fx.analyze(model, example_inputs)")


def _tied(g: dict, fam) -> bool:
    """The family's weights share one owner: heads / neurons, and whole experts when neurons are tied."""
    return parse_granule(g["ffn" if fam.kind == EXPERTS else fam.kind])[0] in TIED


def prepare(model: nn.Module, spec: MaskSpec, plan=None, owner: Optional[OwnerFactory] = None) -> nn.Module:
    """Register a GranuleMask on every prunable weight (in place); returns ``model``. ``owner``: the mask
    owner factory (a method's handler passes its own; ``leap_fx.prepare(model, config, plan)`` finds the
    handler of ``config``)."""
    if any(True for _ in carriers(model)):
        raise ValueError("model is already prepared (it carries masks): fold(model) first, or prepare a fresh model")
    if owner is None:
        raise ValueError("prepare needs owner=<factory (shape, key, device) -> MaskOwner>: use a method's "
                         "handler (leap_fx.methods.build(config).prepare(model, plan)), or "
                         "leap_fx.prepare(model, config, plan) which finds it")
    make = owner
    g = spec.granules()
    if plan is None and spec.needs_plan:
        raise ValueError(f"granularity {spec.granularity!r} (attention={g['attention']!r}, "
                         f"ffn={g['ffn']!r}) {NEEDS_PLAN_MSG}")
    if plan is not None:
        _check_plan(model, plan)
    targets = prunable(model, spec, plan)
    masks: dict[str, GranuleMask] = {}
    shared: dict[str, MaskOwner] = {}  # tie -> owner: families reading one per-head tensor share heads
    for key, fam in (plan.families.items() if plan is not None else ()):  # tied: one owner per family
        if not _tied(g, fam):
            continue
        for s in fam.slices:  # fused expert tensors, a router that is no nn.Linear: masked through the Plan
            if s.weight_name not in targets and spec.included(s.fqn):
                targets[s.weight_name] = (model.get_submodule(s.fqn), s.param, 0)
        members = [s for s in fam.slices if s.weight_name in targets]
        if fam.frozen:  # heads strip cannot remove: no head masks, weights left dense
            for s in members:
                targets.pop(s.weight_name, None)
            continue
        if not members:
            continue
        dev = getattr(targets[members[0].weight_name][0], members[0].param).device
        tie = fam.tie
        own = shared.get(tie) if tie else None
        if own is None:
            own = make((fam.granules,), key, dev)  # keyed by the Plan key (a tie: by its first family)
            if tie:
                shared[tie] = own
        for s in members:
            shape = tuple(getattr(targets[s.weight_name][0], s.param).shape)
            group = fam.num_heads // fam.num_kv_heads if s.role in ("k", "v") else 1
            unit = s.size * group // fam.granules  # per role: latent attention's k / v heads differ from q's
            masks.setdefault(s.weight_name, GranuleMask()).add_tied(own, shape, s.axis, s.start, s.size, unit,
                                                                    group, s.role in VALUE_ROLES, s.index, s.expert)
    for name, (mod, pname, out_axis) in targets.items():  # per matrix: block / row grids
        if name in masks:
            continue
        fam = plan.family_of(name) if plan is not None else None
        granule = g.get(fam.kind, g["other"]) if fam is not None else (g["other"] if plan is not None else g["ffn"])
        shape = tuple(getattr(mod, pname).shape)
        block = stored_block(granule, shape, out_axis, name)
        own = make((shape[0] // block[0], shape[1] // block[1]), name, getattr(mod, pname).device)
        masks[name] = GranuleMask(own, block)
    for name, carrier in masks.items():
        mod, pname, _ = targets[name]
        parametrize.register_parametrization(mod, pname, carrier)
    return model


def carriers(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, GranuleMask]]:
    """``(weight name, module, parameter name, carrier)`` of every masked tensor."""
    for fqn, mod in model.named_modules():
        if parametrize.is_parametrized(mod):
            for pname, plist in mod.parametrizations.items():
                for p in plist:
                    if isinstance(p, GranuleMask):
                        yield (f"{fqn}.{pname}" if fqn else pname), mod, pname, p


def owners(model: nn.Module) -> dict[str, MaskOwner]:
    """Every owner once, keyed by family FQN (tied) or weight name (per matrix)."""
    out: dict[str, MaskOwner] = {}
    seen = set()
    for _, _, _, carrier in carriers(model):
        for o in carrier.owners:
            if id(o) not in seen:
                seen.add(id(o))
                out[o.key] = o
    return out


def original(mod: nn.Module, pname: str) -> torch.Tensor:
    """The unmasked weight under a parametrization."""
    return mod.parametrizations[pname].original


@torch.no_grad()
def densities(model: nn.Module) -> dict[str, float]:
    """Measured hard-mask density per masked weight tensor (uncovered indices count as kept)."""
    return {name: float(c.mask(original(mod, pname).shape, hard=True).mean())
            for name, mod, pname, c in carriers(model)}


@torch.no_grad()
def magnitudes(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per owner key, ``sum |W|`` over each granule's elements in every member weight (unmasked W)."""
    pairs = [(c, original(mod, pname)) for _, mod, pname, c in carriers(model)]
    sums = granule_sums(pairs)
    return {key: sums[id(o)] for key, o in owners(model).items()}


@torch.no_grad()
def zero_granules(model: nn.Module, plan, keep: dict[str, list[int]]) -> nn.Module:
    """Zero every head / neuron not in ``keep`` (family FQN -> kept granule indices; families not
    named keep everything) through the carrier, then fold: the same geometry training masks use."""
    prepare(model, MaskSpec(1.0, "structured"), plan, owner=lambda shape, key, dev: FixedMask(shape, key, dev))
    for key, o in owners(model).items():
        if key in keep:
            values = torch.zeros(o.grid_shape)
            values[list(keep[key])] = 1.0
            o.set(values)
    return fold(model)


def param_groups(model: nn.Module, lr: float = 3e-5, mask_lr: float = 1e-2,
                 weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups (LEAP App. A): weights at ``lr``; trainable mask state at ``mask_lr`` (no decay)."""
    mask_params, ids = [], set()
    for o in owners(model).values():
        for p in o.parameters():
            if id(p) not in ids:
                ids.add(id(p))
                if p.requires_grad:
                    mask_params.append(p)
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
            {"params": mask_params, "lr": mask_lr, "weight_decay": 0.0, "name": "masks"}]


def freeze(model: nn.Module) -> nn.Module:
    """Turn every carrier into a prune-API ``weight_orig`` / ``weight_mask`` pair (``LeapPruning``).

    A single whole-tensor LEAP owner is frozen faithfully (its S, sigma, T, block). Any other carrier
    is frozen with its expanded hard mask as scores and sigma chosen so ``ceil(k n)`` equals its count.
    """
    for name, mod, pname, carrier in list(carriers(model)):
        hard = carrier.mask(original(mod, pname).shape, hard=True).detach().clone()
        owner, seg = carrier.owners[0], carrier.segments[0]
        faithful = len(carrier.segments) == 1 and isinstance(seg, BlockSegment) and isinstance(owner, LeapScores)
        kw = dict(scores=owner.scores, sigma=owner.sigma, temperature=owner.temperature,
                  block=seg.block) if faithful else None
        if kw is None or not torch.equal(LeapPruning(**kw).compute_mask(hard, torch.ones_like(hard)), hard):
            n, ones = hard.numel(), float(hard.sum())
            k = (ones - 0.5) / n
            kw = dict(scores=hard, sigma=torch.tensor(math.log(k / (1 - k)), dtype=torch.float64),
                      temperature=1.0, block=(1, 1))
        parametrize.remove_parametrizations(mod, pname, leave_parametrized=False)
        LeapPruning.apply(mod, pname, **kw)
        if not torch.equal(getattr(mod, pname + "_mask"), hard.to(getattr(mod, pname + "_mask").dtype)):
            raise RuntimeError(f"freeze: frozen mask of {name} differs from the hard mask")
    return model


def fold(model: nn.Module) -> nn.Module:
    """Bake the deterministic masks (and prune masks left by ``freeze``) into plain weights."""
    for _, mod, pname, carrier in list(carriers(model)):
        was = carrier.training
        carrier.eval()  # deterministic masks: what evaluation saw is what is baked
        try:
            parametrize.remove_parametrizations(mod, pname, leave_parametrized=True)
        finally:
            carrier.train(was)
    for mod in model.modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(mod, hook._tensor_name)
    return model
