"""One piece of a projection's output along its last axis, as the feed-forward matchers read up and gate.

A piece is the projection itself (first channel 0), one output of a ``split`` / ``chunk`` along the last
axis (a fused gate|up weight: ``gate, up = proj(x).chunk(2, -1)``), or one slot of a view into
``[..., k, width]`` picked by ``select`` on the slot axis (Moshi's gated MLP:
``fc1(x).view(b, t, 2, -1)[..., 0, :]``): slot ``i`` holds channels ``[i * width, (i + 1) * width)``.
"""
from __future__ import annotations

from typing import Optional

from torch.fx import Node

from passes.analyze.ops import op_name, shape_of
from passes.analyze.trace import Graph, Projection

SPLITS = ("split", "split_with_sizes", "chunk")
VIEWS = ("view", "reshape", "_unsafe_view", "unflatten")


def _split_piece(g: Graph, n: Node) -> Optional[tuple[Projection, int]]:
    src = n.args[0]
    if not isinstance(src, Node) or op_name(src) not in SPLITS or g.projection(src.args[0]) is None:
        return None
    dim = src.args[2] if len(src.args) > 2 else src.kwargs.get("dim", 0)
    pieces = src.meta.get("val")
    if dim not in (-1, len(shape_of(src.args[0])) - 1) or not isinstance(pieces, (list, tuple)):
        return None
    return g.projection(src.args[0]), sum(int(p.shape[-1]) for p in pieces[:n.args[1]])


def _slot_piece(g: Graph, n: Node) -> Optional[tuple[Projection, int]]:
    src, dim, i = (list(n.args) + [None, None])[:3]
    if not isinstance(src, Node) or op_name(src) not in VIEWS or not isinstance(src.args[0], Node):
        return None
    proj, shp, base = g.projection(src.args[0]), shape_of(src), shape_of(src.args[0])
    if proj is None or not shp or not base or len(shp) < 2 or not isinstance(dim, int) or not isinstance(i, int):
        return None
    rank = len(shp)
    if dim % rank != rank - 2 or tuple(shp[:-2]) != tuple(base[:-1]) or shp[-2] * shp[-1] != base[-1]:
        return None
    return proj, (i % shp[-2]) * shp[-1]


def piece(g: Graph, n) -> Optional[tuple[Projection, int]]:
    """``(projection, first channel)`` when ``n`` is a projection or one piece of one (see the module doc)."""
    if g.projection(n) is not None:
        return g.projection(n), 0
    if not isinstance(n, Node):
        return None
    if op_name(n) == "getitem":
        return _split_piece(g, n)
    if op_name(n) == "select":
        return _slot_piece(g, n)
    return None
