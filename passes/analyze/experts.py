"""Mixture-of-experts families: each routed expert a feed-forward family, each layer's experts an ExpertsFamily.

An expert FFN is read like a dense one (``ffn.py``), on expert projections (``expert_graph.py``): ``down``'s
input is an elementwise function of one or two pieces of up projections run on the same routed rows
(``gate, up = gate_up(x).chunk(2, -1)``; GPT-OSS interleaves them, ``[..., ::2]`` / ``[..., 1::2]``). The
activation is identified numerically against ``ACTIVATIONS``; when it is none of them (GPT-OSS's clamped
SwiGLU) the family keeps ``activation=""`` and the first piece is called the gate. Every expert ``e`` of
the fused tensors gets its own family (slices with ``expert=e``); the router (``expert_graph.router``)
gives the layer's ``ExpertsFamily``. Anything read per expert that does not fit is returned as a miss,
``(module, node, reason)``, so that ``analyze`` lists it in ``Plan.unmatched``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.fx import Node

from passes.analyze.expert_graph import (
    ExpertProjection,
    Router,
    expert_axis,
    expert_projections,
    expert_readers,
    router,
)
from passes.analyze.ffn import _run, _which_activation
from passes.analyze.ops import LAYOUT_OPS, is_pointwise, op_name, shape_of
from passes.analyze.plan import ExpertsFamily, FeedForwardFamily, Slice, common_prefix
from passes.analyze.trace import Graph, index_through


@dataclass
class ExpertMatch:
    """One mixture-of-experts layer: its whole-expert family and its routed experts' families."""

    order: int  # graph position of the down projection (forward order)
    layer: ExpertsFamily
    routed: list[FeedForwardFamily] = field(default_factory=list)


def _part(projs: dict, n) -> Optional[tuple[ExpertProjection, list[int]]]:
    """``(projection, output channels)`` when ``n`` is an expert projection's output or a piece of it along its
    last axis (chunk, strided slice)."""
    path = [n]
    while isinstance(path[0], Node) and path[0] not in projs and len(path) < 8:
        node = path[0]
        if op_name(node) not in LAYOUT_OPS or not node.args or not isinstance(node.args[0], Node):
            return None
        path.insert(0, node.args[0])
    if not isinstance(path[0], Node) or path[0] not in projs:
        return None
    shp = shape_of(path[0])
    idx = index_through(path, torch.arange(shp[-1]).expand(shp).contiguous())
    if idx is None or tuple(idx.shape) != shape_of(n) or idx.dim() < 1:
        return None
    rows = idx.reshape(-1, idx.shape[-1])
    if not torch.equal(rows, rows[:1].expand_as(rows)):
        return None  # channels must move along the last axis only
    return projs[path[0]], rows[0].tolist()


def _region(projs: dict, down: ExpertProjection):
    """``(pointwise nodes between the up pieces and down, leaves, why not)``; region None when another op sits
    in between (the leaves found so far are still returned: none means ``down`` is an up projection)."""
    region, leaves, stack = set(), {}, [down.x]
    while stack:
        n = stack.pop()
        if n in region or n in leaves:
            continue
        part = _part(projs, n)
        if part is not None:
            leaves[n] = part
        elif isinstance(n, Node) and is_pointwise(n):
            region.add(n)
            stack.extend(n.all_input_nodes)
        else:
            what = op_name(n) if isinstance(n, Node) else type(n).__name__
            return None, leaves, f"{what} between the expert up and down projections is not elementwise"
    return region, leaves, ""


def _ffn(g: Graph, down: ExpertProjection, region, leaves: dict, why: str):
    """``(activation, [(role, projection, channels)], why not)`` for the expert FFN ending in ``down``."""
    if region is None or len(leaves) not in (1, 2):
        return None, None, why or f"{len(leaves or ())} expert up projections feed {down.weight} (want 1 or 2)"
    nodes = sorted(leaves, key=g.order.get)
    parts = [leaves[n] for n in nodes]
    if any(p.ids is not down.ids or len(ch) != down.in_features or p.in_features != down.out_features
           for p, ch in parts):
        return None, None, f"the expert up projections do not match {down.weight} (widths or routing differ)"
    ordered = sorted(region, key=g.order.get)
    gen = torch.Generator().manual_seed(0)
    probes = [torch.randn(shape_of(n), generator=gen, dtype=torch.float64) * 3 for n in nodes]
    found = _which_activation(lambda *xs: _run(ordered, dict(zip(nodes, xs))), probes) if ordered else None
    if found is None:  # an elementwise gate outside ACTIVATIONS: the first piece (lower channels) is the gate
        act, gi = "", (0 if len(parts) == 1 or parts[0][1][0] < parts[1][1][0] else 1)
    else:
        act, gi = found
    if len(parts) == 1:
        return act, [("up", *parts[0])], ""
    return act, [("gate", *parts[gi]), ("up", *parts[1 - gi])], ""


