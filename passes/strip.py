"""strip: physically remove the heads / neurons a folded LEAP model zeroed, exactly.

``strip(model, plan)`` keeps outputs equal (up to float rounding) in eval mode:

1. decide per family what is provably removable (``passes.strip_fold``: zero out-columns /
   down-columns go; zero v-rows / up-rows go after folding their constant into the out / down
   bias; zero q/k with live v stays; GQA removes only whole kv groups);
2. fold those constants; a family left with nothing keeps one *zeroed* granule (adds exactly 0)
   so no weight or activation has width 0 (onnxruntime rejects zero-size initializers);
3. remove the indices: through torch-pruning's ``DependencyGraph`` when ``example_inputs`` are
   given and the family is plain ``nn.Linear`` (its propagated group is checked against the
   Plan first), else by slicing the Plan's slices (fused q/k/v, HF Conv1D, GQA, MHA);
4. update the attributes the forwards read (head counts, ``all_head_size``, GPT-2
   ``split_size``, ...; table in ``passes.strip_surgery``). ``nn.MultiheadAttention`` with
   removed heads becomes ``passes.strip_mha.SlimMultiheadAttention``.

The result carries ``model.leap_strip_summary`` (:class:`StripSummary`): kept heads / neurons
per family (indices into the *original* model), attributes changed, modules replaced, the
updated Plan. HF configs are shared by all layers and are left unchanged.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from passes.plan import AttentionFamily, Plan, Slice
from passes.strip_fold import Cut, apply_folds, decide_attention, decide_ffn, zero_placeholder
from passes.strip_surgery import (quantities, removals, replace_mha, slice_params, tp_eligible,
                                  tp_remove, update_attributes)

BACKENDS = ("auto", "torch_pruning", "slice")


@dataclass
class StripSummary:
    """What strip did; indices refer to the original (dense) model."""

    backend: str
    families: dict[str, dict] = field(default_factory=dict)
    attributes: dict[str, dict] = field(default_factory=dict)  # module fqn -> {attr: value}
    replaced: dict[str, str] = field(default_factory=dict)     # module fqn -> new class name
    params_before: int = 0
    params_after: int = 0
    plan: Optional[Plan] = None

    def kept(self, kind: Optional[str] = None) -> dict[str, int]:
        return {k: len(v["kept"]) for k, v in self.families.items() if kind in (None, v["kind"])}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(dataclasses.replace(self, plan=None))
        d["plan"] = self.plan.to_dict() if self.plan is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StripSummary":
        d = dict(d)
        plan = d.pop("plan", None)
        return cls(**d, plan=Plan.from_dict(plan) if plan else None)

    def table(self) -> str:
        lines = [f"strip ({self.backend}): params {self.params_before} -> {self.params_after}"]
        for fqn, f in self.families.items():
            ph = " (+1 zeroed placeholder)" if f["placeholder"] is not None else ""
            lines.append(f"  {f['kind']:9s} {fqn}: {f['before']} -> {len(f['kept'])}{ph}"
                         f"  folded {len(f['folded'])}  via {f['removed_by']}")
        return "\n".join(lines)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def strip(model: nn.Module, plan: Plan, example_inputs: Any = None, *, backend: str = "auto",
          atol: float = 0.0) -> nn.Module:
    """Remove provably dead heads / neurons in place; returns ``model``.

    ``example_inputs`` (a tensor, tuple, or dict of kwargs) are only needed by the
    torch-pruning backend. ``atol``: a weight slice counts as zero when ``max|w| <= atol``
    (default 0.0: exact zeros, as ``fold()`` produces)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch_pruning" and example_inputs is None:
        raise ValueError("backend='torch_pruning' needs example_inputs (what analyze() traced)")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("model still has parametrizations (LeapMask); call leap_fx.fold(model) first")
    before = _count(model)
    fams = list(plan.families.items())  # keyed by plan key: two families may share an ancestor fqn
    cuts: dict[str, Cut] = {}
    for key, fam in fams:  # 1. decide on the untouched weights
        cuts[key] = (decide_attention if isinstance(fam, AttentionFamily) else decide_ffn)(
            model, fam, atol)
    summary = StripSummary(backend=backend)
    for key, fam in fams:  # 2. fold constants, zero placeholders, swap MHA for a slim module
        cut = cuts[key]
        apply_folds(model, cut, fam.out if isinstance(fam, AttentionFamily) else fam.down)
        zero_placeholder(model, fam, cut)
        if isinstance(fam, AttentionFamily) and cut.remove:
            replaced = replace_mha(model, fam)
            if replaced:
                summary.replaced[replaced] = "SlimMultiheadAttention"
    plan_removals = {key: removals(model, fam, cuts[key]) for key, fam in fams}
    use_tp = backend != "slice" and example_inputs is not None
    dg = _dependency_graph(model, example_inputs) if use_tp and any(
        plan_removals[k] and tp_eligible(model, f) is None for k, f in fams) else None
    for key, fam in fams:  # 3. remove
        cut, rem = cuts[key], plan_removals[key]
        how = "nothing" if not rem else "slice"
        if rem and use_tp:
            why = tp_eligible(model, fam) or tp_remove(dg, model, fam, rem)
            how = "torch_pruning" if why is None else f"slice ({why})"
        if rem and not how.startswith("torch_pruning"):
            slice_params(model, rem)
        old, new = quantities(fam, cut)  # 4. attributes
        for fqn, attrs in update_attributes(model, fam, old, new).items():
            summary.attributes.setdefault(fqn, {}).update(attrs)
        _record(summary, key, fam, cut, how)
    _update_slim_heads(model, plan, cuts)
    summary.plan = _shrunk_plan(plan, cuts, plan_removals)
    summary.params_before, summary.params_after = before, _count(model)
    previous = getattr(model, "leap_strip_summary", None)
    model.leap_strip_summary = _compose(previous, summary) if previous is not None else summary
    return model


