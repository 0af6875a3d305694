"""Attention products in the graph: ``q . k`` scores before a softmax, ``probs . v`` after it.

A product is a ``matmul`` / ``bmm`` / ``baddbmm`` of two activations, or a two-operand ``einsum``
(LongT5's ``"...qhd,...khd->...hqk"``): ``qk_products`` reads its operands' ``Layout`` (heads,
positions, features) from the op, from the equation for an einsum (features: the contracted index;
positions: the index only one side has; heads: an index both sides and the output keep, one option per
candidate, the matcher keeps the one the channels confirm). ``score_walk`` walks back from a softmax
through elementwise and layout ops and through ``cat`` (attention sinks are columns concatenated to the
scores, GPT-OSS) to every such product; ``context`` walks forward to the ``probs . v`` product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch.fx import Node

from passes.analyze.head_axes import Layout
from passes.analyze.ops import LAYOUT_OPS, is_pointwise, op_name, shape_of
from passes.analyze.trace import Graph

PRODUCT_OPS = frozenset({"matmul", "bmm", "baddbmm", "einsum"})
JOIN_OPS = frozenset({"cat", "concat"})  # scores joined with sink columns
WALK = 48  # nodes walked back from a softmax looking for the score product


@dataclass(frozen=True)
class Product:
    """One product of two activations ``a . b`` read as attention: ``a`` q (or probs), ``b`` k (or v)."""

    node: Node
    a: Node
    b: Node
    a_layout: Layout
    b_layout: Layout
    out_layout: Layout  # of the product's output: h, s (a's positions), d (b's positions / v's features)


def operands(node: Node) -> Optional[tuple[Node, Node]]:
    """The two activation operands of a product node, else None."""
    name = op_name(node)
    if name == "baddbmm":
        a, b = node.args[1], node.args[2]
    elif name == "einsum":
        ops = node.args[1] if len(node.args) > 1 else ()
        if len(ops) != 2:
            return None
        a, b = ops
    elif name in PRODUCT_OPS:
        a, b = node.args[0], node.args[1]
    else:
        return None
    return (a, b) if isinstance(a, Node) and isinstance(b, Node) else None


def _subscripts(node: Node) -> Optional[tuple[str, str, str]]:
    """Einsum subscripts of both operands and the output, ``...`` spelled out (capitals)."""
    eq = str(node.args[0]).replace(" ", "")
    if "->" not in eq:
        return None
    ins, out = eq.split("->")
    subs = ins.split(",")
    if len(subs) != 2:
        return None
    ranks = [len(shape_of(x) or ()) for x in operands(node)]
    fill = [r - len(s.replace("...", "")) for s, r in zip(subs, ranks)]
    if min(fill) < 0:
        return None
    wide = max(fill)
    dots = "".join(chr(ord("A") + i) for i in range(wide))
    spelled = [s.replace("...", dots[wide - f:]) for s, f in zip(subs, fill)]
    return spelled[0], spelled[1], out.replace("...", dots)


def _einsum(node: Node, qk: bool) -> list[Product]:
    """One ``Product`` per candidate head index of an einsum; ``qk``: scores (features contracted), else
    ``probs . v`` (positions contracted)."""
    subs = _subscripts(node)
    if subs is None:
        return []
    la, lb, lo = subs
    a, b = operands(node)
    contracted = [c for c in la if c in lb and c not in lo]
    if len(contracted) != 1:
        return []
    shared = [c for c in la if c in lb and c in lo]
    if qk:
        (d,), sa, sb = contracted, [c for c in la if c not in lb], [c for c in lb if c not in la]
        if len(sa) != 1 or len(sb) != 1:
            return []
        return [Product(node, a, b, Layout(la.index(h), la.index(sa[0]), la.index(d)),
                        Layout(lb.index(h), lb.index(sb[0]), lb.index(d)),
                        Layout(lo.index(h), lo.index(sa[0]), lo.index(sb[0]))) for h in reversed(shared)]
    (s,), sq, dv = contracted, [c for c in la if c not in lb], [c for c in lb if c not in la]
    if len(sq) != 1 or len(dv) != 1:
        return []
    return [Product(node, a, b, Layout(la.index(h), la.index(sq[0]), la.index(s)),
                    Layout(lb.index(h), lb.index(s), lb.index(dv[0])),
                    Layout(lo.index(h), lo.index(sq[0]), lo.index(dv[0]))) for h in reversed(shared)]


def products(node: Node, qk: bool) -> list[Product]:
    """``node`` read as a q.k^T product (``qk``) or a probs.v product: one entry per layout option."""
    ops = operands(node)
    if ops is None:
        return []
    if op_name(node) == "einsum":
        return _einsum(node, qk)
    a, b = ops
    n = len(shape_of(a) or ())
    if n < 3 or len(shape_of(b) or ()) != n:
        return []
    lay = Layout.matmul(n)
    return [Product(node, a, b, lay, Layout.matmul(n, transposed=qk), lay)]


def score_walk(g: Graph, softmax: Node) -> list[tuple[Product, list[Node]]]:
    """q.k^T products of two activations reaching ``softmax`` through elementwise / layout ops and ``cat``,
    nearest first, each with its path ``[product, ..., softmax]``."""
    parent: dict[Node, Optional[Node]] = {softmax.args[0]: softmax}
    queue, found = [softmax.args[0]], []
    while queue and len(parent) < 4 * WALK:
        n = queue.pop(0)
        if not isinstance(n, Node):
            continue
        name = op_name(n)
        ops = operands(n)
        if ops is not None and all(g.from_input(x) for x in ops) and g.projection(n) is None:
            path, m = [], n
            while m is not softmax:
                path.append(m)
                m = parent[m]
            found += [(p, path + [softmax]) for p in products(n, qk=True)]
            continue
        if name in LAYOUT_OPS:
            nxt = [n.args[0]]
        elif name in JOIN_OPS:
            nxt = list(n.args[0])
        elif is_pointwise(n):
            nxt = [a for a in n.args if isinstance(a, Node)]
        else:
            continue
        for a in nxt:
            if isinstance(a, Node) and a not in parent and g.param_of(a) is None:
                parent[a] = n
                queue.append(a)
    return found


def _is_product(g: Graph, n: Node) -> bool:
    ops = operands(n) if isinstance(n, Node) else None
    return ops is not None and all(g.from_input(x) for x in ops) and g.projection(n) is None


def near_product(g: Graph, softmax: Node, limit: int = 80) -> Optional[Node]:
    """A product of two activations the softmax reads or feeds through *any* ops (no projection in between),
    within ``limit`` nodes: the softmax is attention-like even when the walks above cannot follow the ops
    (Longformer's strided chunks), so a miss is reported, not skipped."""
    for forward in (False, True):
        seen, queue = {softmax}, [softmax]
        while queue and len(seen) < limit:
            n = queue.pop(0)
            nxt = list(n.users) if forward else [a for a in n.all_input_nodes if g.from_input(a)]
            for m in nxt:
                if m in seen or g.projection(m) is not None:
                    continue
                if _is_product(g, m):
                    return m
                seen.add(m)
                queue.append(m)
    return None


def context(g: Graph, softmax: Node) -> Optional[Node]:
    """The product of the softmax output with another activation (``probs . v``) it reaches through layout /
    elementwise ops, whether or not ``products`` can read its layout; None when there is none (a router)."""
    def stop(prev, m):
        ops = operands(m)
        return ops is not None and ops[0] is prev and g.from_input(ops[1])
    path = g.path_from(softmax, stop)
    return path[-1] if path else None
