"""Attention families: ``sdpa(q, k, v)`` or ``softmax(q @ k^T) @ v``, traced back to their projections.

q/k/v are followed back to the projections that produce them, and a tensor of channel indices is
replayed through the layout ops in between (``trace.index_through``), which reveals fused
projections (GPT-2 ``c_attn``, ``in_proj_weight``), head counts and grouped-query kv heads. The out
projection is the one consuming the merged heads.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.fx import Node

from passes.analyze.plan import AttentionFamily, common_prefix
from passes.analyze.trace import (ATTENTION_OPS, MATMUL_OPS, SOFTMAX_OPS, Graph, Projection, index_through,
                                  is_pointwise, op_name, shape_of)


def sites(g: Graph):
    """Yield ``(anchor, q, k, v, k_is_transposed, attention_output)`` for every attention op."""
    for n in g.nodes:
        name = op_name(n)
        if name in ATTENTION_OPS:
            out = n if shape_of(n) is not None else next(
                (u for u in n.users if op_name(u) == "getitem" and u.args[1] == 0), None)
            yield n, n.args[0], n.args[1], n.args[2], False, out
        elif name in SOFTMAX_OPS:
            scores = n.args[0]
            while isinstance(scores, Node) and is_pointwise(scores) and op_name(scores) not in MATMUL_OPS:
                scores = next((a for a in scores.args if shape_of(a) == shape_of(n)), None)
            ctx = g.path_from(n, lambda prev, m: op_name(m) in MATMUL_OPS and m.args[0] is prev)
            if isinstance(scores, Node) and op_name(scores) in ("matmul", "bmm") and ctx is not None:
                yield n, scores.args[0], scores.args[1], ctx[-1].args[1], True, ctx[-1]


def _channels(proj: Projection) -> torch.Tensor:
    """Output channel index of every element of the projection's output."""
    shp = shape_of(proj.node)
    return torch.arange(shp[-1]).expand(shp).contiguous()


def _head_starts(g: Graph, node, transposed: bool) -> tuple[Optional[Projection], list[int], str]:
    """Projection feeding ``node`` and, per head along axis -3, the first channel it reads."""
    path = g.path_to_projection(node)
    if path is None:
        return None, [], f"{getattr(node, 'name', node)} is not a projection reshaped into heads"
    proj = g.projection(path[0])
    idx = index_through(path, _channels(proj))
    if idx is None or idx.dim() not in (3, 4):
        return None, [], f"cannot follow channels from {proj.weight} to {node.name}"
    idx = idx.transpose(-1, -2) if transposed else idx
    if idx.dim() == 3:  # (batch * heads, seq, head_dim)
        heads = len(torch.unique(idx[:, 0, 0]))
        idx = idx.reshape(-1, heads, *idx.shape[1:])
    dim = idx.shape[-1]
    ref = idx[:1, :, :1, :]
    starts = ref[0, :, 0, 0]
    if not (idx == ref).all() or not (ref[0, :, 0, :] == starts[:, None] + torch.arange(dim)).all():
        return None, [], f"{proj.weight}: heads are not contiguous runs of head_dim channels"
    return proj, [int(s) for s in starts], ""


def _kv_layout(starts: list[int], heads: int, dim: int) -> Optional[tuple[int, int]]:
    """``(start, num_kv_heads)`` if kv head ``j`` is at ``start + j*dim`` and q head h reads h // rep."""
    uniq = sorted(set(starts))
    n = len(uniq)
    if uniq != [uniq[0] + j * dim for j in range(n)] or heads % n:
        return None
    if len(starts) == n and starts == uniq:
        return uniq[0], n
    if len(starts) == heads and starts == [uniq[h // (heads // n)] for h in range(heads)]:
        return uniq[0], n
    return None


def match_attention(g: Graph, site) -> tuple[Optional[AttentionFamily], str]:
    anchor, q, k, v, k_t, out = site
    qp, qs, why = _head_starts(g, q, False)
    if qp is None:
        return None, why
    heads, dim = len(qs), shape_of(q)[-1]
    if qs != [qs[0] + h * dim for h in range(heads)]:
        return None, f"{qp.weight}: q heads out of order"
    kv = {}
    for role, node, tr in (("k", k, k_t), ("v", v, False)):
        p, starts, why = _head_starts(g, node, tr)
        lay = _kv_layout(starts, heads, dim) if p is not None else None
        if lay is None:
            return None, why or f"{role}: unsupported grouped-query layout {starts}"
        kv[role] = (p, *lay)
    if kv["k"][2] != kv["v"][2]:
        return None, "k and v have different head counts"
    if out is None:
        return None, f"{anchor.name}: attention output not found"
    path = g.path_from(out, lambda prev, m: g.projection(m) is not None and g.projection(m).x is prev)
    if path is None:
        return None, f"{anchor.name}: no projection consumes the merged heads"
    op = g.projection(path[-1])
    width, shp = heads * dim, shape_of(out)
    if len(shp) == 4:
        merged = torch.arange(heads).view(1, heads, 1, 1) * dim + torch.arange(dim)
    else:
        merged = (torch.arange(shp[0]) % heads).view(-1, 1, 1) * dim + torch.arange(dim)
    idx = index_through(path[:-1], merged.expand(shp).contiguous())
    if idx is None or idx.shape[-1] != width or not (idx.reshape(-1, width) == torch.arange(width)).all():
        return None, f"{op.weight}: input channels are not the merged heads in order"
    sl = dict(q=qp.slice(qs[0], width, "q", True), out=op.slice(0, width, "out", False))
    for role, (p, start, n_kv) in kv.items():
        sl[role] = p.slice(start, n_kv * dim, role, True)
    fam = AttentionFamily(common_prefix(s.fqn for s in sl.values()), -1, heads, kv["k"][2], dim, **sl)
    return fam, ""
