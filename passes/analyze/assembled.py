"""Buffers filled in parts: ``buf = x.new_empty(shape)`` then ``buf[..., :a].copy_(p)``, ``buf[..., a:].copy_(r)``.

Latent attention (DeepSeek-V2/V3 in transformers 5) builds its key this way: per head, ``k_nope`` from
``kv_b_proj`` in the first ``qk_nope_head_dim`` features and the one rope key every head shares in the
rest. The traced graph keeps the in-place writes (``copy_`` into ``slice`` views of the buffer), so the
buffer's contents are read like a ``cat`` of the written parts: ``writes`` finds each part and the flat
positions it fills (the view chain replayed on ``arange``), ``fill`` places the parts' channel codes.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.fx import Node

from passes.analyze.ops import LAYOUT_OPS, op_name, shape_of

FILL_OPS = frozenset({"new_empty", "empty", "new_zeros", "zeros", "new_full", "full", "new_ones", "ones",
                      "empty_like", "zeros_like", "full_like", "ones_like"})
WRITE_OPS = frozenset({"copy_"})


def _replay_view(node: Node, prev: Node, pos: torch.Tensor) -> Optional[torch.Tensor]:
    args = [pos if a is prev else a for a in node.args]
    if any(isinstance(a, Node) for a in args):
        return None
    fn = torch.ops.aten.reshape.default if op_name(node) in ("view", "_unsafe_view") else node.target
    try:
        return fn(*args, **node.kwargs)
    except (RuntimeError, TypeError, IndexError):
        return None


def writes(buf: Node, values=None) -> list[tuple[Node, torch.Tensor]]:
    """``[(source, flat positions of buf it fills)]`` for every ``copy_`` into a view of ``buf`` (empty when
    a view cannot be replayed, or nothing is written)."""
    shape = shape_of(buf)
    if shape is None:
        return []
    out, stack = [], [(buf, torch.arange(int(torch.tensor(shape).prod())).view(shape))]
    while stack:
        node, pos = stack.pop()
        for user in node.users:
            if op_name(user) in WRITE_OPS and user.args[0] is node and isinstance(user.args[1], Node):
                out.append((user.args[1], pos))
            elif op_name(user) in LAYOUT_OPS and user.args[0] is node:
                nxt = _replay_view(user, node, pos)
                if nxt is None or isinstance(nxt, (list, tuple)):
                    return []
                stack.append((user, nxt))
    return out


def fill(buf: Node, parts: list[tuple[Node, torch.Tensor]], codes: dict, empty: int) -> Optional[torch.Tensor]:
    """The buffer's channel codes: ``empty`` everywhere, each part's codes (broadcast to its view) at its
    positions."""
    out = torch.full(shape_of(buf), empty, dtype=torch.long)
    flat = out.view(-1)
    for src, pos in parts:
        try:
            flat[pos.reshape(-1)] = codes[src].expand(pos.shape).reshape(-1)
        except RuntimeError:
            return None
    return out
