"""Terms on the score path: what joins the q.k scores between the product and the softmax.

``score_terms`` walks the chosen path of a site (``attention.Site.walk``) with the head of every element
of the scores, and returns each operand added or multiplied in (a relative-position bias, a mask), the
``attn_mask`` of an sdpa, and the columns a ``cat`` joins to the scores (GPT-OSS's sink logits, one per
head), each labelled with the head of every element where it joins: ``side_tensors.analyze_term`` decides
whether it is shared, per-head (coupled) or frozen. A term computed from the scores themselves
(``x - max(x)`` before the softmax) adds nothing and is skipped.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.fx import Node

from passes.analyze.channels import NodeValues, _replay
from passes.analyze.ops import (
    ATTENTION_OPS,
    LAYOUT_OPS,
    is_pointwise,
    op_name,
    shape_of,
)
from passes.analyze.plan import AttentionFamily
from passes.analyze.scores import JOIN_OPS
from passes.analyze.trace import depends


def _head_ids(shape: tuple, head_axis, heads: int) -> torch.Tensor:
    """Head of every element of a scores tensor (``head_axis`` None: heads folded into axis 0)."""
    n = len(shape)
    if head_axis is None:
        return (torch.arange(shape[0]) % heads).reshape([shape[0]] + [1] * (n - 1)).expand(shape)
    return torch.arange(heads).reshape([heads if a == head_axis % n else 1 for a in range(n)]).expand(shape)


def _joined_terms(node: Node, prev: Node, ids: torch.Tensor, heads: int) -> Optional[tuple[list, torch.Tensor]]:
    """Pieces ``cat`` joins to the scores (sink columns): ``([(piece, its head ids, heads)], ids of the cat)``;
    None when the pieces are joined along the head axis."""
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    dim = dim % ids.dim()
    if not torch.equal(ids, ids.narrow(dim, 0, 1).expand_as(ids)):
        return None
    pieces, out = [], []
    for piece in node.args[0]:
        shp = shape_of(piece)
        if shp is None or len(shp) != ids.dim():
            return None
        size = list(ids.shape)
        size[dim] = shp[dim]
        piece_ids = ids.narrow(dim, 0, 1).expand(size)
        out.append(piece_ids)
        if piece is not prev:
            pieces.append((piece, piece_ids, heads))
    return pieces, torch.cat(out, dim)


def score_terms(site, fam: AttentionFamily, values: NodeValues) -> list[tuple[Node, torch.Tensor, int]]:
    """``(term, head id of every element where it joins, heads)`` along the site's score path."""
    first = site.walk[0]
    if op_name(first) in ATTENTION_OPS:  # sdpa: the mask broadcasts to (batch, heads, q, k)
        q, k = first.args[0], first.args[1]
        shape = (shape_of(q)[0], fam.num_heads, shape_of(q)[-2], shape_of(k)[-2])
        ids = torch.arange(fam.num_heads).view(1, -1, 1, 1).expand(shape)
        return [(site.mask, ids, fam.num_heads)] if isinstance(site.mask, Node) else []
    heads = fam.num_heads
    ids = _head_ids(shape_of(first), site.head_axis, heads)
    out = [(first.args[0], ids, heads)] if op_name(first) == "baddbmm" and isinstance(first.args[0], Node) else []
    for i, (prev, node) in enumerate(zip(site.walk, site.walk[1:-1])):
        if op_name(node) in JOIN_OPS:
            joined = _joined_terms(node, prev, ids, heads)
            if joined is None:
                return out
            out, ids = out + joined[0], joined[1]
        elif op_name(node) in LAYOUT_OPS:
            ids = _replay(node, {prev: ids}, values)
            if ids is None:
                return out
        elif is_pointwise(node):
            ids = ids.expand(shape_of(node)) if shape_of(node) != tuple(ids.shape) else ids
            scores = set(site.walk[:i + 1])  # x - max(x): a term computed from the scores themselves adds nothing
            out += [(a, ids, heads) for a in node.args if isinstance(a, Node) and a is not prev
                    and not depends(a, scores, limit=40)]
    return out
