"""Random structured pruning: every head and neuron gets a seeded uniform score, then the granules are
kept from the highest score down until the target's cost is reached (``l2_oneshot.allocate``, the same
budget rule as l2-oneshot, every family keeping at least one granule; under grouped-query attention a set
strip can realise, ``methods/gqa.py``). No data, no training: the floor
an importance criterion has to clear (on some models a norm-based choice of FFN neurons does worse)."""
from __future__ import annotations

import torch

from leap_fx.costs import target_costs
from leap_fx.masks.owner import FixedMask
from leap_fx.masks.lifecycle import owners
from leap_fx.methods.base import OneShotMethod
from leap_fx.methods.gqa import gqa_realisable
from leap_fx.methods.l2_oneshot.handler import allocate
from leap_fx.methods.random.config import RandomConfig
from leap_fx.methods.registry import register

__all__ = ["RandomPruning"]


@register(RandomConfig)
class RandomPruning(OneShotMethod):
    def make_owner(self, shape, key, device=None) -> FixedMask:
        return FixedMask(shape, key=key, device=device)

    def prepare(self, model, plan):
        super().prepare(model, plan)
        self.plan = plan

    @torch.no_grad()
    def calibrate(self, model, batches=None, teacher=None) -> dict:
        own = owners(model)
        tied = {k: o for k, o in own.items() if self.plan is not None and k in self.plan.families}
        g = torch.Generator().manual_seed(int(self.config.score_seed))
        scores = {k: torch.rand(o.grid_shape, generator=g) for k, o in sorted(tied.items())}
        goal = self.config.goal
        costs = target_costs(self.config, model, self.plan)
        costs = costs.only(tied) if goal.unit == "density" else costs
        keep = gqa_realisable(allocate(scores, costs, goal.value * costs.total), scores, self.plan)
        for k, o in own.items():
            o.set(keep[k] if k in keep else torch.ones(o.grid_shape))
        counts = {k: int(v.sum()) for k, v in keep.items()}
        return {goal.unit: float(costs.fraction(counts)), "kept": counts, "seed": int(self.config.score_seed)}
