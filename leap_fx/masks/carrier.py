"""The one mask carrier: a ``torch.nn.utils.parametrize`` parametrization ``W -> W * M``.

``GranuleMask`` builds the full-size mask ``M`` of one weight tensor from the granule grids of its
owners (``owner.py``). ``M`` is 1 except where *segments* say otherwise:

- ``BlockSegment(owner, block)``: the whole tensor, the owner's grid expanded by ``block``
  (stored layout: ``grid.shape == (rows / block[0], cols / block[1])``);
- ``TiedSegment(owner, axis, start, size, unit, group, carries_value)``: indices ``start:start+size``
  along ``axis`` follow a shared owner, granule-major, ``unit`` indices per granule (a head's
  ``head_dim`` rows of q, its columns of out; a neuron's row of up, column of down). ``group > 1``
  (grouped-query attention): the slice has ``granules / group`` granules, each the max over the
  ``group`` owner granules that read it. ``carries_value=False``: a real-valued owner only gates
  this slice by its support (see ``owner.py``). ``index`` (a Plan slice of interleaved heads, e.g.
  fused qkv stored ``[heads, 3, head_dim]``): the slice's explicit positions, granule-major, instead
  of the run ``start:start+size``. ``expert = e`` (a Plan slice of one expert of a fused
  ``[experts, ...]`` tensor): the segment masks ``W[e]`` only; the segments of every expert of one
  tensor are composed at once.

In training mode the owners' ``mask()`` is used (their autograd); in eval mode (and when folding)
their ``deterministic_mask()``: so evaluation and ``fold`` see the same, exact, model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from leap_fx.masks.owner import MaskOwner


@dataclass(frozen=True)
class BlockSegment:
    owner: int                # index into GranuleMask.owners
    block: tuple[int, int]


@dataclass(frozen=True)
class TiedSegment:
    owner: int
    axis: int
    start: int
    size: int
    unit: int
    group: int = 1
    carries_value: bool = True
    index: Optional[tuple[int, ...]] = None
    expert: Optional[int] = None


Segment = Union[BlockSegment, TiedSegment]


def expand_block(grid: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    if tuple(block) == (1, 1):
        return grid
    return grid.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)


class GranuleMask(nn.Module):
    """Parametrization ``W -> W * M``; see the module docstring. ``GranuleMask(owner, block)`` masks
    the whole tensor with one owner; ``add_tied`` adds a slice of a Plan family."""

    def __init__(self, owner: Optional[MaskOwner] = None, block: tuple[int, int] = (1, 1)):
        super().__init__()
        self.owners = nn.ModuleList()
        self.segments: list[Segment] = []
        if owner is not None:
            self.add_block(owner, block)

    def _index(self, owner: MaskOwner) -> int:
        for i, o in enumerate(self.owners):
            if o is owner:
                return i
        self.owners.append(owner)
        return len(self.owners) - 1

    def add_block(self, owner: MaskOwner, block: tuple[int, int] = (1, 1)) -> "GranuleMask":
        block = (int(block[0]), int(block[1]))
        owner.count += owner.granules * block[0] * block[1]
        self.segments.append(BlockSegment(self._index(owner), block))
        return self

    def add_tied(self, owner: MaskOwner, shape: Sequence[int], axis: int, start: int, size: int,
                 unit: int, group: int = 1, carries_value: bool = True,
                 index: Optional[Sequence[int]] = None, expert: Optional[int] = None) -> "GranuleMask":
        """Indices ``start:start+size`` (or ``index``) along ``axis`` (granule-major, ``unit`` each)
        follow ``owner`` (in ``W[expert]`` only, when given)."""
        if size != (owner.granules // group) * unit:
            raise ValueError(f"slice size {size} != {owner.granules // group} granules x unit {unit}")
        if index is not None and (len(index) != size or len(set(index)) != size or max(index) >= shape[axis]):
            raise ValueError(f"index of {len(index)} positions does not fit a slice of {size} on axis {axis} "
                             f"of a tensor {tuple(shape)}")
        if expert is not None and not (axis > 0 and 0 <= expert < shape[0]):
            raise ValueError(f"expert {expert} on axis {axis} does not fit a fused tensor {tuple(shape)}")
        per = int(torch.Size(shape).numel()) // shape[axis] // (shape[0] if expert is not None else 1)
        owner.count += size * per
        self.segments.append(TiedSegment(self._index(owner), axis, start, size, unit, group, carries_value,
                                         None if index is None else tuple(int(i) for i in index), expert))
        return self

    # -- the mask -----------------------------------------------------------------------------
    def grids(self, how: str) -> list[torch.Tensor]:
        """Every owner's grid: ``"train"`` (``mask()``), ``"eval"`` (deterministic) or ``"hard"`` (0/1)."""
        if how == "train":
            return [o.mask() for o in self.owners]
        if how == "hard":
            return [o.hard_mask() for o in self.owners]
        return [o.deterministic_mask() for o in self.owners]

    def _experts(self, segs: list, grids, shape) -> torch.Tensor:
        """One factor for the segments of several experts sharing a geometry: ``[experts, ...]``, 1 for
        experts no segment names."""
        rows = {seg.expert: self._segment(seg, grids[seg.owner], shape[1:], seg.axis - 1).reshape(-1)
                for seg in segs}
        ref = next(iter(rows.values()))
        part = torch.stack([rows[e] if e in rows else torch.ones_like(ref) for e in range(shape[0])])
        view = [shape[0]] + [1] * (len(shape) - 1)
        view[segs[0].axis] = segs[0].size
        return part.view(view)

    def _segment(self, seg: Segment, grid: torch.Tensor, shape, axis: Optional[int] = None) -> torch.Tensor:
        if isinstance(seg, BlockSegment):
            part = expand_block(grid, seg.block)
            if tuple(part.shape) != tuple(shape):
                raise ValueError(f"block grid {tuple(grid.shape)} x block {seg.block} != weight shape "
                                 f"{tuple(shape)}: give scores of shape (rows/block, cols/block)")
            return part
        if not seg.carries_value and not self.owners[seg.owner].binary:
            grid = (grid != 0).to(grid.dtype)
        vec = grid.reshape(-1)
        if seg.group > 1:
            vec = vec.view(-1, seg.group).amax(1)
        vec = vec.repeat_interleave(seg.unit) if seg.unit > 1 else vec
        view = [1] * len(shape)
        view[seg.axis if axis is None else axis] = seg.size
        return vec.view(view)

    def compose(self, grids: Sequence[torch.Tensor], shape: Sequence[int], dtype=None) -> torch.Tensor:
        """Full-size mask for a weight of ``shape`` from the owners' ``grids`` (differentiable)."""
        full: Optional[torch.Tensor] = None
        for seg, part in self._parts(grids, shape):
            if isinstance(seg, BlockSegment):
                full = part if full is None else full * part
                continue
            if full is None:
                full = torch.ones(tuple(shape), dtype=part.dtype, device=part.device)
            if seg.index is not None:  # interleaved positions: scale them in place (differentiable)
                idx = torch.as_tensor(seg.index, device=full.device)
                full = full.index_copy(seg.axis, idx, full.index_select(seg.axis, idx) * part)
                continue
            axis, start, size = seg.axis, seg.start, seg.size
            mid = full.narrow(axis, start, size) * part
            full = torch.cat([full.narrow(axis, 0, start), mid,
                              full.narrow(axis, start + size, shape[axis] - start - size)], axis)
        if full is None:
            raise ValueError("GranuleMask has no segments: pass an owner or call add_block/add_tied")
        full = full.expand(tuple(shape))
        return full if dtype is None else full.to(dtype)

    def _parts(self, grids, shape):
        """``(segment, factor)`` per segment; per-expert segments of one geometry share one factor."""
        together: dict[tuple, list] = {}
        for seg in self.segments:
            if isinstance(seg, TiedSegment) and seg.expert is not None:
                together.setdefault((seg.axis, seg.start, seg.size, seg.index), []).append(seg)
            else:
                yield seg, self._segment(seg, grids[seg.owner], shape)
        for segs in together.values():
            yield segs[0], self._experts(segs, grids, shape)

    def mask(self, shape: Sequence[int], hard: bool = False, dtype=None) -> torch.Tensor:
        """Full-size mask (``hard=True``: 0/1, no autograd)."""
        how = "hard" if hard else ("train" if self.training else "eval")
        return self.compose(self.grids(how), shape, dtype)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask(weight.shape, dtype=weight.dtype)

    def extra_repr(self) -> str:
        def show(s):
            fields = (s.block,) if isinstance(s, BlockSegment) else (s.axis, s.start, s.size, s.unit, s.group)
            return f"{type(s).__name__[:-7].lower()}{fields}@{self.owners[s.owner].key or s.owner}"
        return ", ".join(show(s) for s in self.segments)


def granule_sums(carriers: Sequence[tuple[GranuleMask, torch.Tensor]],
                 value: Callable[[torch.Tensor], torch.Tensor] = torch.abs) -> dict[int, torch.Tensor]:
    """Per owner (by ``id``), ``sum value(W)`` over each granule's elements in every member weight.

    The adjoint of ``compose``: for every geometry (block, row, tied slices, GQA groups) it is the
    gradient of ``sum(compose(ones) * value(W))`` with respect to the ones. ``carriers``: pairs of
    (carrier, its unmasked weight)."""
    ones: dict[int, torch.Tensor] = {}
    for carrier, _ in carriers:
        for o in carrier.owners:
            if id(o) not in ones:
                ref = next(o.parameters(), None)
                ones[id(o)] = torch.ones(o.grid_shape, device=None if ref is None else ref.device,
                                         requires_grad=True)
    with torch.enable_grad():
        total = sum((carrier.compose([ones[id(o)] for o in carrier.owners], w.shape) * value(w.detach())).sum()
                    for carrier, w in carriers)
        grads = torch.autograd.grad(total, list(ones.values()), allow_unused=True)
    return {k: (torch.zeros_like(v) if g is None else g) for (k, v), g in zip(ones.items(), grads)}
