"""Trace a model with ``torch.export`` and read its aten graph by dataflow.

``trace`` wraps ``torch.export.export(strict=False)`` (eval mode, no grad). ``Graph`` adds the
helpers the family matcher needs: which parameter a node reads (``param_of``), which nodes are
*projections* (a matmul of an activation by a weight: ``linear``, ``addmm``, ``mm``, ``matmul``),
and ``index_through`` which pushes a tensor of channel indices through the layout ops on a path
(view / transpose / split / select / expand ...), so fused and grouped projections are read from
the graph itself, not from module names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch.fx import Node

from passes.analyze.inputs import split_inputs, unknown_inputs
from passes.analyze.ops import LAYOUT_OPS, is_pointwise, op_name, shape_of
from passes.analyze.plan import Slice

_PARAMETRIZED = re.compile(r"^(?:(.*)\.)?parametrizations\.(\w+)\.original0?$")


class TraceError(ValueError):
    """``torch.export`` could not trace the model with the given example inputs."""


def traced_inputs(model: torch.nn.Module, example_inputs) -> tuple[tuple, dict]:
    """``(args, kwargs)`` as traced: with ``use_cache=False`` when the forward takes it and the caller did
    not say (a key/value cache is no tensor torch.export can return)."""
    args, kwargs = split_inputs(example_inputs)
    _, accepted = unknown_inputs(model, kwargs)
    if accepted is not None and "use_cache" in accepted and "use_cache" not in kwargs:
        kwargs["use_cache"] = False
    return args, kwargs


def trace(model: torch.nn.Module, example_inputs) -> torch.export.ExportedProgram:
    """``torch.export.export(model, *traced_inputs(model, example_inputs), strict=False)`` in eval mode
    under no_grad."""
    args, kwargs = traced_inputs(model, example_inputs)
    bad, accepted = unknown_inputs(model, kwargs)
    if bad:
        raise TraceError(f"example inputs {bad} are not parameters of {type(model).__name__}.forward, which "
                         f"accepts {accepted}; rename or drop those keys (e.g. labels are not needed to trace)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.export.export(model, args, kwargs=kwargs, strict=False)
    except Exception as exc:  # export raises many types; report the first line and how to fix it
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TraceError(
            f"torch.export failed on {type(model).__name__}: {type(exc).__name__}: {first}. Pass example "
            f"inputs the forward accepts (dict of kwargs, tuple of args or one tensor), set use_cache=False "
            f"for GPT-2/Llama style models, avoid data-dependent Python control flow, and check the model "
            f"runs under torch.export.export(model, args, kwargs=..., strict=False).") from exc
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class Projection:
    """A node computing ``x @ W`` for a parameter ``W``: ``out_axis`` of ``W`` indexes output channels."""

    node: Node
    x: Node
    weight: str  # parameter FQN, e.g. "bert.encoder.layer.0.attention.self.query.weight"
    out_axis: int
    in_features: int
    out_features: int
    bias: Optional[str] = None  # bias parameter FQN when the node adds it

    @property
    def module(self) -> str:
        return self.weight.rsplit(".", 1)[0] if "." in self.weight else ""

    @property
    def param(self) -> str:
        return self.weight.rsplit(".", 1)[-1]

    def slice(self, start: int, size: int, role: str, on_output: bool) -> Slice:
        """The Plan slice of this weight: output channels (``on_output``) or input columns."""
        axis = self.out_axis if on_output else 1 - self.out_axis
        return Slice(self.module, self.param, axis, start, size, role, self.bias_param if on_output else None)

    @property
    def bias_param(self) -> Optional[str]:
        """The bias attribute name when the bias belongs to the weight's module, else None."""
        if self.bias is None:
            return None
        mod, _, name = self.bias.rpartition(".")
        return name if mod == self.module else None


