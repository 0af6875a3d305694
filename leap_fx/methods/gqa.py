"""What strip can realise under grouped-query attention, for every method that picks heads one by one (Kwon,
L2 one-shot, random): strip removes whole key/value groups and the same number of query heads from every
kept group (``passes.strip.gqa``), so a keep set is first made one strip can realise; else the heads strip has
to keep anyway would leave the model above its FLOPs target."""
from __future__ import annotations

import torch

from passes.analyze.plan import ATTENTION
from passes.strip.gqa import gqa_keep

__all__ = ["gqa_realisable"]


def gqa_realisable(keep: dict, importance: dict, plan) -> dict:
    """Grouped-query attention: each attention family's keep set made one strip can realise (the same
    number of q heads in every kept kv group, ``passes.strip.gqa``), at most as many heads as searched,
    overlapping the searched set as much as possible (then by importance)."""
    out = dict(keep)
    for key, fam in plan.families.items():
        if key not in keep or fam.kind != ATTENTION or fam.num_kv_heads >= fam.num_heads:
            continue
        k, imp = keep[key].reshape(-1), importance[key].reshape(-1).float()
        scores = k.float() * (1.0 + float(imp.abs().sum())) + imp
        chosen = gqa_keep(scores.tolist(), fam.num_kv_heads, int(k.sum()))
        new = torch.zeros_like(k)
        new[list(chosen.q)] = 1
        out[key] = new.reshape(keep[key].shape)
    return out
