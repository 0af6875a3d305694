"""strip: physically remove the heads / neurons a folded model zeroed, exactly, and check it.

``strip(model, plan, example_inputs)`` keeps outputs equal (up to float rounding) in eval mode:

1. decide per family what is provably removable (the kind's handler: ``heads.py`` for attention,
   ``neurons.py`` for feed-forward; zero out-columns / down-columns go, zero v-rows / up-rows go
   after folding their constant into the out / down bias, zero q/k with live v stays, GQA removes
   only whole kv groups);
2. fold those constants (``fold.py``); a family left with nothing keeps one *zeroed* granule (adds
   exactly 0) so no weight or activation has width 0 (onnxruntime rejects zero-size initializers);
3. remove the indices (``surgery.py``): through torch-pruning's ``DependencyGraph``
   (``tp_backend.py``) when the family is plain ``nn.Linear`` and its propagated group equals the
   Plan's, else by slicing the Plan's slices (fused q/k/v, HF Conv1D, GQA, MHA);
4. update the attributes the forwards read (head counts, ``all_head_size``, GPT-2 ``split_size``,
   ...; tables on the handlers). ``nn.MultiheadAttention`` with removed heads becomes
   ``mha.SlimMultiheadAttention``;
5. verify: with ``example_inputs``, the outputs before and after must agree within ``rtol``
   (relative to the largest output); otherwise :class:`StripError` names the families and the model
   is restored to exactly what it was.

Returns a :class:`StripReport` (kept heads / neurons per family as indices into the model given,
attributes changed, modules replaced, the Plan of the slim model). HF configs are shared by all
layers and are left unchanged.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from passes.analyze.inputs import split_inputs
from passes.analyze.plan import ATTENTION, FEED_FORWARD, RESIDUAL, Plan
from passes.strip.cut import Cut
from passes.strip.fold import apply_folds, zero_placeholder
from passes.strip.heads import Heads
from passes.strip.hidden import Hidden
from passes.strip.mha import keep_heads, replace_mha
from passes.strip.neurons import Neurons
from passes.strip.report import StripReport, shrunk_slice
from passes.strip.sublayers import strip_sublayers
from passes.strip.surgery import removals, slice_params, update_attributes
from passes.strip.tp_backend import dependency_graph, tp_eligible, tp_remove

BACKENDS = ("auto", "torch_pruning", "slice")
HANDLERS = {ATTENTION: Heads, FEED_FORWARD: Neurons, RESIDUAL: Hidden}  # family kind -> its strip rules
RTOL = 1e-5


class StripError(RuntimeError):
    """Stripping changed the model's outputs (or could not run); the model was left unchanged."""


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(model: nn.Module, example_inputs: Any) -> list[torch.Tensor]:
    """Every floating tensor the forward returns, flattened (eval mode, no grad)."""
    args, kwargs = split_inputs(example_inputs)
    with torch.no_grad():
        out = model(*args, **kwargs)
    flat: list[torch.Tensor] = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            if x.is_floating_point():
                flat.append(x.detach().float())
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (tuple, list)):
            for v in x:
                walk(v)
    walk(out)
    return flat


