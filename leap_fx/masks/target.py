"""Targets in the unit the user cares about, and what every granule costs in that unit.

``Target.parse("flops:0.5")`` (also ``"density:0.3"``, ``"latency:0.5"``, or a bare ``0.3`` = density):

- ``density``: fraction of the governed weight elements kept (LEAP's R of Eq. 5 as printed);
- ``flops``: fraction of the encoder's forward FLOPs at the run's sequence length, from the Plan's
  shapes (``passes.analyze.cost.granule_flops``: a head's share of q/k/v/out plus its ``S^2 head_dim``
  score and context work, a neuron's share of up/gate/down; exact against ``FlopCounterMode``);
- ``latency``: fraction of the dense model's onnxruntime latency on *this* machine at the run's batch
  and sequence length (``latency_table.py``: a measured lookup table, piecewise-linear in the heads and
  neurons kept per layer, as Kwon et al. fit theirs on GPU). ``latency:0.5`` asks for a 2x speedup.

``CostModel``: per mask owner (family FQN for heads / neurons, weight name otherwise) a piecewise-linear
cost ``c_i(n)`` of its ``n`` kept granules, plus a ``fixed`` part that no granule removes:
``fraction = (fixed + sum_i c_i(n_i)) / (fixed + sum_i c_i(G_i))``. Density and FLOPs are linear
(``c_i(n) = n * cost per granule``). Every method reads the same model: LEAP's R(sigma)
(``methods/leap_regularizer.py``), l2-oneshot's budget, the cubic schedule of magnitude / movement.
``target_costs(spec, model, plan)`` builds it for a spec's target (``COSTS``: unit -> builder).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

UNITS = ("density", "flops", "latency")
STRIPPED_UNITS = ("flops", "latency")  # units only removed heads / neurons change: need 'structured'
DEFAULT_TARGET = "density:0.3"


@dataclass(frozen=True)
class Target:
    """A target fraction ``value`` in ``unit`` (what is kept: 0.5 = half the FLOPs / half the latency)."""

    unit: str
    value: float

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"target unit {self.unit!r}: use one of {', '.join(UNITS)} "
                             f"(e.g. 'density:0.3', 'flops:0.5', 'latency:0.5')")
        if isinstance(self.value, bool) or not 0.0 < float(self.value) <= 1.0:
            raise ValueError(f"target {self.unit}:{self.value} is outside (0, 1]: pass the fraction to keep, "
                             f"e.g. '{self.unit}:0.5' keeps half")

    @classmethod
    def parse(cls, text: Union[str, float, "Target"]) -> "Target":
        """``"flops:0.5"`` -> ``Target("flops", 0.5)``; a bare number is a density."""
        if isinstance(text, Target):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls("density", float(text))
        unit, sep, value = str(text).strip().partition(":")
        if not sep:
            unit, value = "density", unit
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"target {text!r}: write UNIT:FRACTION, e.g. 'density:0.3', 'flops:0.5' or "
                             f"'latency:0.5'") from None
        return cls(unit.strip().lower(), number)

    @property
    def needs_strip(self) -> bool:
        return self.unit in STRIPPED_UNITS

    def __str__(self) -> str:
        return f"{self.unit}:{self.value:g}"


def resolve_target(target: Optional[str], target_density: Optional[float]) -> Target:
    """One target from a spec's ``target`` and ``target_density`` fields (they must agree if both are given)."""
    if target is None and target_density is None:
        raise ValueError("no target: pass target='flops:0.5' (or 'density:0.3', 'latency:0.5') or target_density=0.3")
    if target is None:
        if isinstance(target_density, bool) or not isinstance(target_density, (int, float)) \
                or not 0.0 < float(target_density) <= 1.0:
            raise ValueError(f"target_density={target_density} is outside (0, 1]: pass the fraction of "
                             f"weights to keep, e.g. 0.3 keeps 30%")
        return Target("density", float(target_density))
    goal = Target.parse(target)
    if target_density is not None and (goal.unit != "density" or not math.isclose(goal.value, target_density)):
        raise ValueError(f"target={target!r} and target_density={target_density} disagree: pass one of them")
    return goal


