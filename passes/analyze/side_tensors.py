"""Per-head tensors outside q/k/v/out: found where they join the attention scores, traced to parameters.

Whatever is added to (or multiplied into) the scores between the ``q @ k^T`` product and the
softmax, and the ``attn_mask`` of an sdpa, is a *term*. A term that is the same for every head
(a padding or causal mask broadcast over heads) needs nothing. A term that differs per head (a
relative-position bias table with one column per head, T5 / Swin / MPNet; a head-wise logit scale)
is traced back to the floating-point parameters and buffers it is computed from: for each head
``h``, autograd of ``sum(term * [head == h] * R)`` (random ``R``) says which entries of each leaf
tensor reach head ``h``. A leaf whose entries split into disjoint, equal runs per head along one
axis is *coupled*: ``Slice`` on that axis, removed with the heads. A leaf that reaches every head
alike is shared (nothing to do). A per-head term with no such leaf (ALiBi slopes computed from
constants) makes the heads *frozen*: strip cannot keep it consistent, so the heads stay.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.fx import Node

from passes.analyze.channels import NodeValues, _replay
from passes.analyze.plan import AttentionFamily, Slice
from passes.analyze.trace import ATTENTION_OPS, LAYOUT_OPS, Graph, is_pointwise, op_name, shape_of

MAX_NODES = 600  # ancestors followed back from a term


def _terms(g: Graph, site, fam: AttentionFamily, values: NodeValues) -> list[tuple[Node, torch.Tensor]]:
    """``(term, head id of every element where it joins)`` along the site's score path."""
    first = site.walk[0]
    if op_name(first) in ATTENTION_OPS:  # sdpa: the mask broadcasts to (batch, heads, q, k)
        q, k = first.args[0], first.args[1]
        shape = (shape_of(q)[0], fam.num_heads, shape_of(q)[-2], shape_of(k)[-2])
        ids = torch.arange(fam.num_heads).view(1, -1, 1, 1).expand(shape)
        return [(site.mask, ids)] if isinstance(site.mask, Node) else []
    shp = shape_of(first)
    ids = torch.arange(fam.num_heads).view(1, -1, 1, 1).expand(shp) if len(shp) == 4 else \
        (torch.arange(shp[0]) % fam.num_heads).view(-1, 1, 1).expand(shp)
    out = [(first.args[0], ids)] if op_name(first) == "baddbmm" and isinstance(first.args[0], Node) else []
    for prev, node in zip(site.walk, site.walk[1:-1]):
        if op_name(node) in LAYOUT_OPS:
            ids = _replay(node, {prev: ids}, values)
            if ids is None:
                return out
        elif is_pointwise(node):
            ids = ids.expand(shape_of(node)) if shape_of(node) != tuple(ids.shape) else ids
            out += [(a, ids) for a in node.args if isinstance(a, Node) and a is not prev]
    return out


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


def side_tensors(g: Graph, model: nn.Module, site, fam: AttentionFamily,
                 values: NodeValues) -> tuple[list[Slice], str]:
    """Coupled per-head tensors of ``fam`` and, if some per-head term cannot be sliced, why (frozen)."""
    own = {s.weight_name for s in fam.slices}
    stop = {p.node for p in g.projections() if p.weight in own}
    coupled: dict[str, Slice] = {}
    for term, ids in _terms(g, site, fam, values):
        val = values[term]
        if not isinstance(val, torch.Tensor) or not val.is_floating_point():
            continue
        leaves, inner = _leaves(g, term, stop)
        names = {leaf: _leaf_name(g, leaf) for leaf in leaves}
        from_own = term in stop or any(a in stop for n in inner for a in n.all_input_nodes)
        frozen = (f"per-head term {term.name} ({g.module_of(term) or 'top module'}) is computed from constants "
                  f"or inputs (e.g. ALiBi slopes), not from a tensor strip could slice")
        if not leaves:
            if not from_own and not _shared(val, ids, fam.num_heads):
                return [], frozen
            continue
        before = len(coupled)
        env, out = _rerun(term, leaves, inner, values)
        weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(0))
        for leaf in leaves:
            grads = []
            for h in range(fam.num_heads):
                gr = torch.autograd.grad((out.expand(ids.shape) * (ids == h) * weights).sum(), env[leaf],
                                         retain_graph=True, allow_unused=True)[0]
                grads.append(torch.zeros_like(env[leaf]) if gr is None else gr)
            if all(torch.equal(gr != 0, grads[0] != 0) for gr in grads[1:]):
                continue  # reaches every head alike: shared, nothing to slice
            split, name = _split(grads), names[leaf]
            if split is None or name is None or not _addressable(model, name):
                why = "mixes heads" if split is None else "is not a module attribute"
                return [], f"per-head tensor {name or leaf.name} read by {term.name} {why}; strip cannot slice it"
            axis, runs = split
            fqn, _, param = name.rpartition(".")
            coupled[name] = Slice.at(fqn, param, axis, [i for r in runs for i in r], "coupled")
        if len(coupled) == before and not from_own and not _shared(val, ids, fam.num_heads):
            return [], frozen  # differs per head, yet every tensor behind it reaches all heads alike
    return list(coupled.values()), ""


def _shared(val: torch.Tensor, ids: torch.Tensor, heads: int) -> bool:
    """The term's values are the same for every head (a mask broadcast over heads)."""
    full = val.expand(ids.shape)
    per = [full[ids == h] for h in range(heads)]
    return all(torch.equal(p, per[0]) for p in per[1:])


def _addressable(model: nn.Module, name: str) -> bool:
    fqn, _, param = name.rpartition(".")
    try:
        return isinstance(getattr(model.get_submodule(fqn) if fqn else model, param), torch.Tensor)
    except AttributeError:
        return False
