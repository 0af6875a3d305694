"""The residual stream: every tensor that carries a model's hidden dimensions, read from the graph.

CoFi (Xia et al. 2022, Sec. 3) prunes hidden dimensions ``z_hidden in R^d`` shared by every layer
and the embeddings. What a hidden dimension touches is found by dataflow, not by module names:
starting from the inputs of the Plan's q / FFN-up projections, a flood fill follows every tensor
whose *channel axis* is the stream axis (``_Walk``):

- through elementwise ops (residual adds, dropout, scaling), layout ops (the channel axis is found by
  replaying the op on a tensor of channel indices: ``select`` of the CLS token, GPT-2's ``view``,
  ViT's ``flatten``/``transpose`` after the patch convolution), ``cat`` along another axis and
  reductions over other axes;
- into *norms* (``nn.LayerNorm``, any ``*Norm`` module with a ``[d]`` weight, e.g. RMSNorm), taken
  whole: its input and output are stream tensors, its weight (and bias) a ``norm`` slice;
- to its ends: projections reading the stream (``read``: input columns), projections, embeddings,
  convolutions and parameters writing it (``write`` / ``embed`` / ``param``).

Anything else touching the stream (a channel reduction outside a norm, a matmul with an activation,
the stream as a model input or output) makes the stream not removable; ``find_residual`` returns
``(None, why)``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.fx import Node

from passes.analyze.ops import IDENTITY_OPS, LAYOUT_OPS, is_pointwise, op_name, shape_of
from passes.analyze.plan import Plan, ResidualFamily, Slice
from passes.analyze.trace import Graph

CAT_OPS = frozenset({"cat", "concat", "stack"})
REDUCE_OPS = frozenset({"mean", "sum", "amax", "amin"})
CONV_OPS = frozenset({"conv1d", "conv2d", "conv3d", "convolution"})
NORM_OPS = frozenset({"layer_norm", "native_layer_norm"})  # norms whose statistics strip can restrict to the
# kept hidden dims (passes/strip/masked_norm.py): LayerNorm; channels.py's NORM_OPS also follows RMSNorm


class Unsupported(ValueError):
    """The stream cannot be followed (the message says where)."""


def _paths(node: Node) -> list[str]:
    return [v[0] for v in (node.meta.get("nn_module_stack") or {}).values()]


def _channel_axis(t: torch.Tensor, d: int) -> Optional[int]:
    """The axis along which ``t`` equals ``arange(d)`` (constant along every other axis)."""
    for k, size in enumerate(t.shape):
        view = [1] * t.dim()
        view[k] = d
        if size == d and torch.equal(t, torch.arange(d).view(view).expand_as(t)):
            return k
    return None


def _norm_module(model: nn.Module, fqn: str, d: int) -> bool:
    try:
        mod = model.get_submodule(fqn)
    except AttributeError:
        return False
    w = getattr(mod, "weight", None)
    named_norm = isinstance(mod, nn.LayerNorm) or type(mod).__name__.endswith("Norm")
    return named_norm and isinstance(w, torch.Tensor) and tuple(w.shape) == (d,)


class _Walk:
    """Flood fill of the stream from ``seeds`` (stream tensors with the channel on the last axis)."""

    def __init__(self, model: nn.Module, g: Graph, d: int):
        self.model, self.g, self.d = model, g, d
        self.axis: dict[Node, int] = {}
        self.queue: list[tuple[Node, int]] = []
        self.slices: dict[tuple[str, int], Slice] = {}
        self.norms: dict[str, list] = {}
        self.norm_nodes: set[Node] = set()

    def add(self, node: Node, axis: int) -> None:
        shp = shape_of(node)
        if shp is None or not 0 <= axis < len(shp) or shp[axis] != self.d:
            raise Unsupported(f"{getattr(node, 'name', node)}: expected the {self.d} hidden dims on axis {axis}")
        if node in self.axis:
            if self.axis[node] != axis:
                raise Unsupported(f"{node.name} carries the hidden dims on two axes")
            return
        self.axis[node] = axis
        self.queue.append((node, axis))

    def run(self) -> None:
        while self.queue:
            node, axis = self.queue.pop()
            self.producer(node, axis)
            for user in list(node.users):
                self.user(user, node, axis)

    def keep(self, fqn: str, param: str, axis: int, role: str, bias: Optional[str] = None) -> None:
        old = self.slices.get((f"{fqn}.{param}", axis))
        if old is None or (old.bias is None and bias is not None):
            self.slices[(f"{fqn}.{param}", axis)] = Slice(fqn, param, axis, 0, self.d, role, bias)

    # -- norms, taken whole --------------------------------------------------------------
    def norm_of(self, node: Node) -> Optional[str]:
        for fqn in reversed(_paths(node)):
            if _norm_module(self.model, fqn, self.d):
                return fqn
        return None

    def norm(self, fqn: str) -> None:
        if fqn in self.norms:
            return
        inside = [n for n in self.g.nodes if fqn in _paths(n)]
        self.norm_nodes.update(inside)
        mod = self.model.get_submodule(fqn)
        ln = [n for n in inside if op_name(n) in NORM_OPS]
        eps = float(ln[0].args[4]) if ln and len(ln[0].args) > 4 else \
            float(getattr(mod, "eps", getattr(mod, "variance_epsilon", 1e-5)))
        kind = "layer" if ln or isinstance(mod, nn.LayerNorm) else "rms"
        has_bias = isinstance(getattr(mod, "bias", None), torch.Tensor)
        if kind == "rms" and has_bias:
            raise Unsupported(f"norm {fqn} ({type(mod).__name__}) has a bias but no layer_norm op")
        self.norms[fqn] = [kind, eps]
        self.keep(fqn, "weight", 0, "norm", "bias" if has_bias else None)
        for n in inside:
            for a in n.all_input_nodes:
                if a not in self.norm_nodes and self.g.param_of(a) is None:
                    self.add(a, len(shape_of(a) or ()) - 1)
            if any(u not in self.norm_nodes for u in n.users):
                self.add(n, len(shape_of(n) or ()) - 1)

    # -- forward: who reads a stream tensor ----------------------------------------------
    def user(self, u: Node, n: Node, axis: int) -> None:
        if u in self.norm_nodes or op_name(u).startswith(("_assert", "sym_size")):
            return
        if u.op == "output":
            raise Unsupported(f"the residual stream is a model output ({n.name}): removing hidden "
                              f"dimensions would change the output shape (use a model with a head)")
        fqn = self.norm_of(u)
        if fqn is not None and fqn not in _paths(n):
            return self.norm(fqn)
        proj = self.g.projection(u)
        if proj is not None:
            if proj.x is not n or axis != len(shape_of(n)) - 1:
                raise Unsupported(f"{proj.weight}: the stream is not its input on the last axis")
            sl = proj.slice(0, self.d, "read", False)
            return self.keep(sl.fqn, sl.param, sl.axis, "read")
        name = op_name(u)
        if name in CAT_OPS:
            return self.cat(u, axis)
        if name in REDUCE_OPS:
            return self.add(u, self.reduced(u, axis))
        if name in IDENTITY_OPS:
            return self.add(u, axis)
        if name in LAYOUT_OPS:
            out = self.carry(u, n, axis)
            if out is None:
                raise Unsupported(f"{u.name} ({name}) moves the hidden dims in a way that cannot be followed")
            return self.add(u, out)
        if is_pointwise(u):
            return self.add(u, axis + len(shape_of(u)) - len(shape_of(n)))
        raise Unsupported(f"{u.name} ({name or u.op}) reads the residual stream")

    def reduced(self, u: Node, axis: int) -> int:
        rank = len(shape_of(u.args[0]))
        dims = u.args[1] if len(u.args) > 1 else u.kwargs.get("dim")
        dims = [dims] if isinstance(dims, int) else list(dims or range(rank))
        dims = [x % rank for x in dims]
        keep = (u.args[2] if len(u.args) > 2 else u.kwargs.get("keepdim", False))
        if axis in dims:
            raise Unsupported(f"{u.name}: a reduction over the hidden dims outside a norm module")
        return axis if keep else axis - sum(x < axis for x in dims)

    def cat(self, u: Node, axis: int) -> None:
        dim = (u.args[1] if len(u.args) > 1 else u.kwargs.get("dim", 0)) % len(shape_of(u))
        if op_name(u) == "stack" or dim == axis:
            raise Unsupported(f"{u.name}: concatenation along the hidden dims")
        self.add(u, axis)
        for a in u.args[0]:
            self.add(a, axis)

    def carry(self, u: Node, n: Node, axis: int) -> Optional[int]:
        """Replay layout op ``u`` on channel indices in ``n`` (along ``axis``): the output's axis."""
        shp = shape_of(n)
        view = [1] * len(shp)
        view[axis] = self.d
        idx = torch.arange(self.d).view(view).expand(shp).contiguous()
        args = [idx if a is n else a for a in u.args]
        if any(isinstance(a, Node) for a in args):
            return None
        fn = torch.ops.aten.reshape.default if op_name(u) in ("view", "_unsafe_view") else u.target
        try:
            out = fn(*args, **u.kwargs)
        except (RuntimeError, TypeError, IndexError):
            return None
        return _channel_axis(out, self.d) if isinstance(out, torch.Tensor) else None

    # -- backward: who writes a stream tensor --------------------------------------------
    def producer(self, n: Node, axis: int) -> None:
        if n in self.norm_nodes:
            return
        g = self.g
        if n.op == "placeholder":
            fqn = g.param_of(n)
            if fqn is None:
                raise Unsupported(f"the residual stream is a model input ({n.name})")
            mod, _, param = fqn.rpartition(".")
            return self.keep(mod, param, axis, "param")
        proj = g.projection(n)
        name = op_name(n)
        if proj is not None:
            sl = proj.slice(0, self.d, "write", True)
            return self.keep(sl.fqn, sl.param, sl.axis, "write", sl.bias)
        fqn = self.norm_of(n)
        if fqn is not None:
            return self.norm(fqn)
        if name == "embedding":
            mod, _, param = g.param_of(n.args[0]).rpartition(".")
            return self.keep(mod, param, 1, "embed")
        if name in CONV_OPS and axis == 1:
            return self.conv(n)
        if name in CAT_OPS:
            return self.cat(n, axis)
        if name in IDENTITY_OPS:
            return self.add(n.args[0], axis)
        if name in LAYOUT_OPS:
            src = n.args[0]
            for k, size in enumerate(shape_of(src) or ()):
                if size == self.d and self.carry(n, src, k) == axis:
                    return self.add(src, k)
            raise Unsupported(f"{n.name} ({name}): cannot follow the hidden dims back to its input")
        if is_pointwise(n):
            for a in n.all_input_nodes:
                shp = shape_of(a)
                k = axis - (len(shape_of(n)) - len(shp or ()))
                if shp is not None and k >= 0 and shp[k] == self.d:
                    self.add(a, k)
            return
        raise Unsupported(f"{n.name} ({name or n.op}) writes the residual stream")

    def conv(self, n: Node) -> None:
        w = self.g.param_of(n.args[1])
        b = self.g.param_of(n.args[2]) if len(n.args) > 2 and isinstance(n.args[2], Node) else None
        mod, _, param = w.rpartition(".")
        bias = b.rpartition(".")[2] if b is not None and b.rpartition(".")[0] == mod else None
        self.keep(mod, param, 0, "write", bias)


