"""CoFi's gates on a model (``install_gates``) and its expected size (``ExpectedSize``).

Gates (``HardConcrete`` owners, Xia et al. 2022 Sec. 3.1-3.2), composed on the weights by the carrier
(segments multiply, ``masks/carrier.py``):

- ``z_head`` per attention family ``[H]``: q/k/v rows gated by its support, out columns scaled by it;
- ``z_MHA`` per attention family ``[1]``: the out columns (all heads) scaled, so a head's value is
  ``z_head * z_MHA``;
- ``z_int`` per FFN family ``[F]`` and ``z_FFN`` ``[1]``: up/gate rows gated, down columns scaled by both;
- ``z_hidden`` ``[d]``, one for the whole residual stream (``plan.residual``): every norm's weight
  and bias scaled by it (CoFi multiplies the norms' outputs by ``z_hidden``), every projection reading
  the stream gated by its support, and every norm computes its statistics over the kept dims only
  (``passes/strip/masked_norm.py``, CoFi's ``CoFiLayerNorm``). Writers of the stream (embeddings, out /
  down rows) are not masked: their dropped dims are never read, and strip removes them.

Deviation: CoFi's ``z_MHA`` / ``z_FFN`` also scale the out / down *bias*; here the carrier masks
weights only, so a dead sub-layer still adds its bias, a constant that strip keeps
(``passes/strip/sublayers.py``).

Expected size (CoFi Sec. 3.2, Eq. 5-6 generalised to the Plan's shapes): a granule ``g`` of a family
with layer gate ``L`` costs ``a_stream`` per kept hidden dim plus ``a_fixed``; it is kept iff its
gate and its layer gate are, and each of its stream-axis elements iff that hidden dim is too, so with
independent gates and ``p = 1 - Q(0)``::

    E[size] = sum_families sum_g p_g p_L (a_stream * sum_i p_hidden_i + a_fixed)

``a`` counts weight elements (``unit="params"``: q/k/v rows and out columns of a head; a neuron's
up/gate rows and down column; biases, norms and embeddings are not counted, as in CoFi) or forward
FLOPs at ``seq`` tokens (``unit="flops"``: 2 FLOPs per multiply-add, plus a head's ``4 seq^2 head_dim``
score and context work, ``leap_fx.costs.flops``). ``density()`` is ``E[size] / dense size``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from leap_fx.costs.flops import flops_costs
from leap_fx.masks.carrier import GranuleMask
from leap_fx.masks.hard_concrete import HardConcrete
from leap_fx.masks.lifecycle import VALUE_ROLES, carriers
from passes.analyze.plan import Plan
from passes.strip import masked_norm

__all__ = ["Gates", "Support", "install_gates", "ExpectedSize", "UNITS"]

UNITS = ("params", "flops")


@dataclass
class Gates:
    """Every gate, by family key (``layers``: the sub-layer gate of each family)."""

    granules: dict[str, HardConcrete] = field(default_factory=dict)
    layers: dict[str, HardConcrete] = field(default_factory=dict)
    hidden: Optional[HardConcrete] = None

    def all(self) -> list[HardConcrete]:
        return [*self.granules.values(), *self.layers.values(), *([self.hidden] if self.hidden else [])]


class Support:
    """``keep`` of the masked norms: the hidden gate's support, sampled in training, deterministic in
    eval (an object, not a closure, so ``copy.deepcopy`` of the model follows the copied owner)."""

    def __init__(self, owner: HardConcrete):
        self.owner = owner

    def __call__(self, mod: nn.Module) -> torch.Tensor:
        return (self.owner.mask() if mod.training else self.owner.deterministic_mask()) != 0


def _param(model: nn.Module, name: str) -> torch.Tensor:
    fqn, _, pname = name.rpartition(".")
    return getattr(model.get_submodule(fqn) if fqn else model, pname)


def install_gates(model: nn.Module, plan: Plan, make: Callable[[tuple, str], HardConcrete],
                  layers: bool = True, hidden: bool = True) -> Gates:
    """Register one carrier per gated tensor (see the module docstring); returns the gates."""
    if any(True for _ in carriers(model)):
        raise ValueError("model is already prepared (it carries masks): fold(model) first, or use a fresh model")
    gates, masks = Gates(), {}

    def tie(name: str, owner, axis: int, start: int, size: int, unit: int, group: int = 1, value: bool = True):
        shape = tuple(_param(model, name).shape)
        masks.setdefault(name, GranuleMask()).add_tied(owner, shape, axis, start, size, unit, group, value)

    for key, fam in plan.families.items():
        g = gates.granules[key] = make((fam.granules,), key)
        lay = make((1,), f"{key}:layer") if layers else None
        if lay is not None:
            gates.layers[key] = lay
        for s in fam.slices:
            group = fam.num_heads // fam.num_kv_heads if s.role in ("k", "v") else 1
            unit = s.size * group // fam.granules  # per role: latent attention's k / v heads differ from q's
            tie(s.weight_name, g, s.axis, s.start, s.size, unit, group, s.role in VALUE_ROLES)
            if lay is not None and s.role in VALUE_ROLES:
                tie(s.weight_name, lay, s.axis, s.start, s.size, s.size)
    res = plan.residual if hidden else None
    if res is not None:
        hz = gates.hidden = make((res.width,), "hidden")
        for s in res.slices:
            if s.role == "read":
                tie(s.weight_name, hz, s.axis, 0, res.width, 1, value=False)
            elif s.role == "norm":
                tie(s.weight_name, hz, 0, 0, res.width, 1)
                if s.bias is not None:
                    tie(f"{s.fqn}.{s.bias}", hz, 0, 0, res.width, 1)
        masked_norm.install(model, res, Support(hz))
    for name, carrier in masks.items():
        fqn, _, pname = name.rpartition(".")
        parametrize.register_parametrization(model.get_submodule(fqn) if fqn else model, pname, carrier)
    return gates


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    fqn, _, pname = name.rpartition(".")
    mod = model.get_submodule(fqn) if fqn else model
    if parametrize.is_parametrized(mod, pname):
        return mod.parametrizations[pname].original
    return getattr(mod, pname)


class ExpectedSize:
    """``E[size] / dense size`` of the gated families, differentiable in every ``log_alpha``."""

    def __init__(self, model: nn.Module, plan: Plan, gates: Gates, unit: str = "params", seq: int = 64):
        if unit not in UNITS:
            raise ValueError(f"target unit {unit!r}: use one of {UNITS}")
        self.gates, self.unit = gates, unit
        stream = {(s.weight_name, s.axis) for s in plan.residual.slices} if plan.residual else set()
        self.width = plan.residual.width if plan.residual else 1
        flops = flops_costs(model, Plan(families=dict(plan.families)), seq, set(plan.families)) \
            if unit == "flops" else None
        self.costs: dict[str, tuple[float, float]] = {}
        for key, fam in plan.families.items():
            a_stream = a_fixed = 0.0
            for s in fam.slices:
                other = _weight(model, s.weight_name).shape[1 - s.axis]
                n = s.size * other / fam.granules * (2.0 * seq if unit == "flops" else 1.0)
                if (s.weight_name, 1 - s.axis) in stream and gates.hidden is not None:
                    a_stream += n / self.width
                else:
                    a_fixed += n
            if unit == "flops":  # what the projections do not explain: QK^T and softmax(.)V per head
                a_fixed += flops.marginal(key, 0) - (a_stream * self.width + a_fixed)
            self.costs[key] = (a_stream, a_fixed)
        self.dense = sum((a * self.width + b) * plan.families[k].granules for k, (a, b) in self.costs.items())

    def kept(self) -> torch.Tensor:
        """``E[size]`` (the formula in the module docstring)."""
        g = self.gates
        ref = next(iter(g.granules.values())).log_alpha
        hidden = g.hidden.keep_prob().sum() if g.hidden is not None else ref.new_tensor(float(self.width))
        total = ref.new_zeros(())
        for key, (a_stream, a_fixed) in self.costs.items():
            p = g.granules[key].keep_prob().sum()
            if key in g.layers:
                p = p * g.layers[key].keep_prob().sum()
            total = total + p * (a_stream * hidden + a_fixed)
        return total

    def density(self) -> torch.Tensor:
        return self.kept() / self.dense

    @torch.no_grad()
    def realised(self) -> float:
        """The same count for the deterministic gates (0/1: kept or not): what strip will keep."""
        g = self.gates
        on = lambda o: (o.deterministic_mask() != 0).float()  # noqa: E731
        hidden = float(on(g.hidden).sum()) if g.hidden is not None else float(self.width)
        total = 0.0
        for key, (a_stream, a_fixed) in self.costs.items():
            n = float(on(g.granules[key]).sum()) * (float(on(g.layers[key]).sum()) if key in g.layers else 1.0)
            total += n * (a_stream * hidden + a_fixed)
        return total / self.dense