def _layer(g: Graph, down: ExpertProjection, pieces: list, act: str, route: Router) -> ExpertMatch:
    """The ExpertsFamily of one layer and one FeedForwardFamily per expert."""
    width, n = down.in_features, down.num_experts
    routed = []
    for e in range(n):
        sl = {role: Slice.at(p.module, p.param, p.out_axis, ch, role, p.bias_param, expert=e)
              for role, p, ch in pieces}
        sl["down"] = Slice(down.module, down.param, 3 - down.out_axis, 0, width, "down", None, None, e)
        routed.append(FeedForwardFamily(down.module, -1, width, act, **sl))
    members, seen = [], set()
    for p in [p for _, p, _ in pieces] + [down]:  # role "down" carries a real-valued mask's value (prepare)
        if p.weight not in seen:
            seen.add(p.weight)
            members.append(Slice(p.module, p.param, 0, 0, n, "down" if p is down else "up", p.bias_param))
    mod, _, name = route.weight.rpartition(".")
    bias_mod, _, bias = (route.bias or "").rpartition(".")
    rows = Slice(mod, name, route.axis, 0, n, "router", bias if route.bias and bias_mod == mod else None)
    known = {m.weight_name for m in members} | {f"{m.fqn}.{m.bias}" for m in members if m.bias}
    extra = [t for t in route.gathered if t not in known and t not in route.select and t != route.bias]
    coupled = tuple(Slice(*s.rpartition(".")[::2], expert_axis(g.param_shape(s), n) or 0, 0, n, "coupled")
                    for s in (*route.select, *extra))
    if route.bias and bias_mod != mod:
        coupled += (Slice(bias_mod, bias, 0, 0, n, "coupled"),)
    fam = ExpertsFamily(common_prefix([mod, down.module]), -1, n, route.top_k, rows, tuple(members), coupled,
                        route.groups, width=width)
    return ExpertMatch(g.order[down.node], fam, routed)


def match_experts(g: Graph) -> tuple[list[ExpertMatch], list[tuple[str, Node, str]]]:
    """Every mixture-of-experts layer of the graph, and the per-expert sites that could not be matched as
    ``(module, node, reason)``; a 3-D parameter read per expert but in no family is one such miss."""
    projs = {p.node: p for p in expert_projections(g)}
    found, misses, owned = [], [], set()
    for down in projs.values():
        region, leaves, why = _region(projs, down)
        if down.weight in owned or not leaves:
            continue  # a layer run twice, or an up projection (it reads the routed hidden states)
        act, pieces, why = _ffn(g, down, region, leaves, why)
        route, why_route = router(g, down.ids, down.num_experts) if pieces else (None, "")
        bias_elsewhere = [p.bias for p in [q for _, q, _ in pieces or ()] + [down] if p.bias and p.bias_param is None]
        if pieces and route is not None and not bias_elsewhere:
            match = _layer(g, down, pieces, act, route)
            found.append(match)
            owned.update(s.weight_name for s in match.layer.members)
            continue
        reason = why or why_route or f"expert bias {bias_elsewhere[0]} lives outside its expert module"
        misses.append((down.module, down.node, f"experts of {down.weight}: {reason}"))
    missed = {m[0] for m in misses}
    for fqn, node in expert_readers(g).items():
        mod = fqn.rpartition(".")[0]
        if fqn not in owned and mod not in missed:
            shp = g.param_shape(fqn) or g.state[fqn].shape
            misses.append((mod, node, f"3-D parameter {fqn} {list(shp)} is read per expert ({op_name(node)}) "
                                      f"but is in no expert family"))
    return found, misses
