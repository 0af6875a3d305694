"""What each head and neuron costs: forward FLOPs per granule, from the Plan's shapes.

For one example of ``seq`` tokens (2 FLOPs per multiply-add, as ``torch.utils.flop_counter``):

- a slice of ``unit`` output rows (or input columns) of a weight ``[out, in]`` costs
  ``2 * seq * unit * (the other dim)``; a family's slices are shared by its granules, so a head's
  share of q/k/v/out is their total over ``num_heads`` (grouped-query k/v included);
- a head also does ``QK^T`` and ``softmax(.) V``: ``2 * seq^2 * (head_dim + v width per head)``;
- a neuron costs its row of up (and gate) and its column of down;
- a routed expert's neuron runs on the tokens routed to its expert: ``top_k / num_experts`` of them
  (every token runs exactly ``top_k`` experts), so it costs that fraction of a dense neuron; a whole
  expert (``ExpertsFamily`` granule) costs its router row, ``2 * seq * hidden``.

FLOPs per routed token, counted: per token, the router (``2 * hidden * E``) and ``top_k`` experts of
``2 * hidden * width`` per matrix (gate, up, down). Summed over a layer's experts the neuron costs give
``seq * top_k * (one expert)`` exactly when every expert has the same width, whatever the routing (what
``FlopCounterMode`` counts on the ``batched_mm`` experts, ``passes/measure.py``). Removing whole experts
saves parameters and router rows, not expert FLOPs: the tokens go to the remaining experts, so after
removing experts the routed neurons' costs (fixed at the analysed ``top_k / E``) undercount by ``E' / E``.

``granule_flops`` is exact for the matmuls the families own: summed over every granule it equals the
encoder FLOPs ``FlopCounterMode`` measures when every encoder matmul belongs to a family (checked in
tests/test_cost.py); what it does not see (embeddings, LayerNorm, heads on top) is constant under
head / neuron pruning.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from passes.analyze.plan import ATTENTION, EXPERTS, FEED_FORWARD, Plan


@dataclass(frozen=True)
class GranuleCost:
    """Per-granule forward FLOPs of one family at a sequence length."""

    family: str
    kind: str
    granules: int
    flops: float  # of one granule

    @property
    def total(self) -> float:
        return self.flops * self.granules


def _weight(model: nn.Module, sl):
    mod = model.get_submodule(sl.fqn) if sl.fqn else model
    if hasattr(mod, "parametrizations") and sl.param in mod.parametrizations:
        return mod.parametrizations[sl.param].original
    return getattr(mod, sl.param)


def _other_dim(model: nn.Module, sl) -> int:
    """The dimension a slice's entries are multiplied along: the other axis of its matrix (of ``W[e]`` for
    one expert of a fused parameter)."""
    shape = tuple(_weight(model, sl).shape)
    if sl.expert is not None:
        shape, axis = shape[1:], sl.axis - 1
    else:
        axis = sl.axis
    return shape[1 - axis]


def granule_flops(model: nn.Module, plan: Plan, seq: int) -> dict[str, GranuleCost]:
    """Family key -> per-granule FLOPs at ``seq`` tokens (batch 1)."""
    out = {}
    for key, fam in plan.families.items():
        if fam.kind == EXPERTS:  # a whole expert: its router row (its matrices are its neurons' cost)
            out[key] = GranuleCost(key, fam.kind, fam.granules, 2.0 * seq * _other_dim(model, fam.router))
            continue
        proj = sum(2.0 * seq * sl.size * _other_dim(model, sl) for sl in fam.slices)
        per = proj / fam.granules
        if fam.kind == ATTENTION:
            per += 2.0 * seq * seq * (fam.head_dim + fam.unit("v"))
        if fam.kind == FEED_FORWARD and fam.router:  # routed expert: top_k of num_experts experts run per token
            layer = plan.families[fam.router]
            per *= layer.top_k / layer.num_experts
        out[key] = GranuleCost(key, fam.kind, fam.granules, per)
    return out


def kept_flops(costs: dict[str, GranuleCost], kept: dict[str, int]) -> float:
    """FLOPs of the families when ``kept[key]`` granules survive (missing keys: all kept)."""
    return sum(c.flops * kept.get(k, c.granules) for k, c in costs.items())
