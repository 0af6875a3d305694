"""LEAP lifecycle on a model: prepare -> (train) -> freeze (optional) -> fold.

``prepare`` registers one ``LeapMask`` parametrization per prunable weight tensor; weights of a Plan
family share one ``LeapScores`` owner under the tied granules ``"head"`` / ``"neuron"``. ``fold`` bakes
the masks into plain weights, leaving a model whose state_dict keys equal the dense model's.
"""
from __future__ import annotations

import math
from fnmatch import fnmatch
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from leap_fx.config import TIED, LeapConfig, parse_granule
from leap_fx.mask import LeapMask, LeapScores
from leap_fx.method import LeapPruning

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


def _included(fqn: str, config: LeapConfig) -> bool:
    return any(fnmatch(fqn, p) for p in config.include) and not any(fnmatch(fqn, p) for p in config.exclude)


def _prunable(model: nn.Module, config: LeapConfig, plan) -> dict[str, tuple[nn.Module, str, int]]:
    """weight name -> (module, parameter name, output axis) for every weight LEAP will mask."""
    in_plan = set(plan.weight_names()) if plan is not None else set()
    found = {}
    for fqn, mod in model.named_modules():
        for typ, pname, out_axis, plan_only in PRUNABLE:
            if isinstance(mod, typ) and _included(fqn, config):
                name = f"{fqn}.{pname}" if fqn else pname
                if getattr(mod, pname, None) is not None and (not plan_only or name in in_plan):
                    found[name] = (mod, pname, out_axis)
                break
    return found


def _stored_block(spec: str, shape, out_axis: int, name: str) -> tuple[int, int]:
    """Granule spec (Linear [out, in] convention) -> block in the stored layout; checks divisibility."""
    kind, block = parse_granule(spec)
    in_dim = shape[1 - out_axis]
    rc = (1, in_dim) if kind == "row" else block
    stored = rc if out_axis == 0 else (rc[1], rc[0])
    if len(shape) != 2 or shape[0] % stored[0] or shape[1] % stored[1]:
        raise ValueError(f"LEAP block {spec!r} does not divide weight {name!r} of shape {tuple(shape)} "
                         f"(stored block {stored}). Fix: choose a block_size/granule dividing both dims "
                         f"(e.g. '1x1' or a common divisor) or exclude it via LeapConfig(exclude=[...]).")
    return stored


def _check_plan(model: nn.Module, plan) -> None:
    """Every Plan slice must name an existing 2-D parameter whose axis holds the slice."""
    for fam in plan.families.values():
        for s in fam.slices:
            try:
                w = getattr(model.get_submodule(s.fqn), s.param)
            except AttributeError:
                w = None
            if not isinstance(w, torch.Tensor) or w.dim() != 2 or s.start + s.size > w.shape[s.axis]:
                raise ValueError(f"Plan slice {s.role}={s.weight_name}[{s.start}:{s.start + s.size}] on axis "
                                 f"{s.axis} does not fit this model: build the plan from this model with "
                                 f"plan = leap_fx.analyze(model, example_inputs)")


def prepare(model: nn.Module, config: LeapConfig, plan=None) -> nn.Module:
    """Register a LeapMask on every prunable weight (in place); returns ``model``."""
    if any(True for _ in _leap_tensors(model)):
        raise ValueError("model is already prepared for LEAP: fold(model) first, or prepare a fresh model")
    g = config.granules()
    if plan is None and config.needs_plan:
        raise ValueError(f"granularity {config.granularity!r} (attention={g['attention']!r}, "
                         f"ffn={g['ffn']!r}) {NEEDS_PLAN_MSG}")
    if plan is not None:
        _check_plan(model, plan)
    targets = _prunable(model, config, plan)
    masks: dict[str, LeapMask] = {}
    kw = dict(temperature=config.temperature, sigma_init=config.sigma0, sigma_grad=config.sigma_grad)

    # tied owners: one per family, shared by all its member slices
    for fam in (plan.families.values() if plan is not None else ()):
        spec = g[fam.kind]
        if parse_granule(spec)[0] not in TIED:
            continue
        members = [s for s in fam.slices if s.weight_name in targets]
        if not members:
            continue
        dev = getattr(targets[members[0].weight_name][0], members[0].param).device
        owner = LeapScores((fam.granules,), key=fam.fqn, device=dev, **kw)
        unit = getattr(fam, "head_dim", 1)
        for s in members:
            shape = tuple(getattr(targets[s.weight_name][0], s.param).shape)
            group = fam.num_heads // fam.num_kv_heads if s.role in ("k", "v") else 1
            masks.setdefault(s.weight_name, LeapMask()).add_tied(owner, shape, s.axis, s.start, s.size,
                                                                 unit, group)

    # per-matrix owners: block / row grids over the whole tensor
    for name, (mod, pname, out_axis) in targets.items():
        if name in masks:
            continue
        fam = plan.family_of(name) if plan is not None else None
        spec = g[fam.kind] if fam is not None else (g["other"] if plan is not None else g["ffn"])
        shape = tuple(getattr(mod, pname).shape)
        block = _stored_block(spec, shape, out_axis, name)
        owner = LeapScores((shape[0] // block[0], shape[1] // block[1]), key=name,
                           device=getattr(mod, pname).device, **kw)
        masks[name] = LeapMask(owner, block)

    for name, lm in masks.items():
        mod, pname, _ = targets[name]
        parametrize.register_parametrization(mod, pname, lm)
    return model


def _leap_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, LeapMask]]:
    for fqn, mod in model.named_modules():
        if parametrize.is_parametrized(mod):
            for pname, plist in mod.parametrizations.items():
                for p in plist:
                    if isinstance(p, LeapMask):
                        yield (f"{fqn}.{pname}" if fqn else pname), mod, pname, p