def _dependency_graph(model: nn.Module, example_inputs: Any):
    """torch-pruning traces autograd: enable grad on every parameter while it builds."""
    import torch_pruning as tp

    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "unwrapped parameters": we only prune Linear groups
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _record(summary: StripSummary, key: str, fam, cut: Cut, how: str) -> None:
    kept = [g for g in range(cut.granules) if g not in set(cut.remove)]
    summary.families[key] = {
        "kind": fam.kind, "layer": fam.layer, "before": cut.granules, "kept": kept,
        "kv_kept": ([j for j in range(fam.num_kv_heads) if j not in set(cut.kv_remove)]
                    if isinstance(fam, AttentionFamily) else None),
        "folded": sorted(g for g, _ in cut.folds), "placeholder": cut.placeholder,
        "removed_by": how, "note": cut.note}


def _update_slim_heads(model: nn.Module, plan: Plan, cuts: dict[str, Cut]) -> None:
    from passes.strip_mha import SlimMultiheadAttention

    for key, fam in plan.families.items():
        if not isinstance(fam, AttentionFamily):
            continue
        mod = model.get_submodule(fam.q.fqn)
        if isinstance(mod, SlimMultiheadAttention) and cuts[key].remove:
            mod.kept_heads = [mod.kept_heads[i] for i in cuts[key].kept]


def _shrunk_slice(sl: Slice, rem: dict) -> Slice:
    axis, idx = rem.get(sl.weight_name, (sl.axis, []))
    before = sum(i < sl.start for i in idx)
    inside = sum(sl.start <= i < sl.start + sl.size for i in idx)
    return dataclasses.replace(sl, start=sl.start - before, size=sl.size - inside)


def _shrunk_plan(plan: Plan, cuts: dict[str, Cut], rems: dict[str, dict]) -> Plan:
    fams = {}
    for key, fam in plan.families.items():
        cut, rem = cuts[key], rems[key]
        new = {sl.role: _shrunk_slice(sl, rem) for sl in fam.slices}
        if isinstance(fam, AttentionFamily):
            fams[key] = dataclasses.replace(fam, num_heads=fam.num_heads - len(cut.remove),
                                            num_kv_heads=fam.num_kv_heads - len(cut.kv_remove), **new)
        else:
            fams[key] = dataclasses.replace(fam, width=fam.width - len(cut.remove), **new)
    return Plan(families=fams, model_class=plan.model_class)


def _compose(prev: StripSummary, cur: StripSummary) -> StripSummary:
    """A second strip of an already stripped model: express kept indices in original terms."""
    for fqn, f in cur.families.items():
        old = prev.families.get(fqn)
        if old is not None:
            f["before"] = old["before"]
            f["kept"] = [old["kept"][i] for i in f["kept"]]
            if f["kv_kept"] is not None and old.get("kv_kept") is not None:
                f["kv_kept"] = [old["kv_kept"][i] for i in f["kv_kept"]]
    for fqn, attrs in prev.attributes.items():
        cur.attributes[fqn] = {**attrs, **cur.attributes.get(fqn, {})}
    cur.replaced = {**prev.replaced, **cur.replaced}
    cur.params_before = prev.params_before
    return cur
