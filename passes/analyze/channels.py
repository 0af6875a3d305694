"""Follow projection channels through a DAG of layout and elementwise ops, and record node values.

``channels(g, node, unit)`` answers "which output channel of which projection does each element of
``node`` hold?" by replaying the ops between them on a tensor of channel indices. Unlike
``trace.index_through`` (one path), it follows every operand: ``cat`` / ``stack`` of pieces of one
projection (partial rotary: ``cat(rotate(q[..., :r]), q[..., r:])``), and elementwise ops with
several operands from the projection (rotary: ``q * cos + rotate_half(q) * sin``), which must agree
on the ``unit``-wide block (the head) of every element. Index arguments of gathers (``index``,
``index_select``) are read from the recorded values of one run of the traced program
(``NodeValues``).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch.fx import Node

from passes.analyze.trace import (
    LAYOUT_OPS,
    Graph,
    Projection,
    is_pointwise,
    op_name,
    shape_of,
)

NORM_OPS = frozenset({"layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm"})
GATHER_OPS = frozenset({"index", "index_select", "gather", "take_along_dim", "roll", "flip", "cat", "stack",
                        "concat", "hstack", "vstack"})


class NodeValues:
    """Every node's value in one run of the exported program on the traced inputs (computed lazily)."""

    def __init__(self, ep: torch.export.ExportedProgram, args: tuple, kwargs: dict):
        self.ep, self.args, self.kwargs, self._vals = ep, args, kwargs, None

    def __getitem__(self, node: Node) -> Any:
        if self._vals is None:
            self._vals = self._run()
        return self._vals[node]

    def _run(self) -> dict:
        flat = self.ep._graph_module_flat_inputs(self.args, self.kwargs)
        vals: dict = {}

        class _Recorder(torch.fx.Interpreter):
            def run_node(self, n):  # a copy: later in-place ops of the program must not change it
                out = super().run_node(n)
                vals[n] = out.clone() if isinstance(out, torch.Tensor) else out
                return out
        with torch.no_grad():
            _Recorder(self.ep.graph_module).run(*flat)
        return vals


def _replay(node: Node, subs: dict, values: Optional[NodeValues]) -> Optional[torch.Tensor]:
    """Re-run a layout/gather ``node`` with channel tensors for the operands in ``subs``."""
    def arg(a):
        if isinstance(a, Node):
            if a in subs:
                return subs[a]
            return values[a] if values is not None else _missing()
        if isinstance(a, (list, tuple)):
            return type(a)(arg(x) for x in a)
        return a
    name = op_name(node)
    fn = torch.ops.aten.reshape.default if name in ("view", "_unsafe_view") else node.target
    try:
        return fn(*arg(node.args), **{k: arg(v) for k, v in node.kwargs.items()})
    except (RuntimeError, TypeError, IndexError, KeyError, _Missing):
        return None


class _Missing(Exception):
    pass


def _missing():
    raise _Missing


def _operands(node: Node) -> list[Node]:
    """Tensor operands that may carry channels: ``args[0]`` (a list for cat/stack)."""
    first = node.args[0] if node.args else None
    if isinstance(first, (list, tuple)):
        return [a for a in first if isinstance(a, Node)]
    return [first] if isinstance(first, Node) else []


def channels(g: Graph, node: Any, unit: int, values: Optional[NodeValues] = None, depth: int = 80,
             memo: Optional[dict] = None) -> Optional[tuple[Projection, torch.Tensor, tuple]]:
    """``(projection, channel index per element of node, sides)``, or None when it cannot be followed.

    ``sides``: ``(op, operand, channel index at op)`` for every operand of an elementwise or norm op on the
    way that does not carry the projection's channels (rotary cos / sin, a per-head bias or scale, a norm's
    statistics): ``side_tensors.path_sides`` decides whether they are shared, per-head or mixing heads."""
    memo = {} if memo is None else memo
    if not isinstance(node, Node) or depth <= 0:
        return None
    if node in memo:
        return memo[node]
    memo[node] = None  # cycles cannot happen in a DAG; this also stops re-entry while computing
    proj = g.projection(node)
    if proj is not None:
        shp = shape_of(node)
        memo[node] = (proj, torch.arange(shp[-1]).expand(shp).contiguous(), ())
        return memo[node]
    name = op_name(node)
    found = None
    if name in LAYOUT_OPS or name in GATHER_OPS:
        ops = _operands(node)
        subs = [channels(g, a, unit, values, depth - 1, memo) for a in ops]
        if ops and all(s is not None for s in subs) and len({id(s[0].node) for s in subs}) == 1:
            idx = _replay(node, {a: s[1] for a, s in zip(ops, subs)}, values)
            multi = isinstance(idx, (list, tuple)) and shape_of(node) is None  # split / chunk / unbind
            ok = multi or isinstance(idx, torch.Tensor) and tuple(idx.shape) == shape_of(node)
            found = (subs[0][0], idx, _merge(subs)) if ok else None
    elif name in NORM_OPS and (shape_of(node.args[0]) or (0,))[-1] == unit and \
            isinstance(node.args[1], (list, tuple)) and list(node.args[1]) == [unit]:  # within one head
        sub = channels(g, node.args[0], unit, values, depth - 1, memo)
        if sub is not None:
            idx = sub[1] if shape_of(node) is not None else (sub[1], None, None)
            sides = tuple((node, a, sub[1]) for a in node.args[2:4] if isinstance(a, Node))
            found = (sub[0], idx, sub[2] + sides)
    elif is_pointwise(node):
        cands = [a for a in node.args if isinstance(a, Node) and shape_of(a) == shape_of(node)]
        pairs = [(a, channels(g, a, unit, values, depth - 1, memo)) for a in cands]
        subs = [sub for _, sub in pairs if sub is not None]
        if subs and all(s[0].node is subs[0][0].node and torch.equal(s[1] // unit, subs[0][1] // unit)
                        for s in subs[1:]):
            carrying = {a for a, sub in pairs if sub is not None}
            sides = tuple((node, a, subs[0][1]) for a in node.args if isinstance(a, Node) and a not in carrying)
            found = (subs[0][0], subs[0][1], _merge(subs) + sides)
    memo[node] = found
    return found


def _merge(subs) -> tuple:
    out, seen = [], set()
    for sub in subs:
        for side in sub[2]:
            if (side[0], side[1]) not in seen:
                seen.add((side[0], side[1]))
                out.append(side)
    return tuple(out)
