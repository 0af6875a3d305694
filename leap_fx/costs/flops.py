"""FLOPs costs: forward FLOPs per head / neuron at ``seq`` tokens, batch 1, from the Plan's shapes.

A head's share of q/k/v/out plus its ``S^2 head_dim`` score and context work, a neuron's share of
up/gate/down (``passes.analyze.cost.granule_flops``; the arithmetic is checked against
``torch.utils.flop_counter.FlopCounterMode`` in the tests). Families without a mask owner (all of them
when the model carries none yet) count: unmasked ones are ``fixed``.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from leap_fx.costs.model import CostModel, PiecewiseLinear
from leap_fx.masks.lifecycle import owners
from passes.analyze.cost import granule_flops

__all__ = ["flops_costs", "masked_families"]


def masked_families(model: nn.Module, plan) -> set:
    """Families with a mask owner (all of them on a model without masks yet)."""
    own = owners(model)
    return {k for k in plan.families if k in own} if own else set(plan.families)


def flops_costs(model: nn.Module, plan, seq: int, families: Optional[set] = None) -> CostModel:
    """Forward FLOPs per granule at ``seq`` tokens (batch 1); families outside ``families`` are fixed."""
    if plan is None:
        raise ValueError("a flops target needs a Plan: plan = leap_fx.analyze(model, example_inputs)")
    if int(seq) < 1:
        raise ValueError(f"flops are counted at a positive sequence length, got {seq}")
    costs = granule_flops(model, plan, int(seq))
    masked = masked_families(model, plan) if families is None else set(families)
    return CostModel("flops", {k: PiecewiseLinear.linear(c.flops, c.granules) for k, c in costs.items() if k in masked},
                     {k: c.granules for k, c in costs.items() if k in masked},
                     fixed=sum(c.total for k, c in costs.items() if k not in masked),
                     info={"seq": int(seq), "batch": 1})
