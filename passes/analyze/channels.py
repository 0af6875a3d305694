"""Follow projection channels through a DAG of layout and elementwise ops, and record node values.

``channels(g, node, unit)`` answers "which output channel of which projection does each element of
``node`` hold?" by replaying the ops between them on a tensor of channel indices. Unlike
``trace.index_through`` (one path), it follows every operand: ``cat`` / ``stack`` of pieces of one
projection (partial rotary: ``cat(rotate(q[..., :r]), q[..., r:])``), and elementwise ops with
several operands from the projection (rotary: ``q * cos + rotate_half(q) * sin``), which must agree
on the ``unit``-wide block (the head) of every element. Index arguments of gathers (``index``,
``index_select``) are read from the recorded values of one run of the traced program
(``NodeValues``).

Codes: an element holds channel ``c >= 0`` of the projection, ``NONE`` (-1: padding, an unwritten
element), or ``foreign(c)`` (<= -2): channel ``c`` of *another* projection whose pieces were joined
in (latent attention's key is ``k_nope`` of ``kv_b_proj`` per head, joined with one rope key from
``kv_a_proj_with_mqa`` that every head shares). The projection with the most channels is the one
followed; each other one is a ``Foreign`` side. Pieces of one weight called twice (LongT5's side
keys) are the same projection. A buffer made empty and filled in parts (``new_empty`` then
``copy_`` into slices of it) is read like a ``cat`` of its parts (``assembled.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch.fx import Node

from passes.analyze.assembled import FILL_OPS, fill, writes
from passes.analyze.ops import LAYOUT_OPS, is_pointwise, op_name, shape_of
from passes.analyze.trace import Graph, Projection

NORM_OPS = frozenset({"layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm"})
# batch norm in eval mode over (N, C): a per-channel affine map, channels stay where they are
BATCH_NORM_OPS = frozenset({"batch_norm", "_native_batch_norm_legit_no_training"})
GATHER_OPS = frozenset({"index", "index_select", "gather", "take_along_dim", "roll", "flip", "cat", "stack",
                        "concat", "hstack", "vstack"})
PAD_OPS = frozenset({"constant_pad_nd", "pad"})  # replayed with NONE as the fill value
NONE = -1


def foreign(idx: torch.Tensor) -> torch.Tensor:
    """The code of another projection's channels (``<= -2``; ``foreign(foreign(c)) == c``)."""
    return -2 - idx


@dataclass(frozen=True)
class Foreign:
    """Side marker: ``operand`` joined into the tensor carries channels of ``proj``, another projection."""

    proj: Projection


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
    """Re-run a layout/gather/pad ``node`` with channel tensors for the operands in ``subs``."""
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
        args, kwargs = arg(node.args), {k: arg(v) for k, v in node.kwargs.items()}
        if name in PAD_OPS:  # padded positions hold no channel
            if name == "pad" and len(args) > 2 and args[2] != "constant":
                return None
            args, kwargs = (args[0], args[1]), {"value": NONE}
        return fn(*args, **kwargs)
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
    statistics, a batch norm's per-channel tensors): ``side_tensors.path_sides`` decides whether they are
    shared, per-head or mixing heads."""
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
    follow = lambda a: channels(g, a, unit, values, depth - 1, memo)  # noqa: E731
    if name in LAYOUT_OPS or name in GATHER_OPS or name in PAD_OPS:
        ops = _operands(node)
        subs = [follow(a) for a in ops]
        if ops and all(s is not None for s in subs):
            found = _joined(node, ops, subs, lambda codes: _replay(node, codes, values))
    elif name in FILL_OPS:
        parts = writes(node, values)  # (source, positions it fills): a buffer filled in parts
        subs = [follow(src) for src, _ in parts]
        if parts and all(s is not None for s in subs):
            found = _joined(node, [src for src, _ in parts], subs, lambda codes: fill(node, parts, codes, NONE))
    elif name in NORM_OPS and (shape_of(node.args[0]) or (0,))[-1] == unit and \
            isinstance(node.args[1], (list, tuple)) and list(node.args[1]) == [unit]:  # within one head
        sub = channels(g, node.args[0], unit, values, depth - 1, memo)
        if sub is not None:
            idx = sub[1] if shape_of(node) is not None else (sub[1], None, None)
            sides = tuple((node, a, sub[1]) for a in node.args[2:4] if isinstance(a, Node))
            found = (sub[0], idx, sub[2] + sides)
    elif name in BATCH_NORM_OPS and channel_affine(node):
        sub = follow(node.args[0])
        if sub is not None:  # its weight, bias and running statistics are sides, indexed by channel
            idx = sub[1] if shape_of(node) is not None else (sub[1], None, None)
            found = (sub[0], idx, sub[2] + tuple((node, a, sub[1]) for a in node.args[1:5] if isinstance(a, Node)))
    elif is_pointwise(node):
        cands = [a for a in node.args if isinstance(a, Node) and shape_of(a) == shape_of(node)]
        pairs = [(a, channels(g, a, unit, values, depth - 1, memo)) for a in cands]
        subs = [sub for _, sub in pairs if sub is not None]
        if subs and all(s[0].weight == subs[0][0].weight and torch.equal(s[1] // unit, subs[0][1] // unit)
                        for s in subs[1:]):
            carrying = {a for a, sub in pairs if sub is not None}
            sides = tuple((node, a, subs[0][1]) for a in node.args if isinstance(a, Node) and a not in carrying)
            found = (subs[0][0], subs[0][1], _merge(subs) + sides)
    memo[node] = found
    return found


def channel_affine(node: Node) -> bool:
    """A batch norm in eval mode over ``(N, C)`` (channels on the last axis, LeViT's ``Linear -> BatchNorm1d``)."""
    training = node.args[5] if op_name(node) == "batch_norm" and len(node.args) > 5 else False
    return training is False and len(shape_of(node.args[0]) or ()) == 2


def _joined(node: Node, ops: list, subs: list, replay) -> Optional[tuple]:
    """Pieces joined by ``node`` (cat, a layout op, a filled buffer): the projection with the most channels is
    followed, the others are coded ``foreign`` and recorded as ``Foreign`` sides; ``replay(codes)`` joins."""
    def count(p):
        idx = [s[1] for s in subs if s[0].weight == p.weight and isinstance(s[1], torch.Tensor)]
        return len({int(c) for t in idx for c in t[t >= 0].flatten().tolist()})
    one = len({s[0].weight for s in subs}) == 1
    main = subs[0][0] if one else max((s[0] for s in subs), key=count)
    mine = [s[0].weight == main.weight for s in subs]
    idx = replay({a: s[1] if m else torch.where(s[1] >= 0, foreign(s[1]), NONE) for a, s, m in zip(ops, subs, mine)})
    multi = isinstance(idx, (list, tuple)) and shape_of(node) is None  # split / chunk / unbind
    if not (multi or isinstance(idx, torch.Tensor) and tuple(idx.shape) == shape_of(node)):
        return None
    others = tuple((node, a, Foreign(s[0])) for a, s, m in zip(ops, subs, mine) if not m)
    return main, idx, _merge([s for s, m in zip(subs, mine) if m]) + others


def _merge(subs) -> tuple:
    out, seen = [], set()
    for sub in subs:
        for side in sub[2]:
            if (side[0], side[1]) not in seen:
                seen.add((side[0], side[1]))
                out.append(side)
    return tuple(out)

