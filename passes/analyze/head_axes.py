"""Which channels each head reads: a tensor of channel codes read along its head, position and feature axes.

``channels.channels`` labels every element of q / k / v with the channel of its projection it holds
(``NONE``: nothing, e.g. padding; ``foreign(c)``: a channel of another projection). A ``Layout`` names
the axes of one operand of an attention product: ``h`` (heads; None when heads are folded into axis 0,
``(batch * heads, seq, dim)``), ``s`` (positions) and ``d`` (features); every other axis (batch,
blocks) is a lead axis. ``read_heads`` checks that every position of a head reads the same channels
(positions holding nothing are skipped: padding) and returns, per head, the sorted channels of the
followed projection and the foreign part, which must be the same for every head (a part all heads
share, e.g. latent attention's rope key: left whole). ``merged`` labels the output of the attention
product the way the out projection reads it (heads merged head-major).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from passes.analyze.channels import NONE


@dataclass(frozen=True)
class Layout:
    """Axes of one attention operand: heads ``h`` (None: folded into axis 0), positions ``s``, features ``d``."""

    h: Optional[int]
    s: int
    d: int

    @classmethod
    def matmul(cls, ndim: int, transposed: bool = False) -> "Layout":
        """``(..., heads, seq, dim)`` (``transposed``: ``(..., heads, dim, seq)``, a k^T); 3-D: heads in axis 0."""
        s, d = (-1, -2) if transposed else (-2, -1)
        return cls(None if ndim == 3 else -3, s, d)


@dataclass(frozen=True)
class Heads:
    """Per head: the followed projection's channels (sorted) and the foreign codes (position order)."""

    channels: list[tuple[int, ...]]
    shared: tuple[int, ...]  # foreign codes every head reads alike ((): none)

    @property
    def unit(self) -> int:
        return len(self.channels[0])


def canonical(idx: torch.Tensor, layout: Layout) -> Optional[torch.Tensor]:
    """``idx`` as ``(lead, heads, seq, dim)``; None when the shape does not fit the layout."""
    n = idx.dim()
    if layout.h is None:
        if n != 3:
            return None
        t = idx.movedim((layout.s % n, layout.d % n), (1, 2))
        first = t[:, 0, 0]
        heads = max(1, len(torch.unique(first[first != NONE])))  # rows repeat per batch: (batch * heads)
        if t.shape[0] % heads:
            return None
        return t.reshape(-1, heads, *t.shape[1:])
    axes = [layout.h % n, layout.s % n, layout.d % n]
    if len(set(axes)) != 3:
        return None
    lead = [a for a in range(n) if a not in axes]
    t = idx.permute(*lead, *axes)
    return t.reshape(-1, *t.shape[-3:])


def read_heads(idx: torch.Tensor, layout: Layout) -> tuple[Optional[Heads], str]:
    """Per-head channels of ``idx`` under ``layout``, or None and why not."""
    t = canonical(idx, layout)
    if t is None:
        return None, f"a {idx.dim()}-D operand does not fit the attention layout {layout}"
    rows = t.transpose(0, 1).reshape(t.shape[1], -1, t.shape[-1])  # heads x positions x dim
    per, shared = [], None
    for h in range(rows.shape[0]):
        live = rows[h][(rows[h] != NONE).any(-1)]
        if not len(live):
            return None, f"head {h} reads no channel of the projection"
        if not (live == live[:1]).all():
            return None, "a head reads different channels at different positions"
        row = live[0]
        mine = [int(c) for c in row if c >= 0]
        other = tuple(int(c) for c in row if c < NONE)
        if len(set(mine)) != len(mine):
            return None, "a head reads a channel twice"
        if shared is not None and other != shared:
            return None, "heads read different channels of a second projection joined in: not a part every head shares"
        per.append(tuple(sorted(mine)))
        shared = other
    if len({len(c) for c in per}) != 1 or not per[0]:
        return None, "heads read different numbers of channels"
    return Heads(per, shared or ()), ""


def merged(shape: tuple, layout: Layout, heads: int, dim: int) -> torch.Tensor:
    """Channel of every element of an attention output when its heads are merged head-major
    (``head * dim + feature``): what the out projection must read."""
    n = len(shape)
    if layout.h is None:
        head = (torch.arange(shape[0]) % heads).reshape([shape[0]] + [1] * (n - 1))
    else:
        head = torch.arange(heads).reshape([heads if a == layout.h % n else 1 for a in range(n)])
    feat = torch.arange(dim).reshape([dim if a == layout.d % n else 1 for a in range(n)])
    return (head * dim + feat).expand(shape).contiguous()
