"""What a target costs: ``CostModel``, per mask owner a piecewise-linear cost of its kept granules.

Per owner (family FQN for heads / neurons, weight name otherwise) a piecewise-linear cost ``c_i(n)`` of
its ``n`` kept granules, plus a ``fixed`` part that no granule removes::

    fraction = (fixed + sum_i c_i(n_i)) / (fixed + sum_i c_i(G_i))

Density and FLOPs are linear (``c_i(n) = n * cost per granule``); latency is a measured curve
(``latency.py``). Every method reads the same model (``budget.target_costs``): LEAP's R(sigma),
Kwon's search, CoFi's expected size, l2-oneshot's allocation, the schedules of magnitude / movement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch

from leap_fx.masks.topk import keep_count

__all__ = ["PiecewiseLinear", "CostModel", "uniform_keep"]


@dataclass(frozen=True)
class PiecewiseLinear:
    """``y(x)`` through the points ``(xs[i], ys[i])`` (xs increasing), extended linearly past the ends."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def __post_init__(self):
        if len(self.xs) != len(self.ys) or len(self.xs) < 2 or any(b <= a for a, b in zip(self.xs, self.xs[1:])):
            raise ValueError(f"piecewise-linear points need >= 2 increasing xs, got {self.xs} / {self.ys}")

    @classmethod
    def linear(cls, slope: float, end: float) -> "PiecewiseLinear":
        return cls((0.0, float(end)), (0.0, float(slope) * float(end)))

    def __call__(self, x):
        """Value at ``x`` (float or tensor; differentiable in ``x``: the segment's slope)."""
        xs, ys = self.xs, self.ys
        xv = float(x.detach()) if isinstance(x, torch.Tensor) else float(x)
        i = max(0, min(len(xs) - 2, sum(1 for v in xs[1:-1] if v <= xv)))
        slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
        return ys[i] + (x - xs[i]) * slope

    def to_dict(self) -> dict:
        return {"xs": list(self.xs), "ys": list(self.ys)}


@dataclass
class CostModel:
    """Per-owner cost curves in one unit; see the module docstring."""

    unit: str
    curves: dict[str, PiecewiseLinear]  # owner key -> cost of n kept granules
    granules: dict[str, int]
    fixed: float = 0.0
    info: dict = field(default_factory=dict)  # how it was built (seq, batch, table file ...)

    @property
    def total(self) -> float:
        return self.fixed + sum(float(c(self.granules[k])) for k, c in self.curves.items())

    def cost(self, kept: Mapping[str, object]):
        """``fixed + sum c_i(kept_i)`` (keys not in ``kept``: all granules kept); tensors stay differentiable."""
        return self.fixed + sum(c(kept.get(k, self.granules[k])) for k, c in self.curves.items())

    def fraction(self, kept: Mapping[str, object]):
        return self.cost(kept) / self.total

    def marginal(self, key: str, n: int) -> float:
        """Cost of keeping granule ``n + 1`` of owner ``key`` when ``n`` are kept."""
        c = self.curves[key]
        return float(c(n + 1)) - float(c(n))

    def only(self, keys) -> "CostModel":
        """The same model over the owners in ``keys`` alone (the others are not counted at all)."""
        return CostModel(self.unit, {k: c for k, c in self.curves.items() if k in keys},
                         {k: g for k, g in self.granules.items() if k in keys}, self.fixed, dict(self.info))

    def floor(self) -> float:
        """The smallest reachable fraction: one granule kept per owner."""
        return float(self.fraction({k: 1 for k in self.curves}))

    def check_reachable(self, value: float) -> None:
        low = self.floor()
        if value < low:
            raise ValueError(f"target {self.unit}:{value:g} is below what pruning heads and neurons can reach "
                             f"here ({low:.3f} with one head and one neuron per layer: the rest does not shrink); "
                             f"ask for {self.unit}:{math.ceil(low * 100 + 1) / 100:g} or more")

    def to_dict(self) -> dict:
        return {"unit": self.unit, "fixed": self.fixed, "total": self.total, "granules": dict(self.granules),
                "curves": {k: c.to_dict() for k, c in self.curves.items()}, "info": self.info}


def uniform_keep(costs: CostModel, value: float, steps: int = 40) -> float:
    """The largest kept fraction ``k`` which, applied to every owner (``ceil(k G)`` granules), costs at most
    ``value`` of the total (0 if even one granule per owner costs more)."""
    def frac(k: float) -> float:
        return float(costs.fraction({key: keep_count(k, g) for key, g in costs.granules.items()}))

    if frac(1.0) <= value:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if frac(mid) <= value else (lo, mid)
    return lo
