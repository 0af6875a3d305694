"""Kwon et al. on a mixture of experts: whole experts by measured loss, neurons as the paper, equal widths.

The paper prunes the heads and neurons of dense layers. A routed expert's neurons are neurons like any
other (Fisher from the same mask gradients, Eq. 3; cost per routed token, ``passes.analyze.cost``). Three
additions make the result one that strip can realise and that counts the right FLOPs:

- **Whole experts** (``KwonConfig.experts``: the fraction of each layer's routed experts kept; default 1,
  none removed). Removing an expert is a routing change (its tokens go to the remaining experts: strip's
  reference, ``passes.strip.routing``), not a small step around ``m = 1``, so Eq. 3's Taylor estimate does
  not apply; the importance is measured instead. Per layer, expert ``e``'s score is the loss on the
  first ``expert_examples`` sample examples with ``e`` excluded from routing (logit ``-inf``); the experts
  whose exclusion costs least go (the idea of Lu et al. 2024, *Not All Experts are Equal*, who enumerate
  combinations; one expert at a time here: ``E`` forwards per layer instead of ``C(E, r)``). Never fewer
  than ``top_k`` remain. Every later step (Fisher, search, tuning) runs with them excluded.
- **Costs after removal**: the removed experts' tokens run on the others, so with ``E'`` of ``E`` experts
  left, each remaining expert's neurons cost ``E / E'`` of what the Plan's cost (fixed at ``top_k / E``)
  says; the budget's total (dense) is unchanged.
- **Equal widths**: one fused tensor holds every expert of a layer at one width (strip keeps the widest),
  so after the search each live expert of a layer keeps the layer's kept neurons divided evenly, rounded
  down (its own most important ones), at least one: the FLOPs the search counted are the FLOPs strip
  delivers. Where that one neuron per expert goes over the budget, ``within_budget`` takes the excess back
  from the least important neurons of the dense feed-forwards (a shared expert, a dense layer).

Mask tuning leaves routed experts as they are (their output op is a batched matmul on the fused tensor,
not a ``linear``: reported as skipped); the mask gradients of a model with experts take the carrier's
per-example path (exact, slower).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch

from leap_fx.env.progress import Progress
from leap_fx.methods.expert_widths import moe_layers, removed_keys, router_of
from leap_fx.methods.kwon.search import kept_cost
from passes.analyze.plan import FEED_FORWARD
from passes.strip.routing import excluded_experts

__all__ = ["choose_experts", "scaled_costs", "within_budget"]


def _loss(model, plan, batches: list[dict], loss: Callable, removed: dict) -> float:
    with torch.no_grad(), excluded_experts(model, plan, removed) as missed:
        value = sum(float(loss(model, b)) for b in batches)
        if missed():
            raise RuntimeError(f"kwon: the router of {missed()} was never computed in the forward: the expert "
                               "exclusion did not apply")
    return value


def choose_experts(model, plan, batches: list[dict], loss: Callable, keep: float) -> tuple[dict, dict]:
    """The experts to remove per layer (``{experts key: [e, ...]}``) and each expert's measured loss
    increase (``{key: [E floats]}``, summed over ``batches``), scored one expert at a time (module doc)."""
    layers = moe_layers(plan)
    if keep < 1 and not layers:
        warnings.warn(f"kwon: experts={keep:g} asks to remove experts, but the model has no mixture-of-experts "
                      "layer (nothing removed)", stacklevel=3)
    if keep >= 1 or not layers:
        return {}, {}
    base = _loss(model, plan, batches, loss, {})
    removed, scores = {}, {}
    progress = Progress(sum(f.num_experts for f in layers.values()), desc="kwon: expert scores")
    try:
        for key, fam in layers.items():
            rise = []
            for e in range(fam.num_experts):
                rise.append(_loss(model, plan, batches, loss, {key: [e]}) - base)
                progress.update(1)
            kept = max(fam.top_k, math.ceil(keep * fam.num_experts - 1e-9))
            order = sorted(range(fam.num_experts), key=lambda e: (rise[e], e))
            removed[key], scores[key] = sorted(order[:fam.num_experts - kept]), rise
    finally:
        progress.close()
    return removed, scores


def scaled_costs(cost: dict, plan, removed: dict) -> dict:
    """Per-granule costs with the remaining experts' neurons at ``E / E'`` (module doc); removed left out."""
    gone = removed_keys(plan, removed)
    out = {}
    for k, c in cost.items():
        if k in gone:
            continue
        fam = plan.families[k]
        router = router_of(fam)
        if removed.get(router):
            total = plan.families[router].num_experts
            c = c * total / (total - len(removed[router]))
        out[k] = c
    return out


def within_budget(keep: dict, importance: dict, cost: dict, budget: float, plan) -> dict:
    """``keep`` with the least important neurons of dense feed-forwards dropped until the kept cost is within
    ``budget`` (heads and routed experts as they are; at least one neuron left per family)."""
    out = {k: v.clone() for k, v in keep.items()}
    over = kept_cost(out, cost) - budget
    dense = [(float(importance[k].reshape(-1)[j]), k, j) for k, v in out.items()
             if plan.families[k].kind == FEED_FORWARD and not router_of(plan.families[k])
             for j in torch.nonzero(v.reshape(-1)).flatten().tolist()]
    for _, k, j in sorted(dense):
        if over <= 1e-9:
            break
        if int(out[k].sum()) > 1:
            out[k].view(-1)[j] = 0.0
            over -= cost[k]
    return out
