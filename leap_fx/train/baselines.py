"""Baselines trained in the same loop, same epochs, same target density, same granularity as LEAP.

Both reuse LEAP's ``LeapMask`` (so they fold, strip and export exactly like LEAP) with ``fixed_k`` set
every step by the cubic schedule of Eq. 1 (Zhu & Gupta 2017):

- ``magnitude``: scores are the weight magnitudes summed over each granule (over every tied member),
  recomputed every ``prune_every`` steps and multiplied by the current mask so pruned granules stay
  pruned (as Zhu & Gupta's masks). Scores are not trained.
- ``movement`` (Sanh et al. 2020): scores S are learned with the straight-through estimator
  (dL/dS = dL/dW' · W), Top-K with K from the cubic schedule; σ is frozen.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .methods import ScheduledMethod


def _masked_weights(model: nn.Module):
    """``(module, name)`` of every parametrized tensor carrying a LeapMask."""
    from leap_fx.mask import LeapMask
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for name, plist in module.parametrizations.items():
            if any(isinstance(p, LeapMask) for p in plist):
                yield module, name


@torch.no_grad()
def magnitude_scores(model: nn.Module, owners: dict) -> dict[str, torch.Tensor]:
    """Per owner, ``sum |W|`` over each granule's elements (all tied members), of the masked weights.

    Computed generically through the masks' own STE backward: with ``L = sum(W' * sign(W))`` and
    ``W' = W * M``, ``dL/dS_g = sum_{i in g} |W_i|`` for every granule geometry (block, row, head, neuron).
    """
    scores = [o.scores for o in owners.values()]
    flags = [s.requires_grad for s in scores]
    for s in scores:
        s.requires_grad_(True)
    try:
        with torch.enable_grad():
            total = 0.0
            for module, name in _masked_weights(model):
                original = module.parametrizations[name].original
                total = total + (getattr(module, name) * original.detach().sign()).sum()
            grads = torch.autograd.grad(total, scores, allow_unused=True)
    finally:
        for s, f in zip(scores, flags):
            s.requires_grad_(f)
    out = {}
    for (key, owner), g in zip(owners.items(), grads):
        g = torch.zeros_like(owner.scores) if g is None else g
        out[key] = g * owner.hard_mask()  # pruned granules keep score 0: masks only shrink
    return out


class MagnitudeMethod(ScheduledMethod):
    """Gradual magnitude pruning (Zhu & Gupta 2017) with the cubic schedule (Eq. 1)."""

    name = "magnitude"

    def setup(self, model):
        super().setup(model)
        for owner in self.owners(model).values():
            owner.scores.requires_grad_(False)

    def param_groups(self, model):
        mask_params = {id(p) for o in self.owners(model).values() for p in o.parameters()}
        return [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in mask_params],
                 "lr": self.config.lr}]

    def before_step(self, model, step):
        every = max(1, int(self.config.prune_every))
        if step % every == 0:
            self._rescore(model)  # ranks by |W| under the previous mask, then the new K applies
        return super().before_step(model, step)

    def _rescore(self, model):
        owners = self.owners(model)
        for key, s in magnitude_scores(model, owners).items():
            owners[key].scores.data.copy_(s)

    def finish(self, model):
        self._rescore(model)
        return super().finish(model)


class MovementMethod(ScheduledMethod):
    """Movement pruning (Sanh et al. 2020): learned scores S, Top-K with the cubic schedule (Eq. 1)."""

    name = "movement"
