"""Feed-forward families: a projection whose input is ``act(up)`` or ``act(gate) * up``.

Only pointwise ops may sit between up (gate) and down; the activation is identified numerically
against ``ACTIVATIONS`` and the width in must equal the width out, so a plain ``Linear -> ReLU ->
Linear`` MLP with matching widths counts as one family, while a single ``Linear`` or a width-changing
head (pooler -> classifier) does not.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.fx import Node

from passes.analyze.activations import ACTIVATIONS
from passes.analyze.ops import LAYOUT_OPS, is_pointwise, op_name, shape_of
from passes.analyze.pieces import piece
from passes.analyze.plan import FeedForwardFamily, common_prefix
from passes.analyze.trace import Graph, Projection

def _pointwise_region(g: Graph, down: Projection):
    """Nodes between the projections feeding ``down`` and ``down`` itself (pointwise/reshape only)."""
    region, leaves, stack = set(), [], [down.x]
    while stack:
        n = stack.pop()
        if n in region or n in leaves:
            continue
        if piece(g, n) is not None:
            leaves.append(n)
        elif is_pointwise(n) or op_name(n) in ("view", "reshape", "_unsafe_view") and \
                (shape_of(n) or (None,))[-1] == (shape_of(n.args[0]) or (0,))[-1]:
            region.add(n)
            stack.extend(n.all_input_nodes)
        else:
            return None, None
    return sorted(region, key=g.order.get), sorted(leaves, key=g.order.get)


def _run(region: list[Node], env: dict) -> torch.Tensor:
    env = dict(env)
    look = lambda a: env[a] if isinstance(a, Node) else a  # noqa: E731
    for n in region:
        env[n] = n.target(*torch.fx.node.map_aggregate(n.args, look),
                          **torch.fx.node.map_aggregate(n.kwargs, look))
    return env[region[-1]] if region else env[next(iter(env))]


def _which_activation(fn: Callable, probes: list[torch.Tensor]) -> Optional[tuple[str, int]]:
    """``(key, gate index)`` such that ``fn(*probes) == act(gate) [* other]``."""
    with torch.no_grad():
        got = fn(*probes)
        for key, act in ACTIVATIONS.items():
            for gi in range(len(probes)):
                want = act(probes[gi]) * (probes[1 - gi] if len(probes) == 2 else 1)
                if got.shape == want.shape and torch.allclose(got.double(), want.double(), atol=2e-5):
                    return key, gi
    return None


_NORMS = frozenset({"layer_norm", "native_layer_norm", "group_norm", "rms_norm", "mean", "getitem"})


def mlp_like(g: Graph, down: Projection, depth: int = 8) -> bool:
    """``down`` reads (through elementwise, layout or norm ops) a projection from its own output width:
    the shape of an MLP, whether or not ``match_ffn`` can make a family of it. A piece of a wider projection
    (Moshi's ``fc1(x).view(.., 2, -1)[..., 0, :]``) counts when an activation sits on the way (a bare
    ``c * x`` of two pieces is a gate, as in LFM's short convolution, not an MLP)."""
    n, activated = down.x, False
    for _ in range(depth):
        up = g.projection(n)
        if up is not None:
            return up.in_features == down.out_features and up.out_features == down.in_features
        part = piece(g, n)
        if part is not None and activated:
            return part[0].in_features == down.out_features and (shape_of(n) or (0,))[-1] == down.in_features
        if not isinstance(n, Node) or n.op != "call_function" or not n.args or \
                not (is_pointwise(n) or op_name(n) in LAYOUT_OPS or op_name(n) in _NORMS):
            return False
        if op_name(n) == "add" and sum(isinstance(a, Node) and shape_of(a) == shape_of(n) for a in n.args) == 2:
            return False  # a residual connection: the walk left the block
        activated = activated or is_pointwise(n) and op_name(n) not in ("mul", "add", "sub", "div", "to", "type_as")
        n = next((a for a in n.args if isinstance(a, Node) and g.param_of(a) is None), None)
    return False


def match_ffn(g: Graph, down: Projection) -> tuple[Optional[FeedForwardFamily], str]:
    """The feed-forward family ending in ``down``, or None and why not."""
    region, leaves = _pointwise_region(g, down)
    if not region or len(leaves) not in (1, 2):
        return None, "not up -> elementwise activation -> down (a norm or other op sits in between)"
    parts = [piece(g, n) for n in leaves]
    projs = [p for p, _ in parts]
    width = down.in_features
    if any(shape_of(n)[-1] != width or p.in_features != down.out_features for n, p in zip(leaves, projs)):
        return None, f"widths do not match ({[p.weight for p in projs]} -> {down.weight})"
    gen = torch.Generator().manual_seed(0)
    probes = [torch.randn(shape_of(n), generator=gen, dtype=torch.float64) * 3 for n in leaves]
    found = _which_activation(lambda *xs: _run(region, dict(zip(leaves, xs))), probes)
    if found is None:
        return None, (f"the activation between {projs[0].weight} and {down.weight} is none of "
                      f"{sorted(ACTIVATIONS)} (add it to passes.analyze.activations.ACTIVATIONS)")
    key, gi = found
    (up, u0), (gate, g0) = (parts[1 - gi], parts[gi]) if len(parts) == 2 else (parts[0], (None, 0))
    sl = dict(up=up.slice(u0, width, "up", True), down=down.slice(0, width, "down", False))
    if gate is not None:
        sl["gate"] = gate.slice(g0, width, "gate", True)
    return FeedForwardFamily(common_prefix(s.fqn for s in sl.values()), -1, width, key, **sl), ""
