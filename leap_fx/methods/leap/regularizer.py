"""LEAP's density regulariser with adaptive coefficient (paper Sec. 3.2, Eq. 5 and Eq. 7).

``R(sigma) = sum_i k(sigma_i) n_i / sum_i n_i`` over the ``LeapScores`` owners of a prepared model, where
``n_i`` counts the weight elements an owner governs (a tied head counts its q/k/v/out elements once,
through its single owner). Weights LEAP does not mask (excluded embeddings, heads) are not counted.

In another unit (``target="flops:0.5"`` / ``"latency:0.5"``, ``leap_fx.costs``) each owner's granules
are weighted by their cost instead of their weight count: ``R = (fixed + sum_i c_i(k_i G_i)) / total``
with ``c_i`` the owner's cost of ``n`` kept granules (FLOPs at the run's sequence length, or measured
onnxruntime latency) and ``fixed`` what no granule removes. With ``c_i(n) = n n_i / G_i`` this is the
density R above, so one formula serves every unit; the gradient reaches sigma_i as ``c_i' G_i k'(sigma_i)``.

``ratio="kept"`` (default) replaces each ``k_i`` by the fraction Top-K really keeps, ``ceil(k_i g_i) / g_i``
for ``g_i`` granules, with ``k_i``'s gradient passed straight through. With fine granules the two agree;
with 12 heads per layer ``k = 0.30`` keeps 4 heads (0.33), so the paper's soft R (``ratio="soft"``) stops
one granule per matrix above the target while the kept R stops at it.

``L_reg = (R - R_t)^2`` if ``R >= R_t`` else 0 (Eq. 5);
``lambda = max(lambda_max * L_reg / (1 - R_t)^2, lambda_min)`` (Eq. 7), detached (footnote 4).
Calling the regulariser returns ``lambda * L_reg`` (grad flows to every sigma) and stores the floats
``.R``, ``.L_reg`` and ``.lam`` for logging.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from leap_fx.costs import CostModel, density_costs, target_costs
from leap_fx.masks.lifecycle import owners
from leap_fx.masks.topk import LeapScores, keep_count
from leap_fx.methods.leap.config import RATIOS

__all__ = ["LeapRegularizer"]


class LeapRegularizer:
    """``target``: R_t of Eq. 5, in the unit of ``costs`` (default: weight density)."""

    def __init__(self, model: nn.Module, target: float, lambda_max: float = 160.0,
                 lambda_min: float = 10.0, ratio: str = "kept", costs: Optional[CostModel] = None):
        if not 0.0 < float(target) <= 1.0:
            raise ValueError(f"target={target} is outside (0, 1]: pass the fraction to keep")
        if lambda_min > lambda_max:
            raise ValueError(f"lambda_min={lambda_min} > lambda_max={lambda_max}: swap them")
        own = owners(model)
        if not any(isinstance(o, LeapScores) for o in own.values()):
            raise ValueError("model has no LEAP masks: call leap_fx.prepare(model, LeapConfig(...)) first")
        if ratio not in RATIOS:
            raise ValueError(f"ratio={ratio!r}: use 'kept' (granules Top-K keeps) or 'soft' (k itself)")
        self.costs = costs if costs is not None else density_costs(model)
        self.owners = {k: o for k, o in own.items() if k in self.costs.curves}
        if not any(isinstance(o, LeapScores) for o in self.owners.values()):
            raise ValueError(f"no LEAP mask has a {self.costs.unit} cost: the cost model's owners "
                             f"{sorted(self.costs.curves)[:3]}... are not masked in this model")
        self.target, self.ratio = float(target), ratio
        self.lambda_max, self.lambda_min = float(lambda_max), float(lambda_min)
        self.total = float(self.costs.total)
        self.R = self.L_reg = self.lam = float("nan")

    @classmethod
    def from_config(cls, model: nn.Module, config, plan=None, costs: Optional[CostModel] = None) -> "LeapRegularizer":
        """R_t and the costs of ``config.goal`` (a flops / latency target needs the ``plan``)."""
        if costs is None and config.goal.unit != "density":
            costs = target_costs(config, model, plan)
        return cls(model, config.goal.value, config.lambda_max, config.lambda_min, config.ratio, costs)

    def remaining(self) -> torch.Tensor:
        """R(sigma): cost fraction of the kept granules, k(sigma_i) G_i each (differentiable in sigma)."""
        return self.costs.fraction({k: self._kept(o) * o.granules for k, o in self.owners.items()})

    def _kept(self, o) -> torch.Tensor:
        k = o.expected_density()  # k(sigma) for LEAP's owners; another owner counts without a gradient
        if self.ratio == "soft":
            return k
        kept = keep_count(float(k.detach()), o.granules) / o.granules
        return k + (kept - k).detach()  # value: kept fraction; gradient: dk/dsigma

    def __call__(self) -> torch.Tensor:
        R = self.remaining()
        L = torch.clamp(R - self.target, min=0.0) ** 2  # Eq. 5 (0 below target)
        gap = (1.0 - self.target) ** 2
        lam = self.lambda_min if gap == 0 else max(self.lambda_max * float(L.detach()) / gap, self.lambda_min)
        self.R, self.L_reg, self.lam = float(R.detach()), float(L.detach()), float(lam)  # Eq. 7, detached
        return lam * L
