"""What a model costs: parameters and FLOPs, counted one way everywhere (library, report, bench).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass (eager
attention, so the attention matmuls count); "encoder" FLOPs are those of the transformer blocks
(``Plan.blocks()``: per layer, the module enclosing its families). Mixture-of-experts layers run with
transformers' ``batched_mm`` experts while counting: exactly ``top_k`` experts per token (the router's
``2 * hidden * experts`` plus each selected expert's matrices), i.e. FLOPs per routed token; the CPU
default ``grouped_mm`` runs its matmuls in a kernel FlopCounterMode does not see.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Optional

import torch
from torch import nn

from passes.analyze.inputs import split_inputs
from passes.hf_experts import batched_experts


def count_params(model: nn.Module, prefixes: Optional[Iterable[str]] = None) -> int:
    """Parameters (tied tensors once); only those under ``prefixes`` (module FQNs) when given."""
    seen, total = set(), 0
    prefixes = tuple(prefixes) if prefixes is not None else None
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        if prefixes is not None and not any(q == "" or name == q or name.startswith(q + ".") for q in prefixes):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@contextmanager
def eager_attention(model: nn.Module):
    """Switch an HF model to eager attention (so FlopCounterMode sees the attention matmuls)."""
    setter = getattr(model, "set_attn_implementation", None)
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    switched = False
    if callable(setter) and previous not in (None, "eager"):
        try:
            setter("eager")
            switched = True
        except (ValueError, AttributeError, NotImplementedError):
            switched = False
    try:
        yield
    finally:
        if switched:
            setter(previous)


def count_flops(model: nn.Module, example_inputs: Any, plan=None) -> dict[str, int]:
    """FLOPs of one forward on ``example_inputs``: ``total`` and ``encoder`` (blocks of ``plan``)."""
    from torch.utils.flop_counter import FlopCounterMode

    args, kwargs = split_inputs(example_inputs)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model), batched_experts(model), torch.no_grad(), counter:
            model(*args, **kwargs)
    finally:
        model.train(was_training)
    total = int(counter.get_total_flops())
    out = {"total": total, "encoder": total}
    if plan is not None:
        counts = counter.get_flop_counts()
        root = type(model).__name__
        names = plan.blocks()
        if names != [""]:
            out["encoder"] = int(sum(sum(counts.get(f"{root}.{b}", {}).values()) for b in names))
    return out
