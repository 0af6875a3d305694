"""Reading and indexing the tensors a Plan slice names (shared by every strip stage)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from passes.analyze.plan import Slice


def tensor(model: nn.Module, full_name: str) -> torch.Tensor:
    """A parameter (or buffer) by its full dotted name."""
    fqn, _, name = full_name.rpartition(".")
    return getattr(model.get_submodule(fqn) if fqn else model, name)


def matrix(model: nn.Module, sl: Slice) -> tuple[torch.Tensor, int]:
    """``(matrix, axis)`` the slice indexes: the parameter and ``sl.axis``, or ``W[e]`` and ``sl.axis - 1`` for
    expert ``e`` of a fused ``[experts, ...]`` parameter."""
    t = tensor(model, sl.weight_name)
    return (t, sl.axis) if sl.expert is None else (t[sl.expert], sl.axis - 1)


def bias_name(sl: Slice, model: nn.Module) -> Optional[str]:
    """Full name of the bias sliced with ``sl`` (``Slice.bias`` is relative to ``sl.fqn``)."""
    if sl.bias is None:
        return None
    for cand in (f"{sl.fqn}.{sl.bias}" if sl.fqn else sl.bias, sl.bias):
        try:
            if isinstance(tensor(model, cand), torch.Tensor):
                return cand
        except AttributeError:
            continue
    return None


def indices(sl: Slice, granules: list[int], unit: int) -> list[int]:
    """Absolute indices along ``sl.axis`` of the given granules (``unit`` positions each, granule-major)."""
    pos = sl.positions()
    return [pos[g * unit + u] for g in granules for u in range(unit)]


def part(t: torch.Tensor, axis: int, idx: list[int]) -> torch.Tensor:
    """``t`` restricted to ``idx`` along ``axis`` (detached)."""
    return t.detach().index_select(axis, torch.as_tensor(idx, dtype=torch.long, device=t.device))


def is_zero(t: torch.Tensor, atol: float) -> bool:
    """Every entry within ``atol`` of 0 (an empty tensor is zero)."""
    return bool(t.abs().max() <= atol) if t.numel() else True


def through(sl: Slice, model: nn.Module, granule: int, unit: int, vec: torch.Tensor) -> torch.Tensor:
    """``W[:, cols] @ vec`` for an input-axis slice (Linear ``[out, in]`` or Conv1D ``[in, out]``)."""
    w = part(tensor(model, sl.weight_name), sl.axis, indices(sl, [granule], unit))
    return torch.tensordot(vec.to(w.dtype), w, dims=([0], [sl.axis]))


def bias_vector(model: nn.Module, sl: Slice) -> Optional[torch.Tensor]:
    """The part of ``sl``'s bias that follows the slice (of ``B[e]`` for one expert), or None."""
    name = bias_name(sl, model)
    if name is None:
        return None
    b = tensor(model, name)
    return part(b if sl.expert is None else b[sl.expert], 0, sl.positions()).reshape(-1)