# -- costs --------------------------------------------------------------------------------------
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


def density_costs(spec, model: nn.Module, plan, example=None) -> CostModel:
    """Weight elements: owner ``i`` costs ``count_i / G_i`` per granule (needs a prepared model)."""
    from leap_fx.masks.prepare import owners
    own = owners(model)
    if not own:
        raise ValueError("density costs count the masked weights: prepare(model, spec, plan) first")
    return CostModel("density", {k: PiecewiseLinear.linear(o.count / o.granules, o.granules) for k, o in own.items()},
                     {k: o.granules for k, o in own.items()})


def _cost_seq(spec) -> int:
    seq = getattr(spec, "cost_seq", None)
    if not seq:
        raise ValueError(f"target {spec.goal} is counted at a sequence length: set cost_seq=<tokens per "
                         f"example> on the config (the job sets it to the data's length)")
    return int(seq)


def _masked_families(model: nn.Module, plan) -> set:
    """Families with a mask owner (all of them on a model without masks yet)."""
    from leap_fx.masks.prepare import owners
    own = owners(model)
    return {k for k in plan.families if k in own} if own else set(plan.families)


def flops_costs(spec, model: nn.Module, plan, example=None) -> CostModel:
    """Forward FLOPs per head / neuron at ``spec.cost_seq`` (batch 1); unmasked families are fixed."""
    from passes.analyze.cost import granule_flops
    if plan is None:
        raise ValueError(f"target {spec.goal} needs a Plan: plan = leap_fx.analyze(model, example_inputs)")
    seq = _cost_seq(spec)
    costs, masked = granule_flops(model, plan, seq), _masked_families(model, plan)
    return CostModel("flops", {k: PiecewiseLinear.linear(c.flops, c.granules) for k, c in costs.items() if k in masked},
                     {k: c.granules for k, c in costs.items() if k in masked},
                     fixed=sum(c.total for k, c in costs.items() if k not in masked), info={"seq": seq, "batch": 1})


def latency_costs(spec, model: nn.Module, plan, example=None) -> CostModel:
    """onnxruntime latency from the machine's lookup table (``latency_table.py``) at the spec's batch / seq."""
    from leap_fx.masks.latency_table import latency_table
    if plan is None:
        raise ValueError(f"target {spec.goal} needs a Plan: plan = leap_fx.analyze(model, example_inputs)")
    table = latency_table(model, plan, example, batch=int(getattr(spec, "cost_batch", 1) or 1), seq=_cost_seq(spec))
    return table.cost_model(plan, _masked_families(model, plan))


COSTS: dict[str, Callable[..., CostModel]] = {"density": density_costs, "flops": flops_costs,
                                              "latency": latency_costs}


def target_costs(spec, model: nn.Module, plan=None, example=None) -> CostModel:
    """The cost model of ``spec.goal``'s unit for ``model`` (checked: the target is reachable)."""
    costs = COSTS[spec.goal.unit](spec, model, plan, example)
    if not costs.curves:
        raise ValueError(f"target {spec.goal}: no masked head or neuron has a cost; check include/exclude")
    costs.check_reachable(spec.goal.value)
    return costs


def uniform_keep(costs: CostModel, value: float, steps: int = 40) -> float:
    """The largest kept fraction ``k`` which, applied to every owner (``ceil(k G)`` granules), costs at most
    ``value`` of the total (0 if even one granule per owner costs more)."""
    from leap_fx.masks.topk import keep_count

    def frac(k: float) -> float:
        return float(costs.fraction({key: keep_count(k, g) for key, g in costs.granules.items()}))

    if frac(1.0) <= value:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if frac(mid) <= value else (lo, mid)
    return lo
