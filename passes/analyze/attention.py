"""Attention families: ``sdpa(q, k, v)`` or ``softmax(q . k) . v``, traced back to their projections.

Sites: every ``scaled_dot_product_attention`` and every softmax over *scores* (``scores.py``: a
matmul or einsum of two activations, found by walking back from the softmax through elementwise and
layout ops and sink columns: scores may be scaled, biased, masked, reshaped and joined before the
softmax, as in disentangled attention or GPT-OSS), and every softmax whose output is multiplied with
v even when its scores cannot be traced (reported, not skipped). q/k/v are followed back to the
projections that produce them with ``channels.channels`` (a tensor of channel indices replayed
through the ops in between) and read per head along their ``Layout`` (``head_axes.py``), which reveals
fused projections (GPT-2 ``c_attn``, ``in_proj_weight``), heads interleaved in a fused weight
(``[heads, 3, head_dim]``) or split after the reshape into heads (LeViT), partial rotary (``cat``),
head counts, grouped-query kv heads, and a key part every head shares (latent attention's rope key,
recorded in ``shared`` and left whole). v and out heads may be narrower or wider than q's. The out
projection is the one consuming the merged heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.fx import Node

from passes.analyze.channels import Foreign, NodeValues, channels
from passes.analyze.head_axes import Layout, merged, read_heads
from passes.analyze.out_gates import out_gates
from passes.analyze.ops import ATTENTION_OPS, SOFTMAX_OPS, op_name, shape_of
from passes.analyze.plan import AttentionFamily, Slice, common_prefix
from passes.analyze.scores import Product, context, near_product, products, score_walk
from passes.analyze.trace import Graph, Projection, index_through


@dataclass
class Site:
    """One attention op: candidate q.k products, the probs.v product options, and how scores reach the softmax."""

    anchor: Node
    candidates: list[tuple[Product, list[Node]]]  # (q.k product, product -> ... -> softmax)
    contexts: list[Product]  # probs.v (an sdpa: the op itself), one per layout option
    mask: Optional[Node] = None  # sdpa attn_mask
    reason: str = ""
    walk: list[Node] = field(default_factory=list)  # the chosen candidate's path (set by match)
    sides: dict = field(default_factory=dict)  # role -> channels' sides on its path (set by match)
    head_axis: Optional[int] = None  # of the chosen product's output (None: heads folded into axis 0)


def _sdpa(n: Node) -> Site:
    out = n if shape_of(n) is not None else next(
        (u for u in n.users if op_name(u) == "getitem" and u.args[1] == 0), None)
    mask = n.args[3] if len(n.args) > 3 else n.kwargs.get("attn_mask")
    q, k, v = n.args[:3]
    ndim = len(shape_of(q) or ())
    lay = Layout.matmul(ndim)
    scores = Product(n, q, k, lay, lay, lay)
    ctx = [Product(out, n, v, lay, lay, lay)] if out is not None else []
    return Site(n, [(scores, [n])], ctx, mask, "" if out is not None else "attention output not found")


def _ops_on_the_way(g: Graph, softmax: Node, limit: int = 6) -> str:
    """The ops right before a softmax (for the reason of a miss)."""
    seen, queue, names = {softmax}, [softmax.args[0]], []
    while queue and len(names) < limit:
        n = queue.pop(0)
        if not isinstance(n, Node) or n in seen or n.op != "call_function":
            continue
        seen.add(n)
        names.append(op_name(n))
        queue.extend(a for a in n.all_input_nodes)
    return ", ".join(dict.fromkeys(names))


def sites(g: Graph):
    """Every attention op as a :class:`Site`: each sdpa, and each softmax whose output reaches a product with
    another activation (probs . v) or that q.k scores reach. A softmax of neither kind (a router, a
    classifier) is no attention; a softmax of the first kind whose scores the walk cannot trace back to a
    q.k product is a Site without candidates (reported, never skipped in silence)."""
    for n in g.nodes:
        name = op_name(n)
        if name in ATTENTION_OPS:
            yield _sdpa(n)
        elif name in SOFTMAX_OPS:
            cands, pv = score_walk(g, n), context(g, n)
            if not cands and pv is None:
                near = near_product(g, n)
                if near is not None:
                    why = (f"a softmax next to a product of activations ({near.name}) through ops the attention "
                           f"walks do not follow ({_ops_on_the_way(g, n)})")
                    yield Site(n, [], [], reason=why)
                continue  # else a softmax over projections (router, classifier): not attention
            ctx = products(pv, qk=False) if pv is not None else []
            why = "" if ctx else "the softmax output does not reach a matmul with v" if pv is None else \
                f"{pv.name} multiplies the probabilities with v in a layout the matcher does not read"
            if not cands:
                why = (f"its output is multiplied with another activation (probs . v) but the scores were not "
                       f"traced back to a q.k product (ops before the softmax: {_ops_on_the_way(g, n)})")
            yield Site(n, cands, ctx, reason=why)


def _read(g: Graph, node, layout: Layout, unit: int, values, sides: Optional[list] = None):
    """``(projection, Heads, foreign projections, why)``: the projection feeding ``node`` and the channels each
    head reads (the path's side operands are appended to ``sides``)."""
    found = channels(g, node, unit, values)
    if found is None:
        return None, None, (), f"{getattr(node, 'name', node)} is not a projection reshaped into heads"
    proj, idx, extra = found
    if sides is not None:
        sides.extend(x for x in extra if not isinstance(x[2], Foreign))
    if not isinstance(idx, torch.Tensor):
        return None, None, (), f"cannot follow channels from {proj.weight} to {node.name}"
    heads, why = read_heads(idx, layout)
    if heads is None:
        return None, None, (), f"{proj.weight}: {why}"
    joined = tuple(dict.fromkeys(x[2].proj for x in extra if isinstance(x[2], Foreign))) if heads.shared else ()
    return proj, heads, joined, ""


def _kv_heads(per_head: list, heads: int) -> Optional[list]:
    """Distinct kv heads in order, if q head ``h`` reads kv head ``h // (heads // n_kv)``."""
    uniq = list(dict.fromkeys(per_head))
    n = len(uniq)
    if heads % n:
        return None
    if per_head == uniq or per_head == [uniq[h // (heads // n)] for h in range(heads)]:
        return uniq
    return None


def _out_columns(g: Graph, out: Node, layout: Layout, heads: int, dim: int, values) -> \
        tuple[Optional[Projection], list, str, tuple[list, str]]:
    """The projection consuming the merged heads, per head the input columns it reads, why not, and the
    output gates on the way (``out_gates.py``: ``(coupled slices, why frozen)``)."""
    path = g.path_from(out, lambda prev, m: g.projection(m) is not None and g.projection(m).x is prev)
    if path is None:
        return None, [], f"{out.name}: no projection consumes the merged heads", ([], "")
    op = g.projection(path[-1])
    start = merged(shape_of(out), layout, heads, dim)
    idx = index_through(path[:-1], start)
    if idx is None or idx.shape[-1] != op.in_features:
        return None, [], f"{op.weight}: cannot follow the merged heads to its input", ([], "")
    rows = idx.reshape(-1, idx.shape[-1])
    if not (rows == rows[:1]).all() or sorted(rows[0].tolist()) != list(range(heads * dim)):
        return None, [], f"{op.weight}: input columns are not exactly the merged heads", ([], "")
    col = rows[0]
    gates = out_gates(g, path, start, dim, heads, values)
    return op, [[int(c) for c in (col // dim == h).nonzero().flatten()] for h in range(heads)], "", gates


def _slice(p: Projection, positions, role: str, on_output: bool) -> Slice:
    axis = p.out_axis if on_output else 1 - p.out_axis
    return Slice.at(p.module, p.param, axis, positions, role, p.bias_param if on_output else None)


def _match_one(g: Graph, scores: Product, ctx: Product, values, sides: dict) -> tuple[Optional[AttentionFamily], str]:
    q, k, v, out = scores.a, scores.b, ctx.b, ctx.node
    dim = shape_of(q)[scores.a_layout.d]
    qp, qh, joined, why = _read(g, q, scores.a_layout, dim, values, sides.setdefault("q", []))
    if qp is None:
        return None, why
    heads = len(qh.channels)
    if len({c for h in qh.channels for c in h}) != heads * qh.unit:
        return None, f"{qp.weight}: q heads overlap"
    kv, shared = {}, list(joined)
    for role, node, layout in (("k", k, scores.b_layout), ("v", v, ctx.b_layout)):
        p, per, more, why = _read(g, node, layout, dim, values, sides.setdefault(role, []))
        uniq = _kv_heads(per.channels, heads) if p is not None else None
        if uniq is None:
            return None, why or f"{role}: unsupported grouped-query layout"
        kv[role], shared = (p, uniq), shared + list(more)
    if len(kv["k"][1]) != len(kv["v"][1]):
        return None, "k and v have different head counts"
    k_len, v_len = shape_of(k)[scores.b_layout.s], shape_of(v)[ctx.b_layout.s]
    if k_len != v_len:
        return None, f"{k.name} has {k_len} positions but v has {v_len}: not the q.k scores"
    op, cols, why, (gates, frozen) = _out_columns(g, out, ctx.out_layout, heads, len(kv["v"][1][0]), values)
    if op is None:
        return None, why
    sl = dict(q=_slice(qp, [c for h in qh.channels for c in h], "q", True),
              out=_slice(op, [c for h in cols for c in h], "out", False))
    for role, (p, uniq) in kv.items():
        sl[role] = _slice(p, [c for h in uniq for c in h], role, True)
    names = [n for p in dict.fromkeys(shared) for n in (p.weight, p.bias) if n]
    fam = AttentionFamily(common_prefix(s.fqn for s in sl.values()), -1, heads, len(kv["k"][1]), qh.unit,
                          shared=tuple(names), coupled=tuple(gates), frozen=frozen, **sl)
    return fam, ""


def match_attention(g: Graph, site: Site, values: Optional[NodeValues] = None) -> tuple[Optional[AttentionFamily], str]:
    """The family at ``site`` (trying each score product and layout option), or None and why not."""
    if not site.contexts or not site.candidates:
        return None, site.reason
    reasons = []
    for scores, walk in site.candidates:
        for ctx in site.contexts:
            if (scores.a_layout.h is None) != (ctx.a_layout.h is None):
                continue
            sides: dict = {}
            fam, why = _match_one(g, scores, ctx, values, sides)
            if fam is not None:
                site.walk, site.sides, site.head_axis = walk, sides, scores.out_layout.h
                return fam, ""
            reasons.append(why)
    return None, reasons[0] if reasons else site.reason
