"""Find attention and feed-forward families by dataflow in the exported aten graph -> ``Plan``.

LEAP prunes *groups* of weights (heads, FFN neurons; paper Sec. 3, Eq. 1-2): a head is the
``head_dim`` rows of q, k, v and the matching columns of the out projection; a neuron is one row
of up (and gate) and one column of down. ``analyze`` reads those groups from the graph:

- attention: ``sdpa(q, k, v)`` or ``softmax(q @ k^T) @ v``; q/k/v are traced back to their
  projections and a tensor of channel indices is replayed through the layout ops in between,
  which reveals fused projections (GPT-2 ``c_attn``, ``in_proj_weight``), head counts and
  grouped-query kv heads. The out projection is the one consuming the merged heads.
- feed-forward: a projection whose input is ``act(up)`` or ``act(gate) * up`` (pointwise ops only),
  with the activation identified numerically against ``ACTIVATIONS``, and width in == width out.
  A plain ``Linear -> ReLU -> Linear`` MLP with matching widths therefore counts as one family;
  a single ``Linear`` or a width-changing head (pooler -> classifier) does not.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.fx import Node

from passes.plan import AttentionFamily, FeedForwardFamily, Plan, Slice
from passes.trace import (ATTENTION_OPS, MATMUL_OPS, SOFTMAX_OPS, Graph, Projection, TraceError,
                          index_through, is_pointwise, op_name, shape_of, split_inputs, trace)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu2": lambda x: F.relu(x) ** 2,
    "mish": F.mish,
}


_MATCH_ERRORS = (RuntimeError, TypeError, IndexError, KeyError, ValueError)


class AnalyzeError(ValueError):
    """The model could not be traced, or no attention / feed-forward family was found."""


# -- attention ---------------------------------------------------------------------------------
def _sites(g: Graph):
    """Yield ``(anchor, q, k, v, k_is_transposed, attention_output)`` for every attention op."""
    for n in g.nodes:
        name = op_name(n)
        if name in ATTENTION_OPS:
            out = n if shape_of(n) is not None else next(
                (u for u in n.users if op_name(u) == "getitem" and u.args[1] == 0), None)
            yield n, n.args[0], n.args[1], n.args[2], False, out
        elif name in SOFTMAX_OPS:
            scores = n.args[0]
            while isinstance(scores, Node) and is_pointwise(scores) and op_name(scores) not in MATMUL_OPS:
                scores = next((a for a in scores.args if shape_of(a) == shape_of(n)), None)
            ctx = g.path_from(n, lambda prev, m: op_name(m) in MATMUL_OPS and m.args[0] is prev)
            if isinstance(scores, Node) and op_name(scores) in ("matmul", "bmm") and ctx is not None:
                yield n, scores.args[0], scores.args[1], ctx[-1].args[1], True, ctx[-1]


def _channels(proj: Projection) -> torch.Tensor:
    """Output channel index of every element of the projection's output."""
    shp = shape_of(proj.node)
    return torch.arange(shp[-1]).expand(shp).contiguous()


def _head_starts(g: Graph, node, transposed: bool) -> tuple[Optional[Projection], list[int], str]:
    """Projection feeding ``node`` and, per head along axis -3, the first channel it reads."""
    path = g.path_to_projection(node)
    if path is None:
        return None, [], f"{getattr(node, 'name', node)} is not a projection reshaped into heads"
    proj = g.projection(path[0])
    idx = index_through(path, _channels(proj))
    if idx is None or idx.dim() not in (3, 4):
        return None, [], f"cannot follow channels from {proj.weight} to {node.name}"
    idx = idx.transpose(-1, -2) if transposed else idx
    if idx.dim() == 3:  # (batch * heads, seq, head_dim)
        heads = len(torch.unique(idx[:, 0, 0]))
        idx = idx.reshape(-1, heads, *idx.shape[1:])
    dim = idx.shape[-1]
    ref = idx[:1, :, :1, :]
    starts = ref[0, :, 0, 0]
    if not (idx == ref).all() or not (ref[0, :, 0, :] == starts[:, None] + torch.arange(dim)).all():
        return None, [], f"{proj.weight}: heads are not contiguous runs of head_dim channels"
    return proj, [int(s) for s in starts], ""