def _rel_diff(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    if len(before) != len(after) or any(a.shape != b.shape for a, b in zip(before, after)):
        return float("inf")
    scale = max([float(b.abs().max()) for b in before if b.numel()] + [1e-12])
    diff = max([float((a - b).abs().max()) for a, b in zip(after, before) if a.numel()] + [0.0])
    return diff / scale


def _same(ref: list[torch.Tensor], model: nn.Module, example_inputs: Any, rtol: float) -> bool:
    try:
        return _rel_diff(ref, _outputs(model, example_inputs)) <= rtol
    except Exception:  # the changed model no longer runs
        return False


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
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("model still has parametrizations (masks); call leap_fx.fold(model) first")
    was_training = model.training
    model.eval()
    before = _outputs(model, example_inputs) if example_inputs is not None else None
    backup = copy.deepcopy(model.__dict__) if example_inputs is not None else None
    try:
        report = _strip(model, plan, example_inputs, backend, atol, sublayers, rtol)
        if before is not None:
            try:
                report.max_rel_diff = _rel_diff(before, _outputs(model, example_inputs))
            except Exception as exc:  # the stripped model no longer runs
                raise StripError(f"the stripped model fails on the example inputs ({type(exc).__name__}: "
                                 f"{exc})") from exc
            if not report.max_rel_diff <= rtol:
                raise StripError(f"stripping changed the outputs by {report.max_rel_diff:.3g} (relative) > "
                                 f"{rtol:g}")
    except Exception as exc:
        if backup is not None:
            model.__dict__.update(backup)  # exactly the model we were given
        if isinstance(exc, StripError):
            touched = [k for k, f in report.families.items() if len(f["kept"]) < f["before"]] \
                if "report" in locals() else list(plan.families)
            raise StripError(f"strip: {exc}; families touched: {touched[:6]}. The model was left "
                             f"unchanged. A module may keep per-head state the Plan does not describe: "
                             f"exclude these families, or report the architecture.") from exc.__cause__
        raise
    finally:
        model.train(was_training)
    return report


def _strip(model: nn.Module, plan: Plan, example_inputs: Any, backend: str, atol: float,
           sublayers: bool = False, rtol: float = RTOL) -> StripReport:
    before = _count(model)
    fams = [(key, fam, HANDLERS[fam.kind]) for key, fam in plan.all_families().items()]
    cuts: dict[str, Cut] = {key: h.decide(model, fam, atol) for key, fam, h in fams}  # untouched weights
    report = StripReport(backend=backend)
    for key, fam, h in fams:  # fold constants, zero placeholders, swap MHA for a slim module
        cut = cuts[key]
        apply_folds(model, cut, h.fold_into(fam))
        zero_placeholder(model, fam, cut, h)
        if fam.kind == ATTENTION and cut.remove:
            replaced = replace_mha(model, fam)
            if replaced:
                report.replaced[replaced] = "SlimMultiheadAttention"
    rems = {key: removals(model, fam, cuts[key], h) for key, fam, h in fams}
    use_tp = backend != "slice" and example_inputs is not None
    dg = dependency_graph(model, example_inputs) if use_tp and any(
        rems[k] and tp_eligible(model, f) is None for k, f, _ in fams) else None
    for key, fam, h in fams:  # remove
        cut, rem = cuts[key], rems[key]
        how = "nothing" if not rem else "slice"
        if rem and use_tp:
            why = tp_eligible(model, fam) or tp_remove(dg, model, fam, rem)
            how = "torch_pruning" if why is None else f"slice ({why})"
        if rem and not how.startswith("torch_pruning"):
            slice_params(model, rem)
        if fam.kind == ATTENTION and cut.remove:
            keep_heads(model, fam, cut.kept)
        h.finish(model, fam, cut)
        old, new = h.quantities(fam, cut)  # attributes
        for fqn, attrs in update_attributes(model, fam, old, new, h).items():
            report.attributes.setdefault(fqn, {}).update(attrs)
        report.families[key] = {"kind": fam.kind, "layer": fam.layer, "before": cut.granules,
                                "kept": cut.kept, "folded": sorted(g for g, _ in cut.folds),
                                "placeholder": cut.placeholder, "removed_by": how, "note": cut.note,
                                "kv_kept": None, **h.record(fam, cut)}
    report.plan = Plan.from_families({key: h.shrunk(fam, cuts[key], {s.role: shrunk_slice(s, rems[key])
                                                                     for s in fam.slices})
                                      for key, fam, h in fams}, model_class=plan.model_class)
    if sublayers and example_inputs is not None:  # emptied sub-layers -> constants, each one checked
        ref = _outputs(model, example_inputs)
        for key in strip_sublayers(model, plan, report, example_inputs, lambda: _same(ref, model, example_inputs, rtol)):
            report.plan.families.pop(key, None)
    report.params_before, report.params_after = before, _count(model)
    return report


def strip_copy(model: nn.Module, plan: Plan, example_inputs: Any = None, **kw) -> tuple[nn.Module, StripReport]:
    """``strip`` on a deep copy: ``(slim copy, report)``; ``model`` is untouched."""
    slim = copy.deepcopy(model)
    return slim, strip(slim, plan, example_inputs, **kw)
