"""Tensors that meet q / k / v between their projection and the attention op (``channels`` sides).

Following a projection's channels to the attention op (``channels.channels``) passes elementwise ops
whose other operand carries no channels of its own: rotary ``cos`` / ``sin``, a per-head bias added to
q (DeBERTa's ``q_bias``), a head-wise scale, a norm's statistic or weight. Each becomes a *term* for
``side_tensors.analyze_term``, labelled with the head of every element (from the channel index at that
op), so the same rules apply: shared (rotary tables), coupled (per-head biases, sliced with the heads)
or frozen. A statistic computed from the projection's own output is fine inside one head (Qwen3's
per-head q/k norm) but ties the heads together when it spans several (OLMo-2 normalises q over all
heads): then the heads are frozen.
"""
from __future__ import annotations

import torch
from torch.fx import Node

from passes.analyze.ops import shape_of
from passes.analyze.plan import AttentionFamily
from passes.analyze.trace import Graph, depends

ROLES = ("q", "k", "v")


def _heads_of_channels(sl, unit: int, size: int) -> torch.Tensor:
    """Head index of every channel of the slice's weight axis (-1 outside the slice)."""
    lookup = torch.full((max(size, max(sl.positions()) + 1),), -1, dtype=torch.long)
    for i, pos in enumerate(sl.positions()):
        lookup[pos] = i // unit
    return lookup


def path_terms(g: Graph, site, fam: AttentionFamily, values, stop: set) -> tuple[list, str]:
    """``([(term, head ids, heads)], why frozen or "")`` for the sides on the q / k / v paths."""
    out = []
    for role in ROLES:
        sl = getattr(fam, role)
        heads = fam.num_heads if role == "q" else fam.num_kv_heads
        if role != "q" and heads != fam.num_heads:
            continue  # grouped-query k/v: rotary tables only in practice; per-kv-head tensors are not sliced
        for op, operand, idx in site.sides.get(role, []):
            if not isinstance(idx, torch.Tensor) or not isinstance(operand, Node):
                continue
            lookup = _heads_of_channels(sl, fam.unit(role), int(idx.max()) + 1)
            ids = torch.where(idx >= 0, lookup[idx.clamp(min=0)], -1)  # -1: no channel of this projection
            if depends(operand, stop, limit=300):  # a statistic of the projection's own output
                if (shape_of(op) or (0,))[-1] > fam.unit(role) and (shape_of(operand) or (1,))[-1] == 1:
                    return [], (f"{g.module_of(op) or op.name} scales {role} by a statistic over several heads "
                                f"(a norm over the whole projection): the heads are not independent")
                continue
            out.append((operand, ids, heads))
    return out, ""
