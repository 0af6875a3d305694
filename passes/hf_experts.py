"""transformers' experts implementation (``config._experts_implementation``) of a mixture-of-experts model.

transformers 5 runs fused experts (classes decorated with ``use_experts_implementation``) one of several
ways: ``grouped_mm`` (the CPU default: ``torch.histc`` and the custom op ``transformers::grouped_mm_fallback``,
which no ONNX exporter knows and ``FlopCounterMode`` does not see into), ``batched_mm`` (a gather and one
``bmm`` per projection: exports, and counts exactly ``top_k`` experts per token) and ``eager`` (a Python
loop over the experts that received tokens). They compute the same function. ``batched_experts`` switches
a model to ``batched_mm`` for a block and restores its own setting afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

from torch import nn

BATCHED = "batched_mm"


def experts_implementation(model: nn.Module) -> Optional[str]:
    """The model's experts implementation when it has transformers fused experts, else None."""
    config = getattr(model, "config", None)
    if not callable(getattr(model, "set_experts_implementation", None)) or config is None:
        return None
    if not any(hasattr(m, "has_gate") and hasattr(m, "is_concatenated") for m in model.modules()):
        return None
    return getattr(config, "_experts_implementation", None)


@contextmanager
def batched_experts(model: nn.Module):
    """Run ``model``'s fused experts with ``batched_mm`` inside the block (no-op for other models); yields the
    implementation it replaced (None when nothing was switched)."""
    previous = experts_implementation(model)
    switched = previous not in (None, BATCHED)
    if switched:
        model.set_experts_implementation(BATCHED)
    try:
        yield previous if switched else None
    finally:
        if switched:
            model.set_experts_implementation(previous)
