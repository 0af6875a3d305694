"""Example inputs for export: names, dynamic axes, and fresh inputs at other (batch, seq) shapes.

Dynamic axes come, in this order, from ``dynamic_axes=`` (the caller's), from what the traced
program allows (``axes.infer_axes``), or from a guess: axis 0 is ``batch`` for every input, axis 1
is ``sequence`` for inputs of rank 2 or 3 (ids, masks, ``[B, S, E]`` embeddings). ``limits`` (label
-> (min, max)) keep parity shapes inside what the model accepts.

A parity shape ``(batch, seq)``: every ``batch`` axis gets ``batch``; every other dynamic axis gets
``seq`` (an int), the example's size times ``seq`` (a float), or the example's size (None), clipped to
its limits. Inputs at a new shape cycle the example along the dynamic axes, then integer ids are
redrawn in the example's value range and float inputs get noise; masks (bool, or a name containing
"mask") keep the cycled pattern, so padding stays valid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    limits: dict[str, tuple[int, Optional[int]]] = field(default_factory=dict)

    @classmethod
    def from_example(cls, example: Any, dynamic_axes=None, inferred=None) -> "InputSpec":
        """``inferred``: an ``axes.Axes`` (used unless ``dynamic_axes`` is given)."""
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
        unknown = sorted(set(dynamic_axes or {}) - set(names))
        if unknown:
            raise ValueError(f"dynamic_axes names {unknown} are not inputs; the inputs are {names}")
        limits, out_axes = {}, None
        if dynamic_axes is None and inferred is not None:
            dynamic_axes, out_axes, limits = inferred.inputs, inferred.output, inferred.limits
        if dynamic_axes is None:
            dynamic_axes = {n: ({0: "batch", 1: "sequence"} if t.dim() in (2, 3) else {0: "batch"})
                            for n, t in zip(names, tensors) if t.dim() >= 1}
        dynamic_axes = {n: {int(a): str(lab) for a, lab in ax.items()} for n, ax in dynamic_axes.items()}
        other = [t.shape[a] for n, t in zip(names, tensors) for a, lab in dynamic_axes.get(n, {}).items()
                 if lab != "batch"]
        seq = other[0] if other else None
        if out_axes is None:
            out_axes = {0: "batch", 1: "sequence"} if "sequence" in {lab for ax in dynamic_axes.values()
                                                                    for lab in ax.values()} else {0: "batch"}
        return cls(names, tensors, kw, dynamic_axes, seq, out_axes, limits)

    def call(self, model, args):
        return model(**dict(zip(self.names, args))) if self.as_kwargs else model(*args)

    def size(self, label: str, example: int, batch: int, seq) -> int:
        """The size of a ``label`` axis (example size ``example``) at the parity shape ``(batch, seq)``."""
        if label == "batch":
            n = batch
        elif seq is None:
            n = example
        elif isinstance(seq, float):
            n = max(1, round(example * seq))
        else:
            n = int(seq)
        lo, hi = self.limits.get(label, (1, None))
        return max(lo, n if hi is None else min(hi, n))

    def key(self, batch: int, seq) -> str:
        """``"BxS"`` naming a parity shape (S: the first non-batch dynamic axis; ``-`` when there is none)."""
        for name, t in zip(self.names, self.tensors):
            for ax, lab in self.dynamic_axes.get(name, {}).items():
                if lab != "batch":
                    return f"{batch}x{self.size(lab, t.shape[ax], batch, seq)}"
        return f"{batch}x-"


def _is_mask(name: str, t: torch.Tensor) -> bool:
    return t.dtype == torch.bool or "mask" in name.lower()


def make_inputs(spec: InputSpec, batch: int, seq: Optional[int], seed: int = 0) -> list[torch.Tensor]:
    """Inputs of the example's kind at ``(batch, seq)`` (``seq=None``: the example's length)."""
    g = torch.Generator().manual_seed(seed * 1009 + batch * 31 + int(round(100 * (seq or 0))))
    out = []
    for name, t in zip(spec.names, spec.tensors):
        new = t
        for ax, label in spec.dynamic_axes.get(name, {}).items():
            n = spec.size(label, t.shape[ax], batch, seq)
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
