"""The strip pass itself (unchecked): decide -> tie -> fold -> remove -> attributes -> shrunk Plan.

Family kinds map to their rules in ``HANDLERS`` (heads, neurons, hidden dims of the residual stream,
whole experts). Routed experts' widths are evened out across each fused tensor (``experts.even_widths``).

``strip.strip`` wraps this with the self-check and the restore-on-failure. Tied families (one shared
per-head tensor, e.g. T5's relative-position bias table read by every layer) remove the same heads:
those removable in all of them; the shared tensor is sliced once.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from passes.analyze.plan import ATTENTION, EXPERTS, FEED_FORWARD, RESIDUAL, Plan
from passes.strip.cut import Cut, StripError
from passes.strip.experts import Experts, even_widths, renumber, update_config
from passes.strip.fold import apply_folds, zero_placeholder
from passes.strip.heads import Heads
from passes.strip.hidden import Hidden
from passes.strip.mha import keep_heads, replace_mha
from passes.strip.neurons import Neurons
from passes.strip.report import StripReport, shrunk_slice
from passes.strip.surgery import members, removals, slice_params, update_attributes
from passes.strip.tp_backend import (
    GroupMismatch,
    dependency_graph,
    tp_eligible,
    tp_remove,
)

HANDLERS = {ATTENTION: Heads, FEED_FORWARD: Neurons, RESIDUAL: Hidden, EXPERTS: Experts}  # kind -> strip rules


def describe(plan: Plan, key: str) -> str:
    """``family 'k' (kind, layer, model: role=tensor, ...)`` for error messages."""
    fam = plan.all_families()[key]
    tensors = ", ".join(f"{s.role}={s.weight_name}" for s in members(fam))
    return f"family {key!r} ({fam.kind}, layer {fam.layer}, model {plan.model_class or '?'}: {tensors})"


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tie_cuts(plan: Plan, cuts: dict[str, Cut]) -> None:
    """Tied families remove the same heads: those removable in all of them."""
    groups: dict[str, list[str]] = {}
    for key, fam in plan.families.items():
        if fam.tie:
            groups.setdefault(fam.tie, []).append(key)
    for keys in groups.values():
        common = set.intersection(*(set(cuts[k].remove) | set(cuts[k].kept_zero) for k in keys))
        for k in keys:
            cut, fam = cuts[k], plan.families[k]
            Heads.realise(fam, cut, sorted(common), cut.folds)
            cut.note = (cut.note + "; " if cut.note else "") + f"tied ({fam.tie}) with {len(keys) - 1} other families"


def merged_removals(plan: Plan, rems: dict[str, dict]) -> list[dict[str, tuple[int, list[int]]]]:
    """Removals as rounds of ``{tensor: (axis, indices)}``: a tensor shared by tied families (their
    coupled table) is sliced once; one tensor cut along two axes (heads and hidden dims) in two rounds."""
    out: dict[tuple[str, int], list[int]] = {}
    for key, rem in rems.items():
        for name, (axis, idx) in rem.items():
            if (name, axis) in out and out[name, axis] != idx:
                raise StripError(f"strip: {name} is shared by families that remove different indices "
                                 f"({describe(plan, key)}); the Plan's ties are inconsistent: re-run analyze")
            out[name, axis] = idx
    rounds: list[dict] = []
    for (name, axis), idx in out.items():
        free = next((r for r in rounds if name not in r), None)
        if free is None:
            rounds.append(free := {})
        free[name] = (axis, idx)
    return rounds


def _remove_with_tp(model, plan: Plan, key: str, fam, rem: dict, dg) -> str:
    """Remove through torch-pruning where eligible; a group that differs from the Plan is refused."""
    why = tp_eligible(model, fam) or (dg if isinstance(dg, str) else None)
    if why is None:
        try:
            why = tp_remove(dg, model, fam, rem)
        except GroupMismatch as exc:  # torch-pruning couples a tensor the Plan does not know: no guessing
            raise StripError(f"strip: torch-pruning's dependency group for {describe(plan, key)} differs from the "
                             f"Plan: {exc}. The Plan misses a coupled tensor; the model was left unchanged. "
                             f"Re-run analyze, or strip with backend='slice' only if you know the extra tensors "
                             f"do not depend on these heads / neurons") from exc
    return "torch_pruning" if why is None else f"slice ({why})"


def _graph(model: nn.Module, example_inputs: Any):
    """torch-pruning's dependency graph, or why it could not be built (its tracer's limits)."""
    try:
        return dependency_graph(model, example_inputs)
    except Exception as exc:  # a model torch-pruning cannot trace: the Plan's slicing still applies
        return f"torch-pruning could not trace the model ({type(exc).__name__}: {str(exc)[:120]})"


def strip_pass(model: nn.Module, plan: Plan, example_inputs: Any, backend: str, atol: float) -> StripReport:
    before = _count(model)
    fams = [(key, fam, HANDLERS[fam.kind]) for key, fam in plan.all_families().items()]
    cuts: dict[str, Cut] = {key: h.decide(model, fam, atol) for key, fam, h in fams}  # untouched weights
    tie_cuts(plan, cuts)
    even_widths(model, plan, cuts)
    report = StripReport(backend=backend)
    for key, fam, h in fams:  # fold constants, zero placeholders, swap MHA for a slim module
        apply_folds(model, cuts[key], h.fold_into(fam))
        zero_placeholder(model, fam, cuts[key], h)
        if fam.kind == ATTENTION and cuts[key].remove:
            replaced = replace_mha(model, fam)
            if replaced:
                report.replaced[replaced] = "SlimMultiheadAttention"
    rems = {key: removals(model, fam, cuts[key], h) for key, fam, h in fams}
    use_tp = backend != "slice" and example_inputs is not None
    dg = _graph(model, example_inputs) if use_tp and any(
        rems[k] and tp_eligible(model, f) is None for k, f, _ in fams) else None
    sliced: dict[str, dict] = {}
    for key, fam, h in fams:  # remove
        cut = cuts[key]
        how = "nothing" if not rems[key] else (_remove_with_tp(model, plan, key, fam, rems[key], dg)
                                               if use_tp else "slice")
        if "did not finish" in how:  # one timeout is enough: the rest are sliced without waiting again
            dg = f"torch-pruning timed out on {key}"
        if how != "torch_pruning":
            sliced[key] = rems[key]
        report.families[key] = {"kind": fam.kind, "layer": fam.layer, "before": cut.granules, "kept": cut.kept,
                                "folded": sorted(g for g, _ in cut.folds), "placeholder": cut.placeholder,
                                "removed_by": how, "note": cut.note, "kv_kept": None, **h.record(fam, cut)}
    for step in merged_removals(plan, sliced):
        slice_params(model, step)
    for key, fam, h in fams:  # attributes the forwards read
        if fam.kind == ATTENTION and cuts[key].remove:
            keep_heads(model, fam, cuts[key].kept)
        h.finish(model, fam, cuts[key])
        old, new = h.quantities(fam, cuts[key])
        for fqn, attrs in update_attributes(model, fam, old, new, h).items():
            report.attributes.setdefault(fqn, {}).update(attrs)
    report.plan = Plan.from_families({key: h.shrunk(fam, cuts[key], _shrunk_slices(fam, rems[key]))
                                      for key, fam, h in fams}, model_class=plan.model_class)
    renumber(report.plan, plan, cuts)
    note = update_config(model, plan, cuts)
    for key in (k for k, f in plan.families.items() if f.kind == EXPERTS and note):
        report.families[key]["note"] = "; ".join(filter(None, [report.families[key]["note"], note]))
    report.params_before, report.params_after = before, _count(model)
    return report


def _shrunk_slices(fam, rem: dict) -> dict:
    out = {s.role: shrunk_slice(s, rem) for s in fam.slices}
    out.update({f"coupled:{c.weight_name}": shrunk_slice(c, rem) for c in fam.coupled})
    return out
