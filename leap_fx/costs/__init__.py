"""What a target costs on a model and its Plan: one room for density, FLOPs and latency.

``model.py`` (``CostModel``: per-owner piecewise-linear costs, ``uniform_keep``) -> ``density.py`` /
``flops.py`` (linear costs from the masks and the Plan's shapes) ; ``timing.py`` (onnxruntime timing,
interleaved) -> ``latency.py`` (the machine's measured table) -> ``budget.py`` (``target_costs``:
the budget of a config's target, what every method asks).
"""
from leap_fx.costs.budget import COSTS, cost_seq, target_costs
from leap_fx.costs.density import density_costs
from leap_fx.costs.flops import flops_costs, masked_families
from leap_fx.costs.latency import LatencyTable, latency_table
from leap_fx.costs.model import CostModel, PiecewiseLinear, uniform_keep

__all__ = ["COSTS", "cost_seq", "target_costs", "density_costs", "flops_costs", "masked_families", "LatencyTable",
           "latency_table", "CostModel", "PiecewiseLinear", "uniform_keep"]
