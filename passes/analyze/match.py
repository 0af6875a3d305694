"""``analyze``: trace a model and collect its attention and feed-forward families into a ``Plan``.

LEAP prunes *groups* of weights (heads, FFN neurons; paper Sec. 3, Eq. 1-2): a head is the
``head_dim`` rows of q, k, v and the matching columns of the out projection; a neuron is one row
of up (and gate) and one column of down. The matchers live beside this file: ``attention.py``
(sdpa or matmul-softmax-matmul), ``side_tensors.py`` (per-head tensors outside q/k/v/out) and
``ffn.py`` (up -> activation -> down, gated or not) and ``experts.py`` (mixture of experts: every routed
expert a feed-forward family on its slices of the fused expert tensors, keyed ``<experts module>.<e>``,
and per layer an ``ExpertsFamily`` of whole experts with the router, keyed by the block).

One family per set of weights, however many times the module runs (shared layers, ALBERT): the
first call gives its layer. Families whose heads read one shared per-head tensor get one ``tie``.
Every attention site, MLP-like site and 3-D parameter read per expert that could not be matched is listed
in ``Plan.unmatched`` with its reason; ``strict=True`` raises :class:`AnalyzeError` instead.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from passes.analyze.activations import ACTIVATIONS
from passes.analyze.attention import match_attention, sites
from passes.analyze.channels import NodeValues
from passes.analyze.experts import match_experts
from passes.analyze.ffn import match_ffn, mlp_like
from passes.analyze.ffn_open import match_open_ffn, mlp_shaped
from passes.analyze.inputs import split_inputs
from passes.analyze.pinned import trace_or_pin
from passes.analyze.plan import ATTENTION, EXPERTS, FEED_FORWARD, Plan, Unmatched
from passes.analyze.residual import find_residual
from passes.analyze.side_tensors import side_tensors
from passes.analyze.trace import Graph, TraceError, traced_inputs

_MATCH_ERRORS = (RuntimeError, TypeError, IndexError, KeyError, ValueError)


class AnalyzeError(ValueError):
    """The model could not be traced, no family was found, or (strict) some site was not matched;
    ``unmatched`` lists the sites seen but not matched (empty when tracing failed)."""

    def __init__(self, message: str, unmatched: Optional[list] = None):
        super().__init__(message)
        self.unmatched = list(unmatched or [])


def _blocks(fqn: str) -> list[str]:
    """Numbered container items holding ``fqn``, innermost first (``encoder.block.0.layer.1`` ...)."""
    parts = fqn.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1) if parts[i - 1].isdigit()]


def _block(fqn: str) -> Optional[str]:
    """The innermost numbered container item (``encoder.layer.3``) holding ``fqn``."""
    found = _blocks(fqn)
    return found[0] if found else None


def _assign_layers(found: list[tuple[int, object]]) -> None:
    """``layer`` = ordinal of the block in forward order (per kind when blocks are unnumbered). A block is
    the innermost numbered item holding families of both kinds (T5's ``block.0`` numbers its sub-layers
    ``layer.0``, ``layer.1``), else the innermost one."""
    found.sort(key=lambda t: t[0])
    fams = [f for _, f in found]
    blocks = []
    for f in fams:
        cands = _blocks(f.fqn)
        both = [b for b in cands if any(o.kind != f.kind and (o.fqn == b or o.fqn.startswith(b + ".")) for o in fams)]
        blocks.append((both or cands or [None])[0])
    if all(b is not None for b in blocks):
        order = list(dict.fromkeys(blocks))
        for f, b in zip(fams, blocks):
            f.layer = order.index(b)
        return
    seen: dict[str, int] = {}
    for f in fams:
        f.layer = seen[f.kind] = seen.get(f.kind, -1) + 1


def _attention(g: Graph, model, values: NodeValues, found: list, unmatched: list) -> None:
    for site in sites(g):
        try:
            fam, why = match_attention(g, site, values)
            if fam is not None:
                coupled, shared, reads, frozen = side_tensors(g, model, site, fam, values)
                fam = dataclasses.replace(fam, coupled=fam.coupled + tuple(coupled), reads=reads,
                                          shared=tuple(sorted({*fam.shared, *shared})), frozen=fam.frozen or frozen)
        except _MATCH_ERRORS as exc:  # an unusual graph near this site: report it, keep going
            fam, why = None, f"{type(exc).__name__}: {exc}"
        if fam is None:
            module = g.module_of(site.anchor)
            unmatched.append(Unmatched(ATTENTION, _block(module) or "", module, site.anchor.name, why))
        else:
            found.append((g.order[site.anchor], fam))


def _feed_forward(g: Graph, values: NodeValues, used: set, found: list, unmatched: list) -> None:
    for down in g.projections():
        if down.weight in used:
            continue
        try:
            fam, why = match_ffn(g, down)
            if fam is None:  # any elementwise ops / per-neuron tensors between up and down (ffn_open.py)
                fam, more = match_open_ffn(g, down, values)
                why = why if fam is not None or not mlp_shaped(g, down) else f"{why}; {more}"
        except _MATCH_ERRORS as exc:
            fam, why = None, f"{type(exc).__name__}: {exc}"
        if fam is not None and used.intersection(s.weight_name for s in fam.slices):
            fam, why = None, "its up projection already belongs to another family"
        if fam is not None:
            found.append((g.order[down.node], fam))
            used.update(s.weight_name for s in fam.slices)
        elif mlp_like(g, down) or mlp_shaped(g, down):
            unmatched.append(Unmatched(FEED_FORWARD, _block(down.module) or "", down.module, down.node.name, why))


def _experts(g: Graph, found: list, unmatched: list) -> list:
    """Mixture-of-experts layers (``experts.py``) into ``found``; misses into ``unmatched``. Returns the
    matches (each layer's whole-expert family with its routed experts' families)."""
    try:
        matches, misses = match_experts(g)
    except _MATCH_ERRORS as exc:  # an unusual graph: report it, keep the rest of the Plan
        matches, misses = [], [("", None, f"expert matching failed: {type(exc).__name__}: {exc}")]
    owned = {s.weight_name for _, f in found for s in list(f.slices) + list(f.coupled)}  # e.g. a per-head table
    for module, node, why in misses:
        if node is not None and any(g.param_of(a) in owned for a in node.all_input_nodes):
            continue  # a 3-D tensor another family already owns (a relative-position table [positions, heads, d])
        unmatched.append(Unmatched(EXPERTS, _block(module) or "", module, node.name if node is not None else "", why))
    for m in matches:
        found += [(m.order, m.layer)] + [(m.order, f) for f in m.routed]
    return matches


def _key(plan: Plan, fam) -> str:
    """A routed expert is ``<experts module>.<e>``; any other family its module (``:kind`` on a clash)."""
    base = f"{fam.fqn}.{fam.expert}" if fam.kind == FEED_FORWARD and fam.expert is not None else fam.fqn
    key, n = (base if base not in plan.families else f"{base}:{fam.kind}"), 1
    while key in plan.families:
        n, key = n + 1, f"{base}:{fam.kind}{n + 1}"
    return key


def _tie(families: list) -> None:
    """Families reading one coupled tensor, or one computed per-head tensor (``reads``), share their heads.
    The tie is named after the group's first coupled tensor, else the computed tensor most of them read."""
    group: dict[str, str] = {}

    def root(x):
        while group.setdefault(x, x) != x:
            x = group[x]
        return x
    names = {id(f): [c.weight_name for c in f.coupled] + list(f.reads)
             for f in families}
    for fam in families:
        for a in names[id(fam)][1:]:
            group[root(a)] = root(names[id(fam)][0])
    members: dict[str, list] = {}
    for fam in families:
        if names[id(fam)]:
            members.setdefault(root(names[id(fam)][0]), []).append(fam)
    for fams in members.values():
        _freeze_unresizable(fams)
        if len(fams) > 1:
            reads = [r for f in fams for r in f.reads]
            coupled = [c.weight_name for f in fams for c in f.coupled]
            key = coupled[0] if coupled else max(dict.fromkeys(reads), key=reads.count)
            frozen = next((f.frozen for f in fams if f.frozen), "")
            for f in fams:
                f.tie, f.frozen = key, f.frozen or (f"tied to a family with frozen heads: {frozen}" if frozen else "")


