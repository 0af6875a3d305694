"""Folding: the constant a removable granule leaves goes into the next bias; emptied families keep
one zeroed placeholder granule (onnxruntime rejects zero-size tensors).

These edit *values* only; ``surgery.py`` removes shapes.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from passes.analyze.plan import Slice
from passes.strip.cut import Cut
from passes.strip.tensors import bias_name, indices, tensor

_ADDS_OUTPUT_BIAS = ("Conv1D",)  # besides nn.Linear: modules whose forward is x @ W + bias


def output_bias(model: nn.Module, sl: Slice, create: bool) -> Optional[torch.Tensor]:
    """The bias added after the input-axis slice ``sl`` (out-proj / FFN-down); maybe created.

    Only ``nn.Linear`` (which may get a new zero bias) and HF ``Conv1D`` are trusted to add
    ``self.bias`` to their output; otherwise None, and granules with a nonzero constant stay."""
    mod = model.get_submodule(sl.fqn)
    if not (isinstance(mod, nn.Linear) or type(mod).__name__ in _ADDS_OUTPUT_BIAS):
        return None
    b = getattr(mod, "bias", None)
    if isinstance(b, torch.Tensor):
        return b
    if create and isinstance(mod, nn.Linear) and sl.param == "weight" and sl.axis == 1:
        w = mod.weight
        mod.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device),
                                requires_grad=w.requires_grad)
        return mod.bias
    return None


def can_fold(model: nn.Module, sl: Slice) -> bool:
    mod = model.get_submodule(sl.fqn)
    return output_bias(model, sl, create=False) is not None or \
        (isinstance(mod, nn.Linear) and sl.param == "weight" and sl.axis == 1)


@torch.no_grad()
def apply_folds(model: nn.Module, cut: Cut, into: Slice) -> None:
    """Add every folded constant to the bias after ``into`` (created on nn.Linear if absent)."""
    if not cut.folds:
        return
    b = output_bias(model, into, create=True)
    if b is None:
        raise ValueError(f"{into.weight_name}: cannot fold constants, no bias to fold into")
    for _, const in cut.folds:
        b.add_(const.to(b.dtype))


@torch.no_grad()
def zero_placeholder(model: nn.Module, fam, cut: Cut, handler) -> None:
    """Keep one granule of an emptied family so no tensor has width 0; zero it so it adds 0."""
    if len(set(cut.remove)) != cut.granules:
        return
    per_role = handler.placeholder(fam, cut)
    for sl in fam.slices:
        _, unit = handler.removed_by_role(fam, cut)[sl.role]
        idx = torch.as_tensor(indices(sl, per_role[sl.role], unit))
        tensor(model, sl.weight_name).index_fill_(sl.axis, idx, 0.0)
        bname = bias_name(sl, model)
        if bname is not None:
            tensor(model, bname).index_fill_(0, idx, 0.0)
