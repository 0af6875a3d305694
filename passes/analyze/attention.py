"""Attention families: ``sdpa(q, k, v)`` or ``softmax(q @ k^T) @ v``, traced back to their projections.

Sites: every ``scaled_dot_product_attention`` and every softmax over *scores* (a product of two
activations, found by walking back from the softmax through elementwise and layout ops: scores
may be scaled, biased, masked and reshaped before the softmax, as in disentangled attention).
q/k/v are followed back to the projections that produce them with ``channels.channels`` (a tensor
of channel indices replayed through the ops in between), which reveals fused projections (GPT-2
``c_attn``, ``in_proj_weight``), heads interleaved in a fused weight (``[heads, 3, head_dim]``),
partial rotary (``cat``), head counts and grouped-query kv heads. The out projection is the one
consuming the merged heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.fx import Node

from passes.analyze.channels import NodeValues, channels
from passes.analyze.plan import AttentionFamily, Slice, common_prefix
from passes.analyze.trace import (
    ATTENTION_OPS,
    LAYOUT_OPS,
    MATMUL_OPS,
    SOFTMAX_OPS,
    Graph,
    Projection,
    index_through,
    is_pointwise,
    op_name,
    shape_of,
)

SCORE_OPS = frozenset({"matmul", "bmm", "baddbmm"})
WALK = 12  # nodes walked back from a softmax looking for the score product


@dataclass
class Site:
    """One attention op: candidate (q, k) products, v, the output, and how scores reach the softmax."""

    anchor: Node
    candidates: list[tuple[Node, Node, bool, list[Node]]]  # (q, k, k transposed?, matmul -> ... -> softmax)
    v: Optional[Node]
    out: Optional[Node]
    mask: Optional[Node] = None  # sdpa attn_mask
    reason: str = ""
    walk: list[Node] = field(default_factory=list)  # the chosen candidate's path (set by match)
    sides: dict = field(default_factory=dict)  # role -> channels' sides on its path (set by match)


def _score_candidates(g: Graph, softmax: Node) -> list[tuple[Node, Node, bool, list[Node]]]:
    """Products of two activations reaching ``softmax`` through elementwise / layout ops, nearest first."""
    parent: dict[Node, Optional[Node]] = {softmax.args[0]: softmax}
    queue, found = [softmax.args[0]], []
    while queue and len(parent) < 4 * WALK:
        n = queue.pop(0)
        if not isinstance(n, Node):
            continue
        name = op_name(n)
        if name in SCORE_OPS:
            a, b = (n.args[1], n.args[2]) if name == "baddbmm" else (n.args[0], n.args[1])
            if g.param_of(a) is None and g.param_of(b) is None and g.projection(n) is None:
                path, m = [], n
                while m is not softmax:
                    path.append(m)
                    m = parent[m]
                found.append((a, b, True, path + [softmax]))
            continue
        if name in LAYOUT_OPS:
            nxt = [n.args[0]]
        elif is_pointwise(n):
            nxt = [a for a in n.args if isinstance(a, Node)]
        else:
            continue
        for a in nxt:
            if isinstance(a, Node) and a not in parent and g.param_of(a) is None:
                parent[a] = n
                queue.append(a)
    return found


def sites(g: Graph):
    """Every attention op as a :class:`Site` (softmaxes not over scores are skipped)."""
    for n in g.nodes:
        name = op_name(n)
        if name in ATTENTION_OPS:
            out = n if shape_of(n) is not None else next(
                (u for u in n.users if op_name(u) == "getitem" and u.args[1] == 0), None)
            mask = n.args[3] if len(n.args) > 3 else n.kwargs.get("attn_mask")
            yield Site(n, [(n.args[0], n.args[1], False, [n])], n.args[2], out, mask)
        elif name in SOFTMAX_OPS:
            cands = _score_candidates(g, n)
            if not cands:
                continue  # a softmax over projections (router, classifier): not attention
            ctx = g.path_from(n, lambda prev, m: op_name(m) in MATMUL_OPS and m.args[0] is prev)
            yield Site(n, cands, ctx[-1].args[1] if ctx else None, ctx[-1] if ctx else None,
                       reason="" if ctx else "the softmax output does not reach a matmul with v")


def _heads(g: Graph, node, transposed: bool, unit: int, values, sides: Optional[list] = None):
    """Projection feeding ``node`` and, per head along axis -3, the sorted channels it reads (the path's
    side operands are appended to ``sides``)."""
    found = channels(g, node, unit, values)
    if found is None:
        return None, [], f"{getattr(node, 'name', node)} is not a projection reshaped into heads"
    proj, idx, extra = found
    if sides is not None:
        sides.extend(extra)
    if idx.dim() not in (3, 4):
        return None, [], f"cannot follow channels from {proj.weight} to {node.name}"
    idx = idx.transpose(-1, -2) if transposed else idx
    if idx.dim() == 3:  # (batch * heads, seq, head_dim)
        heads = len(torch.unique(idx[:, 0, 0]))
        if idx.shape[0] % heads:
            return None, [], f"{proj.weight}: cannot split {idx.shape[0]} rows into heads"
        idx = idx.reshape(-1, heads, *idx.shape[1:])
    if not (idx == idx[:1, :, :1, :]).all():
        return None, [], f"{proj.weight}: a head reads different channels at different positions"
    per_head = [tuple(sorted(int(c) for c in idx[0, h, 0, :])) for h in range(idx.shape[1])]
    if any(len(set(ch)) != idx.shape[-1] for ch in per_head):
        return None, [], f"{proj.weight}: a head reads a channel twice"
    return proj, per_head, ""


def _kv_heads(per_head: list, heads: int) -> Optional[list]:
    """Distinct kv heads in order, if q head ``h`` reads kv head ``h // (heads // n_kv)``."""
    uniq = list(dict.fromkeys(per_head))
    n = len(uniq)
    if heads % n:
        return None
    if per_head == uniq or per_head == [uniq[h // (heads // n)] for h in range(heads)]:
        return uniq
    return None


def _out_columns(g: Graph, out: Node, heads: int, dim: int) -> tuple[Optional[Projection], list, str]:
    """The projection consuming the merged heads, and per head the input columns it reads."""
    path = g.path_from(out, lambda prev, m: g.projection(m) is not None and g.projection(m).x is prev)
    if path is None:
        return None, [], f"{out.name}: no projection consumes the merged heads"
    op, shp = g.projection(path[-1]), shape_of(out)
    if len(shp) == 4:
        merged = torch.arange(heads).view(1, heads, 1, 1) * dim + torch.arange(dim)
    else:
        merged = (torch.arange(shp[0]) % heads).view(-1, 1, 1) * dim + torch.arange(dim)
    idx = index_through(path[:-1], merged.expand(shp).contiguous())
    if idx is None or idx.shape[-1] != op.in_features:
        return None, [], f"{op.weight}: cannot follow the merged heads to its input"
    rows = idx.reshape(-1, idx.shape[-1])
    if not (rows == rows[:1]).all() or sorted(rows[0].tolist()) != list(range(heads * dim)):
        return None, [], f"{op.weight}: input columns are not exactly the merged heads"
    col = rows[0]
    return op, [[int(c) for c in (col // dim == h).nonzero().flatten()] for h in range(heads)], ""


def _slice(p: Projection, positions, role: str, on_output: bool) -> Slice:
    axis = p.out_axis if on_output else 1 - p.out_axis
    return Slice.at(p.module, p.param, axis, positions, role, p.bias_param if on_output else None)


def _match_one(g: Graph, q, k, k_t: bool, v, out, values, sides: dict) -> tuple[Optional[AttentionFamily], str]:
    dim = shape_of(q)[-1]
    qp, qh, why = _heads(g, q, False, dim, values, sides.setdefault("q", []))
    if qp is None:
        return None, why
    heads = len(qh)
    if len({c for h in qh for c in h}) != heads * dim:
        return None, f"{qp.weight}: q heads overlap"
    kv = {}
    for role, node, tr in (("k", k, k_t), ("v", v, False)):
        p, per, why = _heads(g, node, tr, dim, values, sides.setdefault(role, []))
        uniq = _kv_heads(per, heads) if p is not None else None
        if uniq is None:
            return None, why or f"{role}: unsupported grouped-query layout"
        kv[role] = (p, uniq)
    if len(kv["k"][1]) != len(kv["v"][1]):
        return None, "k and v have different head counts"
    k_len = shape_of(k)[-1 if k_t else -2]
    if k_len != shape_of(v)[-2]:
        return None, f"{k.name} has {k_len} positions but v has {shape_of(v)[-2]}: not the q.k scores"
    if out is None:
        return None, "attention output not found"
    op, cols, why = _out_columns(g, out, heads, dim)
    if op is None:
        return None, why
    sl = dict(q=_slice(qp, [c for h in qh for c in h], "q", True),
              out=_slice(op, [c for h in cols for c in h], "out", False))
    for role, (p, uniq) in kv.items():
        sl[role] = _slice(p, [c for h in uniq for c in h], role, True)
    fam = AttentionFamily(common_prefix(s.fqn for s in sl.values()), -1, heads, len(kv["k"][1]), dim, **sl)
    return fam, ""


def match_attention(g: Graph, site: Site, values: Optional[NodeValues] = None) -> tuple[Optional[AttentionFamily], str]:
    """The family at ``site`` (trying each score product), or None and why not."""
    if site.v is None:
        return None, site.reason
    reasons = []
    for q, k, k_t, walk in site.candidates:
        sides: dict = {}
        fam, why = _match_one(g, q, k, k_t, site.v, site.out, values, sides)
        if fam is not None:
            site.walk, site.sides = walk, sides
            return fam, ""
        reasons.append(why)
    return None, reasons[0] if reasons else site.reason
