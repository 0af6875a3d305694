"""Per-head tensors outside q/k/v/out: found where they join the attention scores, traced to parameters.

Whatever is added to (or multiplied into) the scores between the ``q @ k^T`` product and the
softmax, and the ``attn_mask`` of an sdpa, is a *term*. A term that is the same for every head
(a padding or causal mask broadcast over heads) needs nothing. A term that differs per head (a
relative-position bias table with one column per head, T5 / Swin / MPNet; a head-wise logit scale;
sink columns concatenated to the scores, one per head, GPT-OSS)
is traced back to the floating-point parameters and buffers it is computed from: for each head
``h``, autograd of ``sum(term * [head == h] * R)`` (random ``R``) says which entries of each leaf
tensor reach head ``h``. A leaf whose entries split into disjoint, equal runs per head along one
axis is *coupled*: ``Slice`` on that axis, removed with the heads. A leaf that reaches every head
alike is shared (recorded: torch-pruning may see it as coupled). A per-head term with no such leaf
(ALiBi slopes computed from constants), a leaf that mixes heads, or a leaf that also feeds a projection
outside the term (WavLM reads the residual stream as heads) makes the heads *frozen*: strip cannot keep
them consistent, so they stay. ``path_sides.py`` brings the same question to the q / k / v paths.

A term can also carry heads in its *shape* only: T5's first cross-attention adds
``zeros(1, n_heads, q, k)`` and the decoder hands that very tensor to every later cross-attention.
Its values are the same for every head (nothing to slice), but its head axis is sized by one module's
head count. Such a tensor (the term, or a head-shaped operand of the elementwise ops that build it),
when neither computed from the family's own projections nor from a coupled tensor, is *read* by the
family (``AttentionFamily.reads``, named ``module:node``): ``analyze`` ties the families that read one
(same heads everywhere, so the recomputed shape fits them all), and freezes them when it is made
outside every such family (strip updates head counts only inside the families' modules).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.fx import Node

from passes.analyze.channels import NORM_OPS, NodeValues
from passes.analyze.ops import LAYOUT_OPS, is_pointwise, op_name
from passes.analyze.path_sides import path_terms
from passes.analyze.plan import AttentionFamily, Slice
from passes.analyze.score_terms import score_terms
from passes.analyze.trace import Graph

MAX_NODES = 600  # ancestors followed back from a term


def _leaves(g: Graph, term: Node, stop: set) -> tuple[list[Node], list[Node]]:
    """(floating parameter / buffer placeholders behind ``term``, the nodes in between), breadth first,
    not looking behind the family's own projections (``stop``: their outputs are given)."""
    seen, queue, leaves = {term}, [term], []
    while queue and len(seen) < MAX_NODES:
        n = queue.pop(0)
        if n.op == "placeholder":
            val = n.meta.get("val")
            if n.name not in g.user_inputs and isinstance(val, torch.Tensor) and val.is_floating_point():
                leaves.append(n)
            continue
        if n in stop:
            continue
        for a in n.all_input_nodes:
            if a not in seen:
                seen.add(a)
                queue.append(a)
    inner = sorted((n for n in seen if n.op == "call_function" and n not in stop), key=g.order.get)
    return leaves, inner


def _leaf_name(g: Graph, leaf: Node) -> Optional[str]:
    sig = g.ep.graph_signature
    return sig.inputs_to_parameters.get(leaf.name) or sig.inputs_to_buffers.get(leaf.name)


def _rerun(term: Node, leaves: list[Node], inner: list[Node], values: NodeValues) -> tuple[dict, torch.Tensor]:
    env = {leaf: values[leaf].detach().clone().requires_grad_(True) for leaf in leaves}

    def look(a):  # recorded values are copied: an in-place op must not change them
        if a not in env:
            v = values[a]
            env[a] = v.clone() if isinstance(v, torch.Tensor) else v
        return env[a]
    with torch.enable_grad():
        for n in inner:
            env[n] = n.target(*torch.fx.node.map_arg(n.args, look), **torch.fx.node.map_arg(n.kwargs, look))
    return env, env[term]


