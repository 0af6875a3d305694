"""Kwon et al., steps 2 and 3: mask search under a cost budget, then mask rearrangement per layer.

**Search** (Sec. 4.2, Algorithm 1). Rank all heads by Fisher importance ``I_jj`` (globally, over the
layers), and all neurons likewise. For every head count ``n = 0 .. H``: keep the ``n`` most important
heads, fill what the budget leaves with the most important neurons (the longest prefix of the neuron
ranking that fits), and score the pair by its total kept importance; return the best pair:

    max_n  sum_{j <= n} I^head_(j) + sum_{j <= k(n)} I^neuron_(j),
    k(n) = max { k : sum_{j <= n} c^head_(j) + sum_{j <= k} c^neuron_(j) <= budget }

With one cost per kind (the paper: every head costs the same, every neuron too) this is the exact
optimum over all subsets within the budget (any subset with n heads and k neurons is bounded by the
two prefixes); with per-family costs (heads of different widths) it stays the paper's greedy.

**Rearrangement** (Sec. 4.3). The diagonal ignores interactions inside a layer. Per family, with the
number kept fixed, minimise the loss estimate with the full within-layer Fisher block,
``1/(2N) || sum_{j in P} g_j ||^2`` over the pruned set P, greedily: for each kept granule j (from the
least important up) add j to P and drop the member whose removal leaves the smallest estimate. Dropping
j itself restores P, so no step increases the estimate (checked exactly, not only in exact arithmetic).
"""
from __future__ import annotations

import torch

from passes.analyze.plan import ATTENTION


def _ranking(importance: dict[str, torch.Tensor], cost: dict[str, float], keys: list[str]):
    """Granules of ``keys`` sorted by importance (descending): (key, index) list, prefix costs and importance."""
    items = [(k, j) for k in keys for j in range(importance[k].numel())]
    imp = torch.tensor([float(importance[k].reshape(-1)[j]) for k, j in items], dtype=torch.float64)
    cst = torch.tensor([float(cost[k]) for k, _ in items], dtype=torch.float64)
    order = torch.argsort(-imp, stable=True)
    zero = torch.zeros(1, dtype=torch.float64)
    return ([items[i] for i in order.tolist()], torch.cat([zero, cst[order].cumsum(0)]),
            torch.cat([zero, imp[order].cumsum(0)]))


def search(importance: dict[str, torch.Tensor], cost: dict[str, float], kind: dict[str, str],
           budget: float) -> dict[str, torch.Tensor]:
    """0/1 keep grids per family maximising kept importance with ``sum cost <= budget`` (see module doc).

    ``importance[key]``: per-granule ``I_jj``; ``cost[key]``: cost of one granule of that family;
    ``kind[key]``: ``"attention"`` (searched over their count) or anything else (filled in)."""
    heads = [k for k in importance if kind[k] == ATTENTION]
    others = [k for k in importance if kind[k] != ATTENTION]
    h_items, h_cost, h_imp = _ranking(importance, cost, heads)
    n_items, n_cost, n_imp = _ranking(importance, cost, others)
    left = budget - h_cost                                   # what n heads leave for neurons
    fill = torch.searchsorted(n_cost, left, right=True) - 1  # longest neuron prefix within it
    total = torch.where(left >= 0, h_imp + n_imp[fill.clamp_min(0)], torch.tensor(-1.0, dtype=torch.float64))
    if not bool((left >= 0).any()):
        raise ValueError(f"budget {budget:.4g} is below zero cost: nothing can be kept")
    n = int(len(total) - 1 - torch.argmax(total.flip(0)))  # the largest head count among the best
    keep = {k: torch.zeros(importance[k].numel()) for k in importance}
    for k, j in h_items[:n] + n_items[:int(fill[n])]:
        keep[k][j] = 1.0
    return {k: v.reshape(importance[k].shape) for k, v in keep.items()}


def kept_cost(keep: dict[str, torch.Tensor], cost: dict[str, float]) -> float:
    return sum(float(v.sum()) * float(cost[k]) for k, v in keep.items())


def rearrange(grads: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep grid of one family after the greedy swap search (same count kept; estimate never rises).

    ``grads``: ``[N, G]`` per-example mask gradients of the family; ``keep``: 0/1 of ``G``. Each step
    is O(G + N): the Gram matrix ``K = grads^T grads`` (float32 BLAS, used to choose) gives every
    ``|| s + g_j - g_i ||^2`` from ``c = K[P].sum(0)``; the chosen swap is then checked exactly (float64)."""
    flat = keep.reshape(-1)
    pruned = flat == 0
    if not bool(pruned.any()) or bool(pruned.all()):
        return keep.clone()
    g = grads.double().t().contiguous()                         # [G, N]
    gram = (grads.t().float() @ grads.float()).double()         # [G, G]
    sq = g.pow(2).sum(1)
    s = g[pruned].sum(0)                                        # the pruned set's summed gradient
    c, current = gram[pruned].sum(0), float(s @ s)
    for j in sorted(torch.nonzero(~pruned).flatten().tolist(), key=lambda i: float(sq[i])):
        cj = c + gram[j]                                        # (s + g_j) . g_i for every i
        left = float(s @ s) + 2 * float(s @ g[j]) + sq[j] - 2 * cj + gram.diagonal()
        members = pruned.clone()
        members[j] = True
        i = int(torch.argmin(left.masked_fill(~members, float("inf"))))
        if i == j:
            continue
        new = s + g[j] - g[i]
        value = float(new @ new)
        if value <= current:                                    # exact check: never accept a rise
            pruned[j], pruned[i] = True, False
            s, c, current = new, cj - gram[i], value
    return (~pruned).to(keep.dtype).reshape(keep.shape)
