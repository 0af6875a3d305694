"""Routed experts' widths, shared by every method that sets neuron masks on a mixture of experts.

One fused tensor holds every expert of a layer at one width, and strip keeps the widest survivor's count
(``passes/strip/experts.py``): a method that leaves experts with different numbers of neurons pays for the
widest. ``equal_widths`` spreads a layer's kept neurons evenly over its live experts (rounded down, at
least one each) and down to a multiple of strip's width step (16 bytes of the tensor's dtype: 4 float32
neurons; ``passes.strip.experts.width_step``), each expert keeping its own most important ones, so the FLOPs
a method counted are the FLOPs strip delivers.
"""
from __future__ import annotations

import torch

from passes.analyze.plan import EXPERTS, FEED_FORWARD
from passes.strip.experts import width_step

__all__ = ["moe_layers", "removed_keys", "router_of", "equal_widths"]


def moe_layers(plan) -> dict:
    """ExpertsFamily key -> the family (every mixture-of-experts layer of the Plan)."""
    return {k: f for k, f in plan.families.items() if f.kind == EXPERTS}


def removed_keys(plan, removed: dict) -> set[str]:
    """Plan keys of the per-expert feed-forward families of the removed experts."""
    return {plan.families[k].experts[e] for k, gone in removed.items() for e in gone}


def router_of(fam) -> str:
    """The ExpertsFamily key routing to ``fam`` ("" for attention and dense feed-forwards)."""
    return fam.router if fam.kind == FEED_FORWARD else ""


def equal_widths(model, keep: dict, importance: dict, plan, removed: dict) -> dict:
    """Keep grids where every live expert of a layer keeps the same number of neurons (module doc)."""
    out = dict(keep)
    gone = removed_keys(plan, removed)
    for key, fam in moe_layers(plan).items():
        live = [k for k in fam.experts if k in keep and k not in gone]
        if not live:
            continue
        width, step = plan.families[live[0]].width, width_step(model, plan.families[live[0]].down.weight_name)
        n = int(sum(float(keep[k].sum()) for k in live) // len(live))  # rounded down: never above the budget
        n = width if n == width else max(min(step, width), n // step * step)
        for k in live:
            grid = torch.zeros_like(keep[k]).reshape(-1)
            grid[torch.argsort(-importance[k].reshape(-1).double(), stable=True)[:n]] = 1.0
            out[k] = grid.reshape(keep[k].shape)
    return out