def _freeze_unresizable(fams: list) -> None:
    """Freeze ``fams`` (one tie group) when a computed per-head tensor they read is made in a module outside
    all of them: its head axis would keep the old size after strip."""
    def inside(mod: str) -> bool:
        return any(not f.fqn or mod == f.fqn or mod.startswith(f.fqn + ".") for f in fams)
    outside = [r for f in fams for r in f.reads if not inside(r.rpartition(":")[0])]
    if outside:
        where = outside[0].rpartition(":")
        why = (f"per-head tensor {where[2]} is computed in {where[0] or 'the top module'}, outside the attention "
               f"modules whose head counts strip updates: strip cannot resize it")
        for f in fams:
            f.frozen = f.frozen or why


def _unique(found: list, unmatched: list) -> list:
    """One family per set of weights (a module run in several layers is one family)."""
    seen: dict[tuple, object] = {}
    out = []
    for order, fam in sorted(found, key=lambda t: t[0]):
        sig = (fam.kind, tuple(sorted((s.weight_name, tuple(s.positions())) for s in fam.slices)))
        if sig in seen:
            continue
        clash = [f for f in seen.values() if {s.weight_name for s in f.slices} & {s.weight_name for s in fam.slices}]
        if clash:
            unmatched.append(Unmatched(fam.kind, _block(fam.fqn) or "", fam.fqn, "",
                                       f"shares weights with family {clash[0].fqn} but slices them differently"))
            continue
        seen[sig] = fam
        out.append((order, fam))
    return out


