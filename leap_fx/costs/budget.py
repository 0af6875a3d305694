"""The budget of a target: ``target_costs(config, model, plan)`` -> the ``CostModel`` of ``config.goal``'s
unit, checked reachable. Every method asks here (``COSTS``: unit -> builder); none prices its own.

``seq`` is the sequence length FLOPs and latency are counted at: ``config.cost_seq`` (the job sets it
to the run's length), or the caller's (Kwon: the sample data's mean length when ``cost_seq`` is unset).
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from leap_fx.costs.density import density_costs
from leap_fx.costs.flops import flops_costs, masked_families
from leap_fx.costs.latency import latency_table
from leap_fx.costs.model import CostModel

__all__ = ["COSTS", "target_costs", "cost_seq"]


def cost_seq(config, seq: Optional[float] = None) -> int:
    """Tokens per example a flops / latency target is counted at (``config.cost_seq``, else ``seq``)."""
    got = config.cost_seq or seq
    if not got:
        raise ValueError(f"target {config.goal} is counted at a sequence length: set cost_seq=<tokens per "
                         f"example> on the config (the job sets it to the data's length)")
    return max(1, round(float(got)))


def _density(config, model, plan, example, seq) -> CostModel:
    return density_costs(model)


def _flops(config, model, plan, example, seq) -> CostModel:
    return flops_costs(model, plan, cost_seq(config, seq))


def _latency(config, model, plan, example, seq) -> CostModel:
    if plan is None:
        raise ValueError(f"target {config.goal} needs a Plan: plan = leap_fx.analyze(model, example_inputs)")
    table = latency_table(model, plan, example, batch=int(config.cost_batch), seq=cost_seq(config, seq))
    return table.cost_model(plan, masked_families(model, plan))


COSTS: dict[str, Callable[..., CostModel]] = {"density": _density, "flops": _flops, "latency": _latency}


def target_costs(config, model: nn.Module, plan=None, example=None, seq: Optional[float] = None) -> CostModel:
    """The cost model of ``config.goal``'s unit for ``model`` (checked: the target is reachable)."""
    costs = COSTS[config.goal.unit](config, model, plan, example, seq)
    if not costs.curves:
        raise ValueError(f"target {config.goal}: no masked head or neuron has a cost; check include/exclude")
    costs.check_reachable(config.goal.value)
    return costs