def find_residual(model: nn.Module, g: Graph, plan: Plan) -> tuple[Optional[ResidualFamily], str]:
    """The residual stream feeding the Plan's families, or ``(None, why it cannot be removed)``."""
    inputs = {s.weight_name for f in plan.families.values() for s in f.slices if s.role in ("q", "k", "v", "up", "gate")}
    seeds = [p.x for p in g.projections() if p.weight in inputs]
    if not seeds:
        return None, "no attention / feed-forward family reads a traced tensor"
    d = (shape_of(seeds[0]) or (0,))[-1]
    walk = _Walk(model, g, d)
    try:
        walk.add(seeds[0], len(shape_of(seeds[0])) - 1)
        walk.run()
        lost = [p.weight for p in g.projections() if p.weight in inputs and p.x not in walk.axis]
        if lost:
            raise Unsupported(f"{lost[0]} reads another stream than {seeds[0].name} (several residual streams)")
        if not walk.norms:
            raise Unsupported("no norm on the stream")
    except (Unsupported, TypeError, AttributeError, KeyError) as exc:
        return None, f"residual stream of width {d}: {exc}"
    order = {"norm": 0, "embed": 1, "param": 2, "write": 3, "read": 4}
    slices = sorted(walk.slices.values(), key=lambda s: (order[s.role], s.weight_name))
    return ResidualFamily("", -1, d, slices, walk.norms), ""
