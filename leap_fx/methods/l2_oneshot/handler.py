"""One-shot structured pruning by weight norm: no training, no data, one pass over the weights.

Scores (``FixedMask`` owners on every head and FFN neuron of the Plan):

- head ``h``: the L2 norm of its q/k/v rows and out columns together, ``||[W_q,h; W_k,h; W_v,h; W_o,h^T]||``
  (under grouped-query attention a kv head's rows count towards every q head that reads it);
- neuron ``j``: the product of its member norms ``||W_up,j|| * ||W_down,:,j||`` (and ``||W_gate,j||``), the
  neuron's gain from input to output in the absence of the activation.

Scores are divided by their kind's mean (heads and neurons have different scales), then granules are
kept from the highest score down until their cost reaches the target (``density``: the kept weights
reach ``target_density`` of the governed ones; ``flops`` / ``latency``: the cost model of
``leap_fx.costs``), every family keeping at least one granule; under grouped-query attention the kept heads
are then made a set strip can realise (``methods/gqa.py``: at most as many, by score), and a mixture of
experts' routed experts keep equal widths (``methods/expert_widths.py``; whole experts are kept). A useful baseline on its own, and the proof of the
one-shot path: prepare -> calibrate -> fold -> strip -> export, with no training loop.
"""
from __future__ import annotations

import torch

from leap_fx.costs import CostModel, PiecewiseLinear, target_costs
from leap_fx.masks.carrier import granule_sums
from leap_fx.masks.owner import FixedMask
from leap_fx.masks.lifecycle import carriers, original, owners
from leap_fx.methods.base import OneShotMethod
from leap_fx.methods.expert_widths import equal_widths
from leap_fx.methods.gqa import gqa_realisable
from leap_fx.methods.l2_oneshot.config import L2OneShotConfig
from leap_fx.methods.registry import register
from passes.analyze.plan import EXPERTS

__all__ = ["L2OneShot", "allocate", "member_norms"]


def member_norms(model) -> dict[str, list[torch.Tensor]]:
    """Per owner key, the squared-norm grid contributed by each member weight (one entry per weight)."""
    out: dict[str, list[torch.Tensor]] = {}
    for _, mod, pname, carrier in carriers(model):
        sums = granule_sums([(carrier, original(mod, pname))], value=torch.square)
        for o in carrier.owners:
            out.setdefault(o.key, []).append(sums[id(o)])
    return out


def allocate(scores: dict[str, torch.Tensor], cost, budget: float) -> dict[str, torch.Tensor]:
    """0/1 grids keeping the highest scores until the cost of the kept granules reaches ``budget``
    (each owner keeps its best granule first). ``cost``: a ``CostModel``, or ``{key: cost per granule}``."""
    if not isinstance(cost, CostModel):
        cost = CostModel("density", {k: PiecewiseLinear.linear(cost[k], s.numel()) for k, s in scores.items()},
                         {k: s.numel() for k, s in scores.items()})
    keep = {k: torch.zeros_like(s) for k, s in scores.items()}
    counts = {k: 1 for k in scores}
    for k, s in scores.items():
        keep[k].view(-1)[int(s.reshape(-1).argmax())] = 1.0
    spent = float(cost.cost(counts))
    ranked = sorted(((float(v), k, i) for k, s in scores.items() for i, v in enumerate(s.reshape(-1).tolist())),
                    reverse=True)
    for _, k, i in ranked:
        if spent >= budget:
            break
        if keep[k].view(-1)[i] == 0:
            keep[k].view(-1)[i] = 1.0
            spent += cost.marginal(k, counts[k])
            counts[k] += 1
    return keep


@register(L2OneShotConfig)
class L2OneShot(OneShotMethod):
    def make_owner(self, shape, key, device=None) -> FixedMask:
        return FixedMask(shape, key=key, device=device)

    def prepare(self, model, plan):
        super().prepare(model, plan)
        self.kinds = {k: f.kind for k, f in plan.families.items() if f.kind != EXPERTS} if plan is not None else {}
        self.plan = plan

    @torch.no_grad()
    def calibrate(self, model, batches=None, teacher=None) -> dict:
        own = owners(model)
        tied = {k: o for k, o in own.items() if k in self.kinds}
        norms = member_norms(model)
        raw = {k: (torch.stack(norms[k]).sum(0).sqrt() if self.kinds[k] == "attention"
                   else torch.stack(norms[k]).sqrt().prod(0)) for k in tied}
        mean = {kind: torch.cat([raw[k].reshape(-1) for k in raw if self.kinds[k] == kind]).mean().clamp_min(1e-12)
                for kind in {self.kinds[k] for k in raw}}
        scores = {k: raw[k] / mean[self.kinds[k]] for k in tied}
        goal = self.config.goal
        costs = target_costs(self.config, model, self.plan)
        costs = costs.only(tied) if goal.unit == "density" else costs
        keep = gqa_realisable(allocate(scores, costs, goal.value * costs.total), scores, self.plan)
        keep = equal_widths(model, keep, scores, self.plan, {})
        for k, o in own.items():
            o.set(keep[k] if k in keep else torch.ones(o.grid_shape))
        counts = {k: int(v.sum()) for k, v in keep.items()}
        density = sum(counts[k] * o.count / o.granules for k, o in tied.items()) / sum(o.count for o in tied.values())
        return {"density": density, goal.unit: float(costs.fraction(counts)), "kept": counts}
