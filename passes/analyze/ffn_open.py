"""Feed-forward sites ``ffn.py`` does not name: any elementwise ops between up (and gate) and down.

``ffn.match_ffn`` wants one of ``ACTIVATIONS`` right between the projections. Vision hybrids put more
there: LeViT runs ``Linear -> BatchNorm1d -> Hardswish -> Linear``; others clamp, scale per channel,
or compose an activation of several ops. A neuron stays a neuron as long as channel ``j`` of down's
input depends on channel ``j`` of up (and gate) only: every op on the way is elementwise, a layout op
keeping the last axis, or a batch norm in eval mode over ``(N, C)``. Their other operands are scalars
(shared by every neuron) or parameters / buffers with one entry per channel (a norm's weight, bias,
running statistics; a learned scale): *coupled*, removed with the neurons. The family's activation is
then ``open:<ops>`` (strip removes neurons by their zero down columns only; ``activations.activation``).
``mlp_shaped`` says which projections look like an MLP's down through any chain of ops, so a miss is
reported whatever sits in between.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.fx import Node

from passes.analyze.activations import ACTIVATIONS, OPEN
from passes.analyze.channels import BATCH_NORM_OPS, NodeValues, channel_affine
from passes.analyze.ops import LAYOUT_OPS, is_pointwise, op_name, shape_of
from passes.analyze.pieces import piece
from passes.analyze.plan import FeedForwardFamily, Slice, common_prefix
from passes.analyze.trace import Graph, Projection

KEEP_LAST = frozenset({"view", "reshape", "_unsafe_view", "flatten", "unflatten", "reshape_as", "view_as",
                       "contiguous", "clone"})


def _keeps_channels(n: Node) -> bool:
    last = (shape_of(n) or (None,))[-1]
    if op_name(n) in KEEP_LAST:
        return last == (shape_of(n.args[0]) or (0,))[-1]
    return op_name(n) in BATCH_NORM_OPS and channel_affine(n) or is_pointwise(n)


def region(g: Graph, down: Projection) -> tuple[Optional[list[Node]], list[Node], list[Node], str]:
    """``(ops between the leaves and down, leaves (up / gate), other operands, why not)``."""
    ops, leaves, others, stack = set(), [], [], [down.x]
    while stack:
        n = stack.pop()
        if n in ops or n in leaves:
            continue
        if piece(g, n) is not None:
            leaves.append(n)
        elif isinstance(n, Node) and n.op == "call_function" and _keeps_channels(n):
            ops.add(n)
            operands = n.all_input_nodes[:1] if op_name(n) in KEEP_LAST else \
                [a for a in n.all_input_nodes if g.from_input(a) and (shape_of(a) == shape_of(n) or a is n.args[0])]
            stack.extend(operands)
            others.extend(a for a in n.all_input_nodes if a not in operands and op_name(n) not in KEEP_LAST)
        else:
            what = op_name(n) or getattr(n, "op", type(n).__name__)
            return None, [], [], f"{what} between the projections and {down.weight} is not elementwise"
    return sorted(ops, key=g.order.get), sorted(leaves, key=g.order.get), list(dict.fromkeys(others)), ""


def _coupled(g: Graph, others: list[Node], width: int) -> tuple[Optional[list[Slice]], str]:
    """Per-neuron slices of the parameters / buffers among ``others``; scalars are shared."""
    out = []
    for a in others:
        shp = shape_of(a)
        if shp is None or all(d == 1 for d in shp):
            continue  # a scalar: the same for every neuron
        sig = g.ep.graph_signature
        name = sig.inputs_to_parameters.get(a.name) or sig.inputs_to_buffers.get(a.name) if a.op == "placeholder" \
            else None
        if name is None or shp[-1] != width or any(d != 1 for d in shp[:-1]):
            return None, f"{a.name} meets the neurons but is not a per-channel parameter or buffer"
        fqn, _, param = name.rpartition(".")
        out.append(Slice(fqn, param, len(shp) - 1, 0, width, "coupled"))
    return out, ""


def _named(ops: list[Node], leaves: list[Node], values: NodeValues) -> Optional[str]:
    """The ``ACTIVATIONS`` key the ops compute on one leaf, if any (no per-channel operand on the way)."""
    if len(leaves) != 1:
        return None
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(shape_of(leaves[0]), generator=gen, dtype=torch.float64) * 3
    env = {leaves[0]: probe}
    look = lambda a: env[a] if a in env else (values[a] if isinstance(a, Node) else a)  # noqa: E731
    with torch.no_grad():
        for n in ops:
            env[n] = n.target(*torch.fx.node.map_aggregate(n.args, look), **torch.fx.node.map_aggregate(n.kwargs, look))
        got = env[ops[-1]].double()
    for key, act in ACTIVATIONS.items():
        if got.shape == probe.shape and torch.allclose(got, act(probe), atol=2e-5):
            return key
    return None


def match_open_ffn(g: Graph, down: Projection, values: NodeValues) -> tuple[Optional[FeedForwardFamily], str]:
    """The feed-forward family ending in ``down`` with any elementwise ops on the way, or None and why not."""
    ops, leaves, others, why = region(g, down)
    if ops is None:
        return None, why
    if not ops or len(leaves) not in (1, 2):
        return None, f"{len(leaves)} projections feed {down.weight} through elementwise ops (1 or 2 make an FFN)"
    width = down.in_features
    parts = [piece(g, n) for n in leaves]
    if any(shape_of(n)[-1] != width or p.in_features != down.out_features for n, (p, _) in zip(leaves, parts)):
        return None, f"widths do not match ({[p.weight for p, _ in parts]} -> {down.weight})"
    coupled, why = _coupled(g, others, width)
    if coupled is None:
        return None, why
    name = None if coupled else _named(ops, leaves, values)
    act = name or OPEN + ",".join(dict.fromkeys(op_name(n) for n in ops if op_name(n) not in KEEP_LAST))
    (up, u0), gate = parts[-1], parts[0] if len(parts) == 2 else None
    sl = dict(up=up.slice(u0, width, "up", True), down=down.slice(0, width, "down", False))
    if gate is not None:
        sl["gate"] = gate[0].slice(gate[1], width, "gate", True)
    fqn = common_prefix(s.fqn for s in sl.values())
    return FeedForwardFamily(fqn, -1, width, act, coupled=tuple(coupled), **sl), ""


def mlp_shaped(g: Graph, down: Projection, depth: int = 12) -> bool:
    """``down`` reads a projection from its own output width through a chain of ops each taking one activation
    (any op: the shape of an MLP whether or not a matcher follows what sits in between, so a miss is
    reported); a residual add or an op joining several activations ends the chain."""
    n = down.x
    for _ in range(depth):
        up = g.projection(n)
        if up is not None:
            return up.in_features == down.out_features and up.out_features == down.in_features
        if not isinstance(n, Node) or n.op != "call_function":
            return False
        data = n.args[:1] if op_name(n) in LAYOUT_OPS else n.all_input_nodes  # reshape_as(x, y): y is a shape
        acts = [a for a in data if isinstance(a, Node) and g.from_input(a) and
                isinstance(a.meta.get("val"), torch.Tensor) and a.meta["val"].is_floating_point()]
        if len(acts) != 1:
            return False  # a residual connection, attention, or a join: the walk left the MLP
        n = acts[0]
    return False
