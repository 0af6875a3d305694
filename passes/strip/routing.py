"""Routing around experts: the dense model run as if some experts were not there.

``route_offsets(model, plan, {experts key: offset [experts]})`` adds ``offset[e]`` to expert ``e``'s router
logit (the output of the router's projection, wherever the forward computes it: an
``overrides.TorchFunctionMode`` watches ``linear`` / ``matmul`` calls reading the router weight) and to
every per-expert routing tensor of the family (``ExpertsFamily.coupled``, e.g. DeepSeek-V3's
score-correction bias, restored afterwards). ``-inf`` removes the expert from routing: a softmax gives
it 0 and renormalises over the rest, a sigmoid gives it 0, a top-k never picks it; that is what the model
computes once the expert is stripped (``strip``'s self-check reference, ``excluded_experts``). Finite
offsets are a soft version (``log m`` scales a softmax router's probability by ``m``) a method may use
while training expert masks. A router weight under a parametrization (a mask carrier) is recomputed at every
read: the block follows the tensor the forward reads (a hook on its parametrization list). The block yields ``missed()``: the families whose router projection the
forward never computed (the offsets did not apply: do not trust that run).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode

from passes.analyze.plan import Plan
from passes.strip.tensors import tensor

_PROJECTIONS = {F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm,
                torch.addmm}


def _same(a: torch.Tensor, w: torch.Tensor) -> bool:
    """``a`` is ``w`` or a view of it (``w.T``, a cast that did not copy)."""
    return a is w or (a.numel() == w.numel() and a.untyped_storage().data_ptr() == w.untyped_storage().data_ptr())


class _AddToLogits(TorchFunctionMode):
    def __init__(self, offsets: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.offsets, self.hits = offsets, [0] * len(offsets)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _PROJECTIONS and isinstance(out, torch.Tensor):
            operands = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            for i, (w, off) in enumerate(self.offsets):
                if out.shape[-1:] == off.shape and any(_same(a, w) for a in operands):
                    out, self.hits[i] = out + off.to(out.dtype), self.hits[i] + 1
        return out


@contextmanager
def route_offsets(model: nn.Module, plan: Plan, offsets: dict[str, torch.Tensor]):
    """Add ``offsets[key]`` to the router logits and per-expert routing tensors of ExpertsFamily ``key``
    inside the block (module doc); yields ``missed() -> [keys]``."""
    fams = {k: plan.families[k] for k in offsets}
    watched = [(tensor(model, f.router.weight_name), offsets[k].detach()) for k, f in fams.items()]
    hooks = [_follow(model, f.router.weight_name, watched, i) for i, f in enumerate(fams.values())]
    saved = []
    with torch.no_grad():
        for k, f in fams.items():
            for c in f.coupled:
                t = tensor(model, c.weight_name)
                saved.append((t, t.detach().clone()))
                t.add_(offsets[k].to(t.dtype).reshape([-1 if a == c.axis else 1 for a in range(t.dim())]))
    mode = _AddToLogits(watched)
    missed: Callable[[], list[str]] = lambda: [k for k, n in zip(fams, mode.hits) if n == 0]  # noqa: E731
    try:
        with mode:
            yield missed
    finally:
        for h in hooks:
            if h is not None:
                h.remove()
        with torch.no_grad():
            for t, old in saved:
                t.copy_(old)


def _follow(model: nn.Module, full_name: str, watched: list, i: int):
    """A parametrized weight: keep ``watched[i]``'s tensor the one the latest read computed (hook handle)."""
    fqn, _, name = full_name.rpartition(".")
    mod = model.get_submodule(fqn) if fqn else model
    if not parametrize.is_parametrized(mod, name):
        return None

    def seen(_module, _args, out):
        watched[i] = (out, watched[i][1])
    return mod.parametrizations[name].register_forward_hook(seen)


def excluded_experts(model: nn.Module, plan: Plan, removed: dict[str, list[int]]):
    """``route_offsets`` with ``-inf`` for the ``removed`` experts of each ExpertsFamily key (others 0)."""
    offsets = {}
    for key, gone in removed.items():
        if gone:
            off = torch.zeros(plan.families[key].num_experts)
            off[list(gone)] = float("-inf")
            offsets[key] = off
    return route_offsets(model, plan, offsets)
