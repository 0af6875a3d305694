"""Density costs: owner ``i`` costs ``count_i / G_i`` weight elements per kept granule (LEAP's R, Eq. 5)."""
from __future__ import annotations

from torch import nn

from leap_fx.costs.model import CostModel, PiecewiseLinear
from leap_fx.masks.lifecycle import owners

__all__ = ["density_costs"]


def density_costs(model: nn.Module) -> CostModel:
    """Weight elements of every mask owner of a prepared model."""
    own = owners(model)
    if not own:
        raise ValueError("density costs count the masked weights: prepare the model's masks first "
                         "(leap_fx.masks.lifecycle, or the method's prepare)")
    return CostModel("density", {k: PiecewiseLinear.linear(o.count / o.granules, o.granules) for k, o in own.items()},
                     {k: o.granules for k, o in own.items()})