def _split(grads: list[torch.Tensor]) -> Optional[tuple[int, list[list[int]]]]:
    """``(axis, per-head indices)`` when the heads' gradients occupy disjoint equal runs on one axis."""
    for axis in range(grads[0].dim()):
        runs = []
        for gr in grads:
            other = [d for d in range(gr.dim()) if d != axis]
            hit = gr.abs().sum(other) if other else gr.abs()
            runs.append([int(i) for i in hit.nonzero().flatten()])
        flat = [i for r in runs for i in r]
        if all(runs) and len({len(r) for r in runs}) == 1 and len(set(flat)) == len(flat):
            return axis, runs
    return None


class Found:
    """What the terms of one family revealed: coupled slices (by tensor name) and head-shared tensors."""

    def __init__(self):
        self.coupled: dict[str, Slice] = {}
        self.shared: set[str] = set()
        self.reads: dict[str, None] = {}  # computed per-head-shaped tensors, "module:node", in order

    def couple(self, name: str, axis: int, runs: list[list[int]]) -> str:
        """Record ``runs[h]`` (indices along ``axis``) as head ``h``'s part of tensor ``name``; a tensor met again
        (one per-channel tensor after a fused q|k|v, LeViT's BatchNorm) gains the new runs per head. Returns
        why it cannot be sliced, or ""."""
        old = self.coupled.get(name)
        if old is not None:
            unit, have = old.size // len(runs), old.positions()
            if old.axis != axis:
                return f"per-head tensor {name} splits into heads along two axes; strip cannot slice it"
            new = {i for r in runs for i in r}
            if new <= set(have):
                return ""
            if new & set(have):
                return f"per-head tensor {name} is read by two heads at the same index; strip cannot slice it"
            runs = [have[h * unit:(h + 1) * unit] + r for h, r in enumerate(runs)]
        fqn, _, param = name.rpartition(".")
        self.coupled[name] = Slice.at(fqn, param, axis, [i for r in runs for i in r], "coupled")
        return ""


def analyze_term(g: Graph, model: nn.Module, term: Node, ids: torch.Tensor, heads: int, values: NodeValues,
                 stop: set, found: Found) -> str:
    """Classify the leaves behind one per-element-head-labelled ``term`` and record the computed
    head-shaped tensors it is built from; returns why frozen, or ""."""
    why = _classify(g, model, term, ids, heads, values, stop, found)
    if not why:
        for node in _head_shaped(term, ids, values, stop):
            if _computed(g, node, stop, found):
                found.reads[f"{g.module_of(node)}:{node.name}"] = None
    return why


def _head_axis(val, ids: torch.Tensor) -> bool:
    """``val`` (broadcast against ``ids``) has an axis of size > 1 along which the head label changes:
    its shape follows the head count."""
    if not isinstance(val, torch.Tensor) or val.dim() > ids.dim():
        return False
    lead = ids.dim() - val.dim()
    for d in range(lead, ids.dim()):
        if val.shape[d - lead] > 1 and ids.shape[d] > 1 and \
                not torch.equal(ids, ids.narrow(d, 0, 1).expand_as(ids)):
            return True
    return False


def _head_shaped(term: Node, ids: torch.Tensor, values: NodeValues, stop: set) -> list[Node]:
    """``term`` and the operands of the elementwise ops building it that carry the head axis."""
    if term in stop or not _head_axis(values[term], ids):
        return []
    out, queue = [term], [term]
    while queue:
        n = queue.pop(0)
        if n.op != "call_function" or not (is_pointwise(n) or op_name(n) == "where"):  # where.ScalarOther: untagged
            continue
        for a in n.all_input_nodes:
            if a not in out and a not in stop and a.op == "call_function" and _head_axis(values[a], ids):
                out.append(a)
                queue.append(a)
    return out


def _computed(g: Graph, node: Node, stop: set, found: Found) -> bool:
    """``node`` is computed from neither the family's own projections nor a coupled tensor (whose
    slicing already resizes it)."""
    leaves, inner = _leaves(g, node, stop)
    if any(a in stop for n in inner for a in n.all_input_nodes):
        return False
    return not any(_leaf_name(g, leaf) in found.coupled for leaf in leaves)


