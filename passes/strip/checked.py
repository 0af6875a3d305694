"""strip: physically remove the heads / neurons a folded model zeroed, exactly, and check it.

``strip(model, plan, example_inputs)`` keeps outputs equal (up to float rounding) in eval mode:

1. decide per family what is provably removable (the kind's handler: ``heads.py`` for attention,
   ``neurons.py`` for feed-forward; zero out-columns / down-columns go, zero v-rows / up-rows go
   after folding their constant into the out / down bias, zero q/k with live v stays, GQA removes
   whole kv groups and the same number of q heads from each kept group (``gqa.py``); tied families
   remove the same heads; frozen heads stay);
2. fold those constants (``fold.py``); a family left with nothing keeps one *zeroed* granule (adds
   exactly 0) so no weight or activation has width 0 (onnxruntime rejects zero-size initializers);
3. remove the indices (``remove.py`` / ``surgery.py``): through torch-pruning's ``DependencyGraph``
   (``tp_backend.py``) when the family is plain ``nn.Linear``; its propagated group must equal the
   Plan's or strip refuses (no silent fallback). Else by slicing the Plan's slices (fused or
   interleaved q/k/v, HF Conv1D, GQA, MHA) and coupled per-head tensors (a shared one once);
4. update the attributes the forwards read (head counts, ``all_head_size``, GPT-2 ``split_size``,
   ...; tables on the handlers). ``nn.MultiheadAttention`` with removed heads becomes
   ``mha.SlimMultiheadAttention``;
5. verify (``verify.py``): with ``example_inputs``, the outputs before and after must agree within
   ``rtol`` (relative to the largest output; a deep model's float32 rounding can exceed it, so a difference
   up to ``FLOAT64_RECHECK`` is measured again with both models in float64, where rounding is 1e-9 times
   smaller and only a real difference remains; the report keeps both); otherwise the model is restored to exactly what it was
   and :class:`StripError` names the module where the forward broke, the family that breaks it alone
   (with its tensors) and what to try. Removing whole experts changes the routing (``experts.py``):
   "before" is then the model with those experts' router logits at ``-inf`` (``routing.py``).

Returns a :class:`StripReport` (kept heads / neurons per family as indices into the model given,
attributes changed, modules replaced, the Plan of the slim model). HF configs are shared by all
layers: their head counts change only when every attention family kept the same number of heads
and the config names its head width (``config.py``).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from passes.analyze.plan import Plan
from passes.strip import verify
from passes.strip.config import sync_config
from passes.strip.cut import StripError
from passes.strip.experts import removed_experts
from passes.strip.remove import HANDLERS, describe, strip_pass
from passes.strip.report import StripReport
from passes.strip.routing import excluded_experts
from passes.strip.sublayers import strip_sublayers
from passes.strip.surgery import members

BACKENDS = ("auto", "torch_pruning", "slice")
RTOL = 1e-5
FLOAT64_RECHECK = 1e-3  # a float32 difference above rtol but below this is re-measured in float64
__all__ = ["BACKENDS", "HANDLERS", "RTOL", "StripError", "strip", "strip_copy"]

_TRY = ("Try: leave this family out (del plan.families[{key!r}]) and strip the rest, or report the "
        "architecture with its Plan table (the module may keep per-head state the Plan does not describe: a "
        "head count in an attribute strip does not know, or a tensor with a head axis).")


def _refuse_parametrized(model: nn.Module, plan: Plan) -> None:
    """Masks must be folded first; other parametrizations (weight_norm on a conv) may stay elsewhere."""
    names = {s.weight_name for f in plan.families.values() for s in members(f)}
    for fqn, mod in model.named_modules():
        if parametrize.is_parametrized(mod):
            hit = [n for n in (f"{fqn}.{p}" if fqn else p for p in mod.parametrizations) if n in names]
            if hit:
                raise ValueError(f"{hit[0]} still has a parametrization (masks); call leap_fx.fold(model) first")


def strip(model: nn.Module, plan: Plan, example_inputs: Any = None, *, backend: str = "auto",
          atol: float = 0.0, rtol: float = RTOL, sublayers: bool = False) -> StripReport:
    """Remove provably dead heads / neurons (and hidden dims, ``plan.residual``) in place; returns the
    :class:`StripReport`.

    ``example_inputs`` (a tensor, tuple, or dict of kwargs): the self-check runs them before and
    after (and the torch-pruning backend traces them). ``atol``: a weight slice counts as zero when
    ``max|w| <= atol`` (default 0.0: exact zeros, as ``fold()`` produces). ``sublayers=True``: an
    emptied attention / FFN family is replaced by the constant it adds (``sublayers.py``, needs
    ``example_inputs``) instead of keeping a zeroed placeholder granule."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch_pruning" and example_inputs is None:
        raise ValueError("backend='torch_pruning' needs example_inputs (what analyze() traced)")
    _refuse_parametrized(model, plan)
    was_training = model.training
    model.eval()
    before = _reference(model, plan, example_inputs, atol) if example_inputs is not None else None
    backup = copy.deepcopy(model.__dict__) if example_inputs is not None else None
    try:
        report = strip_pass(model, plan, example_inputs, backend, atol)
        report.config = sync_config(model, plan, report.plan)  # checked with the rest below
        if sublayers and example_inputs is not None:  # emptied sub-layers -> constants, each one checked
            _sublayers(model, plan, report, example_inputs, rtol)
        if before is not None:
            where, exc = verify.failing_module(model, example_inputs)
            report.max_rel_diff = float("inf") if exc else verify.rel_diff(before, verify.outputs(model, example_inputs))
            if rtol < report.max_rel_diff <= FLOAT64_RECHECK:  # float32 rounding, or a real difference?
                report.float32_rel_diff = report.max_rel_diff
                report.max_rel_diff = _float64_diff(model, plan, example_inputs, atol, backup, report.max_rel_diff)
            if not report.max_rel_diff <= rtol:
                what = f"fails in module {where!r} ({type(exc).__name__}: {exc})" if exc else \
                    f"changes the outputs by {report.max_rel_diff:.3g} (relative) > rtol {rtol:g}"
                touched = [k for k, f in report.families.items() if len(f["kept"]) < f["before"]]
                model.__dict__.update(backup)
                backup = None
                raise StripError(_explain(model, plan, example_inputs, rtol, backend, atol, what, touched))
    except Exception:
        if backup is not None:
            model.__dict__.update(backup)  # exactly the model we were given
        raise
    finally:
        model.train(was_training)
    return report