def owners(model: nn.Module) -> dict[str, LeapScores]:
    """Every LeapScores owner once, keyed by family FQN (tied) or weight name (per matrix)."""
    out: dict[str, LeapScores] = {}
    seen = set()
    for _, _, _, lm in _leap_tensors(model):
        for o in lm.owners:
            if id(o) not in seen:
                seen.add(id(o))
                out[o.key] = o
    return out


@torch.no_grad()
def densities(model: nn.Module) -> dict[str, float]:
    """Measured hard-mask density per prepared weight tensor (uncovered indices count as kept)."""
    return {name: float(lm.mask(mod.parametrizations[pname].original.shape, hard=True).mean())
            for name, mod, pname, lm in _leap_tensors(model)}


def param_groups(model: nn.Module, lr: float = 3e-5, mask_lr: float = 1e-2,
                 weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups (App. A): weights at ``lr``; all S and sigma at ``mask_lr`` (no decay). Deduplicated."""
    mask_params, ids = [], set()
    for o in owners(model).values():
        for p in o.parameters():
            if id(p) not in ids:
                ids.add(id(p))
                mask_params.append(p)
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
            {"params": mask_params, "lr": mask_lr, "weight_decay": 0.0, "name": "leap"}]


def freeze(model: nn.Module) -> nn.Module:
    """Turn every LeapMask into a prune-API ``weight_orig`` / ``weight_mask`` pair (LeapPruning).

    A single whole-tensor owner is frozen faithfully (its S, sigma, T, block). Tied / multi-segment masks
    are frozen with the expanded hard mask as scores and sigma chosen so ``ceil(k n)`` equals its count.
    """
    for name, mod, pname, lm in list(_leap_tensors(model)):
        shape = mod.parametrizations[pname].original.shape
        hard = lm.mask(shape, hard=True).detach().clone()
        owner = lm.owners[0]
        faithful = len(lm.segments) == 1 and lm.segments[0][0] == "block" and owner.fixed_k is None
        kw = dict(scores=owner.scores, sigma=owner.sigma, temperature=owner.temperature,
                  block=lm.segments[0][2]) if faithful else None
        if kw is None or not torch.equal(LeapPruning(**kw).compute_mask(hard, torch.ones_like(hard)), hard):
            n, ones = hard.numel(), float(hard.sum())
            k = (ones - 0.5) / n
            kw = dict(scores=hard, sigma=torch.tensor(math.log(k / (1 - k)), dtype=torch.float64),
                      temperature=1.0, block=(1, 1))
        parametrize.remove_parametrizations(mod, pname, leave_parametrized=False)
        LeapPruning.apply(mod, pname, **kw)
        if not torch.equal(getattr(mod, pname + "_mask"), hard.to(getattr(mod, pname + "_mask").dtype)):
            raise RuntimeError(f"freeze: frozen mask of {name} differs from the LEAP hard mask")
    return model


def fold(model: nn.Module) -> nn.Module:
    """Bake LEAP masks (and prune masks left by ``freeze``) into plain weights; remove the reparametrizations."""
    for _, mod, pname, _ in list(_leap_tensors(model)):
        parametrize.remove_parametrizations(mod, pname, leave_parametrized=True)
    for mod in model.modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(mod, hook._tensor_name)
    return model