def _classify(g: Graph, model: nn.Module, term: Node, ids: torch.Tensor, heads: int, values: NodeValues,
              stop: set, found: Found) -> str:
    """Classify the leaves behind ``term`` (coupled, shared or frozen); returns why frozen, or ""."""
    val = values[term]
    if not isinstance(val, torch.Tensor) or not val.is_floating_point():
        return ""
    leaves, inner = _leaves(g, term, stop)
    names = {leaf: _leaf_name(g, leaf) for leaf in leaves}
    from_own = term in stop or any(a in stop for n in inner for a in n.all_input_nodes)
    frozen = (f"per-head term {term.name} ({g.module_of(term) or 'top module'}) is computed from constants "
              f"or inputs (e.g. ALiBi slopes), not from a tensor strip could slice")
    env, out = _rerun(term, leaves, inner, values) if leaves else ({}, val)
    if not leaves or not out.requires_grad:  # a constant: per-head values could not be sliced
        return frozen if not from_own and not _shared(val, ids, heads) else ""
    added = False
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(0))
    for leaf in leaves:
        grads = []
        for h in range(heads):
            gr = torch.autograd.grad((out.expand(ids.shape) * (ids == h) * weights).sum(), env[leaf],
                                     retain_graph=True, allow_unused=True)[0]
            grads.append(torch.zeros_like(env[leaf]) if gr is None else gr)
        name = names[leaf]
        if all(torch.equal(gr != 0, grads[0] != 0) for gr in grads[1:]):
            if name is not None and bool(grads[0].any()):
                found.shared.add(name)  # reaches every head alike: nothing to slice
            continue
        split = _split(grads)
        if split is None or name is None or not _addressable(model, name):
            why = "mixes heads" if split is None else "is not a module attribute"
            return f"per-head tensor {name or leaf.name} read by {term.name} {why}; strip cannot slice it"
        feeds = _feeds_projection(g, leaf)
        if feeds is not None:
            return (f"{name} splits into heads but also feeds {feeds} (the residual stream read as heads): "
                    f"removing a head would cut channels other modules use")
        why = found.couple(name, *split)
        if why:
            return why
        added = True
    if not added and not from_own and not _shared(val, ids, heads):
        return frozen  # differs per head, yet every tensor behind it reaches all heads alike
    return ""


def side_tensors(g: Graph, model: nn.Module, site, fam: AttentionFamily, values: NodeValues) -> \
        tuple[list[Slice], tuple[str, ...], tuple[str, ...], str]:
    """``(coupled per-head tensors, head-shared tensors, computed head-shaped tensors read, why frozen
    or "")`` of ``fam`` at ``site``."""
    own = {s.weight_name for s in fam.slices}
    stop = {p.node for p in g.projections() if p.weight in own}
    found = Found()
    terms, why = path_terms(g, site, fam, values, stop)
    if why:
        return [], (), (), why
    for term, ids, heads in score_terms(site, fam, values) + terms:
        why = analyze_term(g, model, term, ids, heads, values, stop, found)
        if why:
            return [], (), (), why
    return list(found.coupled.values()), tuple(sorted(found.shared)), tuple(found.reads), ""


def _feeds_projection(g: Graph, leaf: Node, limit: int = 300) -> Optional[str]:
    """A projection whose input is computed from ``leaf`` through elementwise, layout or norm ops (the
    tensor is part of the residual stream, not of one attention's heads), else None."""
    queue, seen = [leaf], {leaf}
    while queue and len(seen) < limit:
        n = queue.pop(0)
        for u in n.users:
            p = g.projection(u)
            if p is not None and p.x is n:
                return p.weight
            if u not in seen and (is_pointwise(u) or op_name(u) in LAYOUT_OPS or op_name(u) in NORM_OPS):
                seen.add(u)
                queue.append(u)
    return None


def _shared(val: torch.Tensor, ids: torch.Tensor, heads: int) -> bool:
    """The term's values are the same for every head (a mask broadcast over heads; ids < 0: no head)."""
    full = val.expand(ids.shape)
    per = [full[ids == h] for h in range(heads)]
    return all(torch.equal(p, per[0]) for p in per[1:])


def _addressable(model: nn.Module, name: str) -> bool:
    fqn, _, param = name.rpartition(".")
    try:
        return isinstance(getattr(model.get_submodule(fqn) if fqn else model, param), torch.Tensor)
    except AttributeError:
        return False