def _reference(model: nn.Module, plan: Plan, example_inputs: Any, atol: float):
    """The outputs the stripped model must reproduce: the model's, with the experts strip will remove routed
    around (``routing.excluded_experts``)."""
    with excluded_experts(model, plan, removed_experts(model, plan, atol)) as missed:
        before = verify.outputs(model, example_inputs)
    if missed():
        key = missed()[0]
        raise StripError(f"strip: cannot check removing experts of {describe(plan, key)}: the forward never computed "
                         f"its router logits as linear / matmul of {plan.families[key].router.weight_name}; the model "
                         f"was left unchanged. Leave this family out (del plan.families[{key!r}]) to strip the rest")
    return before


def _float64_diff(model: nn.Module, plan: Plan, example_inputs: Any, atol: float, backup: dict,
                  float32_diff: float) -> float:
    """The self-check again in float64: the stripped model's outputs against the model before strip (its
    ``__dict__`` in ``backup``), both cast to float64 and back (exact). ``float32_diff`` stands when the model
    is not all float32 (casting back would change it) or a forward does not run in float64."""
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors):
        return float32_diff
    stripped = dict(model.__dict__)
    try:
        after = verify.in_float64(model, example_inputs, lambda x: verify.outputs(model, x))
        model.__dict__.update(backup)
        before = verify.in_float64(model, example_inputs, lambda x: _reference(model, plan, x, atol))
    except Exception:  # a forward that does not run in float64: the float32 verdict stands
        return float32_diff
    finally:
        model.__dict__.update(stripped)
    return verify.rel_diff(before, after)


def _sublayers(model: nn.Module, plan: Plan, report: StripReport, example_inputs: Any, rtol: float) -> None:
    ref = verify.outputs(model, example_inputs)

    def same() -> bool:
        try:
            return verify.rel_diff(ref, verify.outputs(model, example_inputs)) <= rtol
        except Exception:  # the changed model no longer runs
            return False
    for key in strip_sublayers(model, plan, report, example_inputs, same):
        report.plan.families.pop(key, None)
    report.params_after = sum(p.numel() for p in model.parameters())


def _explain(model, plan, example_inputs, rtol, backend, atol, what: str, touched: list[str]) -> str:
    """The self-check failed: name the family (stripped alone, on a copy), its tensors, and what to try."""
    found = verify.culprit(model, plan, touched, example_inputs, lambda p: _reference(model, p, example_inputs, atol),
                           rtol, lambda m, p: strip_pass(m, p, example_inputs, backend, atol))
    head = f"strip: the stripped model {what}; the model was left unchanged."
    if found is None:
        return f"{head} No single family breaks it alone (touched: {touched[:6]}). " + \
            _TRY.format(key=touched[0] if touched else "<family>")
    key, detail = found
    return f"{head} Culprit: {describe(plan, key)}: {detail}. " + _TRY.format(key=key)


def strip_copy(model: nn.Module, plan: Plan, example_inputs: Any = None, **kw) -> tuple[nn.Module, StripReport]:
    """``strip`` on a deep copy: ``(slim copy, report)``; ``model`` is untouched."""
    slim = copy.deepcopy(model)
    return slim, strip(slim, plan, example_inputs, **kw)