class Graph:
    """The aten graph of an ``ExportedProgram`` with parameter lookups and dataflow helpers."""

    def __init__(self, ep: torch.export.ExportedProgram):
        self.ep = ep
        self.graph = ep.graph_module.graph
        self.nodes = list(self.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.params = dict(ep.graph_signature.inputs_to_parameters)
        self.user_inputs = set(ep.graph_signature.user_inputs)
        self.state = dict(ep.state_dict)
        self._proj: dict[Node, Optional[Projection]] = {}
        self._live: Optional[set] = None

    # -- parameters ----------------------------------------------------------------------
    def param_of(self, node: Any) -> Optional[str]:
        """FQN of the parameter a node stands for, else None.

        A weight computed by ``torch.nn.utils.parametrize`` (``<m>.parametrizations.weight.original``
        and a few ops on it, e.g. LEAP's mask) is reported as ``<m>.weight``.
        """
        if not isinstance(node, Node):
            return None
        if node.op == "placeholder" and node.name in self.params:
            m = _PARAMETRIZED.match(self.params[node.name])
            return self.params[node.name] if m is None else ".".join(filter(None, m.groups()))
        if node.op == "get_attr":
            return str(node.target)
        seen, stack, found = set(), [node], None
        while stack:  # a function of parameters only (no user input), holding one `original`
            n = stack.pop()
            seen.add(n)
            if n.name in self.user_inputs or len(seen) > 40:
                return None
            m = _PARAMETRIZED.match(self.params.get(n.name, "")) if n.op == "placeholder" else None
            if m and shape_of(n) == shape_of(node):
                found = ".".join(filter(None, m.groups()))
            stack.extend(a for a in n.all_input_nodes if a not in seen)
        return found

    def param_shape(self, fqn: str) -> Optional[tuple]:
        if fqn in self.state:
            return tuple(self.state[fqn].shape)
        mod, _, name = fqn.rpartition(".")
        orig = f"{mod}.parametrizations.{name}.original" if mod else f"parametrizations.{name}.original"
        return tuple(self.state[orig].shape) if orig in self.state else None

    def _weight(self, node: Any) -> tuple[Optional[str], bool]:
        """(param FQN, transposed?) for a weight operand, looking through one ``t``/2-D transpose."""
        fqn = self.param_of(node)
        if fqn is not None:
            return fqn, False
        if isinstance(node, Node) and op_name(node) in ("t", "transpose", "permute", "numpy_T") and \
                len(shape_of(node) or ()) == 2:
            return self.param_of(node.args[0]), True
        return None, False

    def module_of(self, node: Node) -> str:
        """Innermost module FQN recorded in ``nn_module_stack`` for a node ("" at top level)."""
        stack = node.meta.get("nn_module_stack") or {}
        return list(stack.values())[-1][0] if stack else ""

    # -- projections ---------------------------------------------------------------------
    def projection(self, node: Any) -> Optional[Projection]:
        if not isinstance(node, Node):
            return None
        if node not in self._proj:
            self._proj[node] = self._read_projection(node)
        return self._proj[node]

    def _read_projection(self, node: Node) -> Optional[Projection]:
        name, a = op_name(node), node.args
        if name == "linear":
            x, w, b = a[0], a[1], (a[2] if len(a) > 2 else node.kwargs.get("bias"))
            fqn, tr = self._weight(w)
            out_axis = 1 if tr else 0
        elif name == "addmm":
            b, x, w = a[0], a[1], a[2]
            fqn, tr = self._weight(w)
            out_axis = 0 if tr else 1
        elif name in ("mm", "matmul"):
            x, w, b = a[0], a[1], None
            fqn, tr = self._weight(w)
            out_axis = 0 if tr else 1
        else:
            return None
        shp = self.param_shape(fqn) if fqn is not None else None
        if shp is None or len(shp) != 2 or self.param_of(x):
            return None
        bias = self.param_of(b) if isinstance(b, Node) else None
        return Projection(node, x, fqn, out_axis, shp[1 - out_axis], shp[out_axis], bias)

    def projections(self) -> list[Projection]:
        return [p for p in map(self.projection, self.nodes) if p is not None]

    # -- dataflow --------------------------------------------------------------------------
    def from_input(self, node: Any) -> bool:
        """``node`` is computed from a user input (an activation, not a function of parameters only)."""
        if self._live is None:
            self._live = set()
            for n in self.nodes:
                if n.name in self.user_inputs or any(a in self._live for a in n.all_input_nodes):
                    self._live.add(n)
        return node in self._live

    def path_to_projection(self, node: Any, depth: int = 60) -> Optional[list[Node]]:
        """Nodes ``[projection, ..., node]`` reaching ``node`` through layout/pointwise ops only."""
        if not isinstance(node, Node) or depth <= 0:
            return None
        if self.projection(node) is not None:
            return [node]
        name = op_name(node)
        if name in LAYOUT_OPS:
            cands = [node.args[0]]
        elif is_pointwise(node):  # follow operands shaped like the result (not broadcast masks)
            cands = [a for a in node.args if isinstance(a, Node) and shape_of(a) == shape_of(node)]
        else:
            return None
        for c in cands:
            p = self.path_to_projection(c, depth - 1)
            if p is not None:
                return p + [node]
        return None

    def path_from(self, node: Node, stop, depth: int = 30) -> Optional[list[Node]]:
        """First forward path ``[node, ..., m]`` through layout/pointwise ops with ``stop(prev, m)``."""
        if depth <= 0:
            return None
        for user in sorted(node.users, key=self.order.get):
            if stop(node, user):
                return [node, user]
            if op_name(user) in LAYOUT_OPS and user.args[0] is node or \
                    is_pointwise(user) and shape_of(user) == shape_of(node):
                rest = self.path_from(user, stop, depth - 1)
                if rest is not None:
                    return [node] + rest
        return None


def depends(node: Node, targets: set, limit: int) -> bool:
    """``node`` is computed (within ``limit`` ancestors) from one of ``targets``."""
    seen, stack = set(), [node]
    while stack and len(seen) < limit:
        n = stack.pop()
        if n in targets:
            return True
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return False


def index_through(path: Sequence[Node], idx: torch.Tensor) -> Optional[torch.Tensor]:
    """Replay ``path[1:]`` on ``idx`` (the value of ``path[0]``): layout ops re-run, pointwise pass."""
    for prev, node in zip(path, path[1:]):
        if op_name(node) in LAYOUT_OPS:
            args = [idx if a is prev else a for a in node.args]
            if any(isinstance(a, Node) for a in args):
                return None
            fn = torch.ops.aten.reshape.default if op_name(node) in ("view", "_unsafe_view") else node.target
            try:  # replayed on a possibly non-contiguous index tensor: view -> reshape
                idx = fn(*args, **node.kwargs)
            except (RuntimeError, TypeError, IndexError):
                return None
        elif is_pointwise(node):
            shp = shape_of(node)
            if shp is None or tuple(idx.shape) != shp:
                return None
        else:
            return None
    return idx