def _kv_layout(starts: list[int], heads: int, dim: int) -> Optional[tuple[int, int]]:
    """``(start, num_kv_heads)`` if kv head ``j`` is at ``start + j*dim`` and q head h reads h // rep."""
    uniq = sorted(set(starts))
    n = len(uniq)
    if uniq != [uniq[0] + j * dim for j in range(n)] or heads % n:
        return None
    if len(starts) == n and starts == uniq:
        return uniq[0], n
    if len(starts) == heads and starts == [uniq[h // (heads // n)] for h in range(heads)]:
        return uniq[0], n
    return None


def _slice(p: Projection, start: int, size: int, role: str, on_output: bool) -> Slice:
    axis = p.out_axis if on_output else 1 - p.out_axis
    return Slice(p.module, p.param, axis, start, size, role, p.bias_param if on_output else None)


def _attention(g: Graph, site) -> tuple[Optional[AttentionFamily], str]:
    anchor, q, k, v, k_t, out = site
    qp, qs, why = _head_starts(g, q, False)
    if qp is None:
        return None, why
    heads, dim = len(qs), shape_of(q)[-1]
    if qs != [qs[0] + h * dim for h in range(heads)]:
        return None, f"{qp.weight}: q heads out of order"
    kv = {}
    for role, node, tr in (("k", k, k_t), ("v", v, False)):
        p, starts, why = _head_starts(g, node, tr)
        lay = _kv_layout(starts, heads, dim) if p is not None else None
        if lay is None:
            return None, why or f"{role}: unsupported grouped-query layout {starts}"
        kv[role] = (p, *lay)
    if kv["k"][2] != kv["v"][2]:
        return None, "k and v have different head counts"
    if out is None:
        return None, f"{anchor.name}: attention output not found"
    path = g.path_from(out, lambda prev, m: g.projection(m) is not None and g.projection(m).x is prev)
    if path is None:
        return None, f"{anchor.name}: no projection consumes the merged heads"
    op = g.projection(path[-1])
    width, shp = heads * dim, shape_of(out)
    if len(shp) == 4:
        merged = torch.arange(heads).view(1, heads, 1, 1) * dim + torch.arange(dim)
    else:
        merged = (torch.arange(shp[0]) % heads).view(-1, 1, 1) * dim + torch.arange(dim)
    idx = index_through(path[:-1], merged.expand(shp).contiguous())
    if idx is None or idx.shape[-1] != width or not (idx.reshape(-1, width) == torch.arange(width)).all():
        return None, f"{op.weight}: input channels are not the merged heads in order"
    sl = dict(q=_slice(qp, qs[0], width, "q", True), out=_slice(op, 0, width, "out", False))
    for role, (p, start, n_kv) in kv.items():
        sl[role] = _slice(p, start, n_kv * dim, role, True)
    fam = AttentionFamily(_common(sl.values()), -1, heads, kv["k"][2], dim, **sl)
    return fam, ""


# -- feed-forward ------------------------------------------------------------------------------
def _pointwise_region(g: Graph, down: Projection):
    """Nodes between the projections feeding ``down`` and ``down`` itself (pointwise/reshape only)."""
    region, leaves, stack = set(), [], [down.x]
    while stack:
        n = stack.pop()
        if n in region or n in leaves:
            continue
        if g.projection(n) is not None:
            leaves.append(n)
        elif is_pointwise(n) or op_name(n) in ("view", "reshape", "_unsafe_view") and \
                (shape_of(n) or (None,))[-1] == (shape_of(n.args[0]) or (0,))[-1]:
            region.add(n)
            stack.extend(n.all_input_nodes)
        else:
            return None, None
    return sorted(region, key=g.order.get), sorted(leaves, key=g.order.get)


def _run(region: list[Node], env: dict) -> torch.Tensor:
    env = dict(env)
    look = lambda a: env[a] if isinstance(a, Node) else a  # noqa: E731
    for n in region:
        env[n] = n.target(*torch.fx.node.map_aggregate(n.args, look),
                          **torch.fx.node.map_aggregate(n.kwargs, look))
    return env[region[-1]] if region else env[next(iter(env))]


def _which_activation(fn: Callable, probes: list[torch.Tensor]) -> Optional[tuple[str, int]]:
    """``(key, gate index)`` such that ``fn(*probes) == act(gate) [* other]``."""
    with torch.no_grad():
        got = fn(*probes)
        for key, act in ACTIVATIONS.items():
            for gi in range(len(probes)):
                want = act(probes[gi]) * (probes[1 - gi] if len(probes) == 2 else 1)
                if got.shape == want.shape and torch.allclose(got.double(), want.double(), atol=2e-5):
                    return key, gi
    return None


def _ffn(g: Graph, down: Projection) -> Optional[FeedForwardFamily]:
    region, leaves = _pointwise_region(g, down)
    if not region or len(leaves) not in (1, 2):
        return None
    projs = [g.projection(n) for n in leaves]
    width = down.in_features
    if any(p.out_features != width or p.in_features != down.out_features for p in projs):
        return None
    gen = torch.Generator().manual_seed(0)
    probes = [torch.randn(shape_of(n), generator=gen, dtype=torch.float64) * 3 for n in leaves]
    found = _which_activation(lambda *xs: _run(region, dict(zip(leaves, xs))), probes)
    if found is None:
        return None
    key, gi = found
    up, gate = (projs[1 - gi], projs[gi]) if len(projs) == 2 else (projs[0], None)
    sl = dict(up=_slice(up, 0, width, "up", True), down=_slice(down, 0, width, "down", False))
    if gate is not None:
        sl["gate"] = _slice(gate, 0, width, "gate", True)
    return FeedForwardFamily(_common(sl.values()), -1, width, key, **sl)


# -- plan ----------------------------------------------------------------------------------------
def _common(slices) -> str:
    """Lowest common ancestor module of the slices' modules."""
    paths = [s.fqn.split(".") if s.fqn else [] for s in slices]
    out = []
    for parts in zip(*paths):
        if len(set(parts)) != 1:
            break
        out.append(parts[0])
    return ".".join(out)


def _block(fqn: str) -> Optional[str]:
    """The innermost numbered container item (``encoder.layer.3``) holding ``fqn``."""
    parts = fqn.split(".")
    return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if parts[i - 1].isdigit()), None)


