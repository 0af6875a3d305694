"""What an objective captures besides the logits (``TAPS``), by forward hooks on the Plan's modules:

- ``"hidden"``: the output of every transformer block of the Plan (forward hooks);
- ``"embeddings"``: the input of the first block (the embedding layer's output, TinyBERT's layer 0);
- ``"attention"``: the pre-softmax attention scores of every attention family of the Plan
  (``capture_scores``: the input of the softmax its module calls; HF models switch to eager attention
  for the forward, as fused kernels never show the scores).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from leap_fx.objectives.outputs import Outputs, logits_of
from passes.measure import eager_attention

__all__ = ["capture", "capture_inputs", "capture_scores", "TAPS", "taps", "same_layout", "recording", "observe"]


@contextmanager
def capture(model: nn.Module, blocks: Sequence[str]) -> Iterator[list[torch.Tensor]]:
    """Collect the (first tensor) output of each module in ``blocks`` during the forwards inside."""
    found: list[torch.Tensor] = []

    def hook(_mod, _inp, out):
        found.append(out if isinstance(out, torch.Tensor) else out[0])
    handles = [model.get_submodule(b).register_forward_hook(hook) for b in blocks]
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture_inputs(model: nn.Module, modules: Sequence[str]) -> Iterator[list[torch.Tensor]]:
    """Collect the first tensor input of each module in ``modules`` (positional or keyword)."""
    found: list[torch.Tensor] = []

    def hook(_mod, args, kwargs):
        found.append(next(t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)))
    handles = [model.get_submodule(m).register_forward_pre_hook(hook, with_kwargs=True) for m in modules]
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


_SOFTMAX = (F.softmax, torch.softmax, torch.Tensor.softmax)


class _ScoreRecorder(torch.overrides.TorchFunctionMode):
    """Records the input of the first last-axis softmax called inside each watched module's forward."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names, self.inside, self.found, self.missed = list(names), [], [], []

    def enter(self, index: int) -> None:
        self.inside.append([index, False])

    def leave(self) -> None:
        index, seen = self.inside.pop()
        if not seen:
            self.missed.append(self.names[index])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SOFTMAX and self.inside and not self.inside[-1][1]:
            x = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if isinstance(x, torch.Tensor) and dim is not None and dim in (-1, x.dim() - 1):
                self.inside[-1][1] = True
                self.found.append(x)
        return func(*args, **kwargs)


@contextmanager
def capture_scores(model: nn.Module, modules: Sequence[str]) -> Iterator[list[torch.Tensor]]:
    """Collect the pre-softmax attention scores (mask added) of each attention module in ``modules``.

    The scores are the input of the first softmax over the last axis called inside the module's
    forward (eager attention computes ``softmax(q k^T * scale + mask)``). HF models are switched to
    eager attention inside the block; a module that ran without such a softmax (a fused kernel)
    raises ``ValueError`` at the end of the block."""
    rec = _ScoreRecorder(modules)
    handles = []
    for i, name in enumerate(modules):
        mod = model.get_submodule(name)
        handles.append(mod.register_forward_pre_hook(lambda *_a, i=i: rec.enter(i)))
        handles.append(mod.register_forward_hook(lambda *_a: rec.leave()))
    try:
        with eager_attention(model), rec:
            yield rec.found
    finally:
        for h in handles:
            h.remove()
    if rec.missed:
        raise ValueError(f"no attention scores seen in {sorted(set(rec.missed))[:3]}: the module runs a fused "
                         f"attention kernel; attention distillation needs eager attention (softmax in Python)")


def _first_block(plan) -> list[str]:
    return plan.blocks()[:1]


def _attention_modules(plan) -> list[str]:
    return [f.fqn for f in sorted(plan.attention(), key=lambda f: f.layer)]


# capture kind -> (modules of the Plan to watch, context manager collecting what they produce)
TAPS: dict[str, tuple[Callable, Callable]] = {
    "hidden": (lambda plan: plan.blocks(), capture),
    "embeddings": (_first_block, capture_inputs),
    "attention": (_attention_modules, capture_scores),
}


def taps(plan, captures) -> dict[str, list[str]]:
    """``{capture kind: module names}`` an objective's ``captures`` need on a model with ``plan``."""
    unknown = sorted(set(captures) - set(TAPS))
    if unknown:
        raise ValueError(f"objective captures {unknown} are unknown: use some of {sorted(TAPS)}")
    return {kind: TAPS[kind][0](plan) for kind in sorted(captures)}


def same_layout(a: nn.Module, b: nn.Module) -> bool:
    """Same parameter names and shapes (one Plan's module names fit both)."""
    return [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]


@contextmanager
def recording(model: nn.Module, watched: dict[str, list[str]]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Everything ``watched`` (from :func:`taps`) asks for during the forwards inside, by kind."""
    with ExitStack() as stack:
        yield {kind: stack.enter_context(TAPS[kind][1](model, names)) for kind, names in watched.items()}


def observe(net: nn.Module, inputs: dict, model: nn.Module, watched: dict[str, list[str]],
            logits: Callable = logits_of) -> Outputs:
    """``net(**inputs)`` (``net``: ``model`` or its DDP wrapper) as ``Outputs`` (``logits``: what the task's
    loss reads from the output), with what ``watched`` asks captured on ``model``'s modules: one forward,
    the loop's and the Hugging Face trainer's alike."""
    with recording(model, watched) as got:
        return Outputs(logits(net(**inputs)), **got)