def analyze(model: torch.nn.Module, example_inputs, strict: bool = False, residual: bool = False) -> Plan:
    """Trace ``model`` on ``example_inputs`` and return its attention / feed-forward families.

    ``strict=True`` raises ``AnalyzeError`` when any attention / MLP-like site was left unmatched;
    ``residual=True`` also finds the residual stream (``Plan.residual``, ``residual.py``: what pruning
    hidden dimensions touches) and raises ``AnalyzeError`` if the stream cannot be removed from."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"analyze() needs a torch.nn.Module, got {type(model).__name__}")
    split_inputs(example_inputs)  # TypeError for unsupported input forms
    try:
        ep, how = trace_or_pin(model, example_inputs)
    except TraceError as exc:
        raise AnalyzeError(str(exc)) from exc
    g, values = Graph(ep), NodeValues(ep, *traced_inputs(model, example_inputs))
    found, unmatched = [], []
    _attention(g, model, values, found, unmatched)
    used = {s.weight_name for _, f in found for s in list(f.slices) + list(f.coupled)}
    _feed_forward(g, values, used, found, unmatched)  # a per-head tensor's own MLP (Swin-v2's cpb_mlp) is no FFN
    found = _unique(found, unmatched)
    moe = _experts(g, found, unmatched)
    routers = {m.layer.router.fqn for m in moe}  # a router's softmax sits next to the experts' bmm: no attention
    unmatched[:] = [u for u in unmatched if not (u.kind == ATTENTION and u.module in routers)]
    if not found:
        detail = "; ".join(dict.fromkeys(str(u) for u in unmatched)) or "no attention op (sdpa or matmul-softmax-matmul)"
        raise AnalyzeError(
            f"no attention or feed-forward family found in {type(model).__name__}: the model has no "
            f"Linear -> reshape(heads, head_dim) -> attention -> Linear pattern and no Linear -> "
            f"activation ({', '.join(ACTIVATIONS)}) -> Linear back to the input width ({detail}). "
            f"Check that the forward runs the transformer blocks for these example inputs.", unmatched)
    found.sort(key=lambda t: t[0])  # forward order: the Plan's family order
    routed = {id(f) for m in moe for f in m.routed}
    _assign_layers([(o, f) for o, f in found if id(f) not in routed])
    for m in moe:  # a routed expert is in its layer's mixture of experts
        for f in m.routed:
            f.layer = m.layer.layer
    _tie([f for _, f in found if f.kind == ATTENTION])
    plan = Plan(model_class=type(model).__name__, unmatched=unmatched, trace=how)
    keys = {}
    for _, fam in found:
        keys[id(fam)] = key = _key(plan, fam)
        plan.families[key] = fam
    for m in moe:  # link each layer's whole-expert family and its routed experts by Plan key
        m.layer.experts = tuple(keys[id(f)] for f in m.routed)
        for f in m.routed:
            f.router = keys[id(m.layer)]
    if strict and unmatched:
        raise AnalyzeError(f"analyze(strict=True): {len(unmatched)} site(s) of {type(model).__name__} not "
                           f"matched: " + "; ".join(str(u) for u in unmatched[:8]), unmatched)
    if residual:
        plan.residual, why = find_residual(model, g, plan)
        if plan.residual is None:
            raise AnalyzeError(f"{type(model).__name__}: hidden dimensions cannot be removed ({why}); prune "
                               f"heads / neurons only (e.g. CoFi with prune_hidden=False)")
    return plan