def _assign_layers(found: list[tuple[int, object]]) -> None:
    """``layer`` = ordinal of the block in forward order (per kind when blocks are unnumbered)."""
    found.sort(key=lambda t: t[0])
    blocks = [_block(f.fqn) for _, f in found]
    if all(b is not None for b in blocks):
        order = list(dict.fromkeys(blocks))
        for (_, f), b in zip(found, blocks):
            f.layer = order.index(b)
        return
    seen: dict[str, int] = {}
    for _, f in found:
        f.layer = seen[f.kind] = seen.get(f.kind, -1) + 1


def analyze(model: torch.nn.Module, example_inputs) -> Plan:
    """Trace ``model`` on ``example_inputs`` and return its attention / feed-forward families."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"analyze() needs a torch.nn.Module, got {type(model).__name__}")
    split_inputs(example_inputs)  # TypeError for unsupported input forms
    try:
        g = Graph(trace(model, example_inputs))
    except TraceError as exc:
        raise AnalyzeError(str(exc)) from exc
    found, reasons, used = [], [], set()
    for site in _sites(g):
        try:
            fam, why = _attention(g, site)
        except _MATCH_ERRORS as exc:  # an unusual graph near this site: report it, keep going
            fam, why = None, f"{site[0].name}: {type(exc).__name__}: {exc}"
        if fam is None:
            reasons.append(why)
            continue
        found.append((g.order[site[0]], fam))
        used.update(s.weight_name for s in fam.slices)
    for down in g.projections():
        try:
            fam = None if down.weight in used else _ffn(g, down)
        except _MATCH_ERRORS:
            fam = None
        if fam is not None and not used.intersection(s.weight_name for s in fam.slices):
            found.append((g.order[down.node], fam))
    if not found:
        detail = "; ".join(dict.fromkeys(reasons)) or "no attention op (sdpa or matmul-softmax-matmul)"
        raise AnalyzeError(
            f"no attention or feed-forward family found in {type(model).__name__}: the model has no "
            f"Linear -> reshape(heads, head_dim) -> attention -> Linear pattern and no Linear -> "
            f"activation ({', '.join(ACTIVATIONS)}) -> Linear back to the input width ({detail}). "
            f"Check that the forward runs the transformer blocks for these example inputs.")
    _assign_layers(found)
    plan = Plan(model_class=type(model).__name__)
    for _, fam in found:
        key = fam.fqn if fam.fqn not in plan.families else f"{fam.fqn}:{fam.kind}"
        if key in plan.families and plan.families[key] == fam:
            continue  # the same weights run twice (shared layers): one family
        plan.families[key] = fam
    return plan
