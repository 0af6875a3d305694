"""Objectives a method can own: logit distillation (LEAP Eq. 8) and layer-wise distillation.

The loop runs student and teacher and hands the method two ``Outputs``; the method's objective turns
them into loss terms. An objective declares what it needs captured besides the logits (``captures``,
names of ``TAPS``), so layer-wise distillation is a configuration of the same loop, not a fork of it:

- ``"hidden"``: the output of every transformer block of the Plan (forward hooks);
- ``"embeddings"``: the input of the first block (the embedding layer's output, TinyBERT's layer 0);
- ``"attention"``: the pre-softmax attention scores of every attention family of the Plan
  (``capture_scores``: the input of the softmax its module calls; HF models switch to eager attention
  for the forward, as fused kernels never show the scores).

- ``LogitKD(alpha, tau)``: ``(1 - alpha) CE + alpha KL(softmax(t/tau) || softmax(s/tau)) tau^2`` (Eq. 8;
  without a teacher, plain CE).
- ``LayerKD``: adds ``beta * mean_l MSE(h_s[map[l]] @ W_l, h_t[l])`` over mapped layers (hidden states;
  a learnable linear map ``W_l`` when the widths differ or ``learn_map``), as TinyBERT / CoFi do.
- ``TinyBertKD`` (``distill.py``): attention-score and hidden-state MSE summed over layers plus soft
  cross-entropy (Jiao et al. 2020), the objective of SparseBERT (Xu et al. 2021).
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Outputs:
    """What one forward produced: logits, and the captured block outputs (if asked)."""

    logits: torch.Tensor
    hidden: Optional[list[torch.Tensor]] = None      # block outputs ("hidden")
    attention: Optional[list[torch.Tensor]] = None   # pre-softmax scores per attention family ("attention")
    embeddings: Optional[list[torch.Tensor]] = None  # [the first block's input] ("embeddings")


def logits_of(output) -> torch.Tensor:
    """Logits from an HF ModelOutput, a tuple or a plain tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot find logits in model output of type {type(output).__name__}")


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
    from passes.measure import eager_attention
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


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """``KL(softmax(t/tau) || softmax(s/tau)) tau^2``, averaged over the batch (Hinton et al.)."""
    if temperature <= 0:
        raise ValueError(f"kd temperature must be > 0, got {temperature}")
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def objective(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits=None,
              alpha: float = 0.9, temperature: float = 2.0) -> dict[str, torch.Tensor]:
    """Task part of Eq. 8: ``(1 - alpha) CE + alpha KD``; ``{"task", "ce", "kd"}`` (kd 0 without a teacher)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ce = F.cross_entropy(student_logits, labels)
    if teacher_logits is None or alpha == 0.0:
        return {"task": ce, "ce": ce, "kd": torch.zeros((), device=ce.device)}
    kd = kd_loss(student_logits, teacher_logits, temperature)
    return {"task": (1.0 - alpha) * ce + alpha * kd, "ce": ce, "kd": kd}


class LogitKD(nn.Module):
    """Eq. 8 on the logits; needs nothing captured. An objective is a module: its parameters (a layer
    map, a projection) are trained with the weights and saved in checkpoints (``state_dict``)."""

    captures: frozenset = frozenset()

    def __init__(self, alpha: float = 0.9, temperature: float = 2.0):
        super().__init__()
        self.alpha, self.temperature = alpha, temperature

    def forward(self, out: Outputs, teacher: Optional[Outputs], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        t = teacher.logits if teacher is not None else None
        return objective(out.logits, labels, t, self.alpha, self.temperature)


class LayerKD(LogitKD):
    """Logit KD plus hidden-state MSE between mapped layers: ``layer_map[i]`` = the student block matched
    to teacher block ``i`` (default: uniform, as TinyBERT). ``beta`` weighs the layer term."""

    captures = frozenset({"hidden"})

    def __init__(self, alpha: float = 0.9, temperature: float = 2.0, beta: float = 1.0,
                 layer_map: Optional[Sequence[int]] = None, widths: Optional[tuple[int, int]] = None):
        super().__init__(alpha, temperature)
        self.beta, self.layer_map = beta, None if layer_map is None else list(layer_map)
        self.proj = None if widths is None or widths[0] == widths[1] else nn.Linear(widths[0], widths[1])

    def pairs(self, n_student: int, n_teacher: int) -> list[tuple[int, int]]:
        """(student block, teacher block) pairs: the map, or uniform when depths differ."""
        if self.layer_map is not None:
            return [(s, t) for t, s in enumerate(self.layer_map) if s is not None]
        return [(math.ceil((t + 1) * n_student / n_teacher) - 1, t) for t in range(n_teacher)]

    def forward(self, out, teacher, labels):
        terms = super().forward(out, teacher, labels)
        if teacher is None or not teacher.hidden or not out.hidden:
            return terms
        losses = []
        for s, t in self.pairs(len(out.hidden), len(teacher.hidden)):
            h = out.hidden[s] if self.proj is None else self.proj(out.hidden[s])
            losses.append(F.mse_loss(h, teacher.hidden[t].detach()))
        hidden = torch.stack(losses).mean()
        terms["hidden"] = hidden
        terms["task"] = terms["task"] + self.beta * hidden
        return terms
