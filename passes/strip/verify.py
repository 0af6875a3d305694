"""strip's self-check: outputs before / after on the example inputs, and naming the culprit on failure.

``outputs`` runs the model (eval, no grad) and flattens every floating tensor it returns;
``rel_diff`` is the largest difference relative to the largest output; ``in_float64`` runs a forward with
the model's floating weights and inputs cast to float64 and back (exact both ways). When the stripped model
fails or differs, ``failing_module`` says in which module the forward raised and ``culprit`` strips
each touched family alone (on a copy) to find the first one that breaks the model by itself.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import torch
from torch import nn

from passes.analyze.inputs import split_inputs
from passes.analyze.plan import Plan


def outputs(model: nn.Module, example_inputs: Any) -> list[torch.Tensor]:
    """Every floating tensor the forward returns, flattened (eval mode, no grad)."""
    args, kwargs = split_inputs(example_inputs)
    with torch.no_grad():
        out = model(*args, **kwargs)
    flat: list[torch.Tensor] = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            if x.is_floating_point():  # float64 stays float64 (the float64 recheck)
                flat.append(x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32))
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (tuple, list)):
            for v in x:
                walk(v)
    walk(out)
    return flat


def rel_diff(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    if len(before) != len(after) or any(a.shape != b.shape for a, b in zip(before, after)):
        return float("inf")
    scale = max([float(b.abs().max()) for b in before if b.numel()] + [1e-12])
    diff = max([float((a - b).abs().max()) for a, b in zip(after, before) if a.numel()] + [0.0])
    return diff / scale


def failing_module(model: nn.Module, example_inputs: Any) -> tuple[Optional[str], Optional[BaseException]]:
    """``(innermost module running when the forward raised, the exception)``; (None, None) if it runs."""
    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []

    def enter(mod, _args):
        stack.append(names.get(mod, "?"))

    def leave(_mod, _args, _out):
        if stack:
            stack.pop()
    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        outputs(model, example_inputs)
        return None, None
    except Exception as exc:  # the point: report where it broke
        return (stack[-1] if stack else ""), exc
    finally:
        for h in hooks:
            h.remove()


def culprit(model: nn.Module, plan: Plan, keys: list[str], example_inputs: Any,
            before: Callable[[Plan], list[torch.Tensor]], rtol: float,
            strip_one: Callable[[nn.Module, Plan], None]) -> Optional[tuple[str, str]]:
    """The first family (of ``keys``) whose strip alone breaks ``model``: ``(key, what happened)``;
    ``before(plan)`` gives the outputs stripping ``plan`` alone must keep."""
    fams = plan.all_families()  # the residual stream (key "residual") too
    for key in keys:
        trial = copy.deepcopy(model)
        fam = fams[key]
        tied = [k for k, f in fams.items() if f.tie and f.tie == fam.tie]
        alone = Plan.from_families({k: fams[k] for k in (tied or [key])}, plan.model_class)
        want = before(alone)
        try:
            strip_one(trial, alone)
        except Exception as exc:  # stripping this family alone raised
            return key, f"{type(exc).__name__}: {exc}"
        where, exc = failing_module(trial, example_inputs)
        if exc is not None:
            return key, f"the model then fails in module {where!r} ({type(exc).__name__}: {exc})"
        diff = rel_diff(want, outputs(trial, example_inputs))
        if not diff <= rtol:
            return key, f"stripping it alone changes the outputs by {diff:.3g} (relative)"
    return None


def _double(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.double() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _double(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_double(v) for v in x)
    return x


def in_float64(model: nn.Module, example_inputs: Any, run: Callable[[Any], Any]) -> Any:
    """``run(float64 inputs)`` with ``model`` cast to float64, then cast back to its dtype (float32 -> float64
    -> float32 is exact, so the model is left bit for bit as it was)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    model.double()
    try:
        return run(_double(example_inputs))
    finally:
        model.to(dtype)
