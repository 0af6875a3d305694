"""Example inputs for export: names, dynamic axes, and fresh inputs at other (batch, seq) shapes.

Default dynamic axes: axis 0 is ``batch`` for every input; axis 1 is ``sequence`` for inputs of
rank 2 or 3 (ids, masks, ``[B, S, E]`` embeddings); rank-4 inputs (images) vary only in batch.
Inputs at a new shape cycle the example along the dynamic axes, then integer ids are redrawn
in the example's value range and float inputs get noise; masks (bool, or a name containing
"mask") keep the cycled pattern, so padding stays valid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch


@dataclass
class InputSpec:
    names: list[str]
    tensors: list[torch.Tensor]
    as_kwargs: bool
    dynamic_axes: dict[str, dict[int, str]]
    seq: Optional[int]
    output_axes: dict[int, str]

    @classmethod
    def from_example(cls, example: Any, dynamic_axes=None) -> "InputSpec":
        if isinstance(example, torch.Tensor):
            example = (example,)
        if isinstance(example, dict):
            names, tensors, kw = list(example), list(example.values()), True
        elif isinstance(example, (tuple, list)):
            names, tensors, kw = [f"input_{i}" for i in range(len(example))], list(example), False
        else:
            raise ValueError("example_inputs must be a tensor, a tuple of tensors or a dict of "
                             f"tensors, got {type(example).__name__}")
        bad = [n for n, t in zip(names, tensors) if not isinstance(t, torch.Tensor)]
        if bad:
            raise ValueError(f"example inputs {bad} are not tensors; pass only tensors (bind "
                             "other arguments with functools.partial or a wrapper module)")
        if dynamic_axes is None:
            dynamic_axes = {n: ({0: "batch", 1: "sequence"} if t.dim() in (2, 3) else {0: "batch"})
                            for n, t in zip(names, tensors) if t.dim() >= 1}
        seqs = {t.shape[a] for n, t in zip(names, tensors)
                for a, lab in dynamic_axes.get(n, {}).items() if lab == "sequence"}
        seq = seqs.pop() if len(seqs) == 1 else None
        out_axes = {0: "batch", 1: "sequence"} if seq is not None else {0: "batch"}
        return cls(names, tensors, kw, dynamic_axes, seq, out_axes)

    def call(self, model, args):
        return model(**dict(zip(self.names, args))) if self.as_kwargs else model(*args)


def _is_mask(name: str, t: torch.Tensor) -> bool:
    return t.dtype == torch.bool or "mask" in name.lower()


def make_inputs(spec: InputSpec, batch: int, seq: Optional[int], seed: int = 0) -> list[torch.Tensor]:
    """Inputs of the example's kind at ``(batch, seq)`` (``seq=None``: the example's length)."""
    g = torch.Generator().manual_seed(seed * 1009 + batch * 31 + (seq or 0))
    out = []
    for name, t in zip(spec.names, spec.tensors):
        new = t
        for ax, label in spec.dynamic_axes.get(name, {}).items():
            n = batch if label == "batch" else (seq if seq is not None else t.shape[ax])
            new = new.index_select(ax, torch.arange(n) % t.shape[ax])
        if _is_mask(name, t):
            pass
        elif not new.dtype.is_floating_point:
            lo, hi = int(t.min()), int(t.max())
            new = torch.randint(lo, hi + 1, new.shape, generator=g, dtype=new.dtype)
        else:
            scale = float(t.float().std()) if t.numel() > 1 else 1.0
            new = new + 0.1 * scale * torch.randn(new.shape, generator=g, dtype=new.dtype)
        out.append(new.contiguous())
    return out
