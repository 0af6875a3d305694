"""Output gates: a projection whose output multiplies the heads between the attention and out.

Gated attention (AFMoE, Hunyuan-V4, MiniCPM-5, Laguna, ...) computes ``attn * sigmoid(gate_proj(x))``
before ``o_proj``: one gate channel per head channel (``[.., heads * dim]``) or one per head
(``gate.unsqueeze(-1)``), sometimes fused into q's projection (``q_gate_proj``). Removing a head must
remove its gate rows too, else the product no longer broadcasts. Each operand of an elementwise op on
the path from the attention output to out that is computed from a projection is followed back to it
(``channels.channels``); the channels each head meets are its granule of a *coupled* slice (rows and
bias of the gate projection). An operand whose channels cannot be followed, or that mixes heads,
makes the family frozen with the reason (strip then keeps every head).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.fx import Node

from passes.analyze.channels import NodeValues, channels
from passes.analyze.families import Slice
from passes.analyze.ops import is_pointwise
from passes.analyze.trace import Graph, depends, index_through


def _per_head(gidx: torch.Tensor, head: torch.Tensor, heads: int) -> Optional[list[list[int]]]:
    """The gate channels each head meets (disjoint, the same count per head), or None."""
    per = [sorted(set(gidx[head == h].tolist())) for h in range(heads)]
    flat = [c for p in per for c in p]
    if any(len(p) != len(per[0]) for p in per) or len(set(flat)) != len(flat) or min(flat, default=-1) < 0:
        return None
    return per


def out_gates(g: Graph, path: list[Node], idx: torch.Tensor, dim: int, heads: int,
              values: Optional[NodeValues]) -> tuple[list[Slice], str]:
    """``(coupled gate slices, why frozen or "")`` along ``path`` (attention output -> ... -> out's input),
    ``idx`` the merged channel of every element of ``path[0]``."""
    out, projs, here = [], None, idx
    for i in range(1, len(path) - 1):
        node = path[i]
        here = index_through(path[i - 1:i + 1], here) if here is not None else None  # the merged channel at node
        others = [a for a in node.all_input_nodes if a is not path[i - 1] and g.from_input(a)] \
            if is_pointwise(node) else []  # not the heads themselves, a constant, or a parameter-only scale
        if others and projs is None:
            projs = {p.node for p in g.projections()}
        for a in others:
            if not depends(a, projs, limit=200):
                continue
            found = channels(g, a, dim, values)
            if found is None or here is None or not isinstance(found[1], torch.Tensor):
                return [], f"{a.name} multiplies the heads on their way to out and cannot be followed to a projection"
            proj, gidx, _ = found
            try:
                gidx = torch.broadcast_to(gidx, tuple(here.shape))
            except RuntimeError:
                return [], f"{proj.weight} meets the heads in a shape that does not broadcast"
            per = _per_head(gidx, here // dim, heads)
            if per is None:
                return [], f"{proj.weight} gates the heads but its channels mix heads"
            out.append(Slice.at(proj.module, proj.param, proj.out_axis, [c for p in per for c in p], "coupled",
                                proj.bias_param))
    return out, ""
