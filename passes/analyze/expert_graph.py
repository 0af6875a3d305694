"""Expert projections and routers in the aten graph (transformers 5 fused experts).

An *expert projection* multiplies each routed row by its own expert's matrix, a slice ``W[e]`` of a 3-D
parameter ``W [experts, ., .]``. transformers 5 runs it two ways, both read here:

- ``batched_mm``: ``bmm(W[ids], x.unsqueeze(-1)).squeeze(-1)`` (``W [E, out, in]``) or
  ``bmm(x.unsqueeze(1), W[ids]).squeeze(1)`` (``W [E, in, out]``, ``is_transposed``);
- ``grouped_mm`` (CPU default): ``grouped_mm(x, W or W.transpose(-2, -1), offs)`` on rows sorted by expert
  (``transformers::grouped_mm_fallback`` under ``torch.export``, or ``aten._grouped_mm``);

then maybe ``+ B[ids]`` (a ``[E, out]`` bias). ``ids`` (the expert of each row) comes from a ``topk``
over the router's scores; ``router`` walks back from it to the router's projection (a ``[E, hidden]``
weight, maybe cast), collecting per-expert tensors added on the way (DeepSeek-V3's score-correction
bias) and a ``view(..., groups, E / groups)`` of grouped routing, and forward from the chosen indices to
every ``[E, ...]`` tensor they gather (a per-expert scale or norm, the fused weights and their biases).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch.fx import Node

from passes.analyze.ops import IDENTITY_OPS, LAYOUT_OPS, is_pointwise, op_name, shape_of
from passes.analyze.trace import Graph

GROUPED = frozenset({"grouped_mm_fallback", "_grouped_mm", "grouped_mm"})
_ROUTE_OPS = LAYOUT_OPS | IDENTITY_OPS | {"sort", "histc", "cumsum"}  # expert ids (or grouped_mm offsets) -> topk
_PROJ_OPS = frozenset({"linear", "mm", "matmul", "addmm"})


@dataclass(frozen=True)
class ExpertProjection:
    """Rows ``x [S, in]`` times their experts' matrices of the 3-D ``weight``: ``node`` holds ``[S, out]``
    (after the bias add when there is one); ``out_axis`` is the stored axis of output channels (1 or 2)."""

    node: Node
    x: Node
    weight: str
    out_axis: int
    num_experts: int
    in_features: int
    out_features: int
    ids: Node  # expert index per row (batched_mm) or the sorted indices (grouped_mm)
    bias: Optional[str] = None  # [experts, out] bias FQN

    @property
    def module(self) -> str:
        return self.weight.rpartition(".")[0]

    @property
    def param(self) -> str:
        return self.weight.rpartition(".")[2]

    @property
    def bias_param(self) -> Optional[str]:
        mod, _, name = (self.bias or "").rpartition(".")
        return name if self.bias and mod == self.module else None


def tensor_of(g: Graph, node, sources: dict) -> Optional[str]:
    """FQN of the parameter or buffer ``node`` is (through casts and copies), else None."""
    for _ in range(6):
        if not isinstance(node, Node):
            return None
        fqn = g.param_of(node) or (sources.get(node.name) if node.op == "placeholder" else None)
        if fqn is not None:
            return fqn
        if op_name(node) not in IDENTITY_OPS or not node.args:
            return None
        node = node.args[0]
    return None


def sources(g: Graph) -> dict:
    """Placeholder name -> FQN of every parameter and buffer of the traced program."""
    sig = g.ep.graph_signature
    return {**dict(sig.inputs_to_parameters), **dict(sig.inputs_to_buffers)}


def _shape(g: Graph, fqn: Optional[str]) -> Optional[tuple]:
    return g.param_shape(fqn) if fqn is not None else None  # parameters and persistent buffers


def expert_axis(shape: Optional[tuple], experts: int) -> Optional[int]:
    """The axis of a per-expert tensor: ``[experts]``, or ``[1, experts]`` (Ernie-4.5's score correction) and
    the like, one entry per expert along one axis; None for any other shape."""
    if not shape or sorted(shape)[:-1] != [1] * (len(shape) - 1) or max(shape) != experts:
        return None
    return list(shape).index(experts)


def _fused(g: Graph, node, src: dict) -> Optional[tuple[str, bool]]:
    """``(3-D parameter, transposed?)`` for ``W`` or ``W.transpose(-2, -1)`` (through casts)."""
    fqn = tensor_of(g, node, src)
    if fqn is not None:
        return (fqn, False) if len(_shape(g, fqn) or ()) == 3 else None
    if isinstance(node, Node) and op_name(node) == "transpose" and sorted(a % 3 for a in node.args[1:3]) == [1, 2]:
        inner = _fused(g, node.args[0], src)
        return (inner[0], not inner[1]) if inner is not None else None
    return None


def _gathered(g: Graph, node, src: dict) -> Optional[tuple[str, Node]]:
    """``(3-D parameter, ids)`` for ``W[ids]`` (``aten.index(W, [ids])``)."""
    if not isinstance(node, Node) or op_name(node) != "index" or len(node.args[1]) != 1:
        return None
    fqn = tensor_of(g, node.args[0], src)
    return (fqn, node.args[1][0]) if len(_shape(g, fqn) or ()) == 3 else None


def _bias_after(g: Graph, out: Node, src: dict, experts: int, width: int) -> tuple[Node, Optional[str]]:
    """``(out + B[ids], B)`` when the single next op adds a gathered ``[experts, width]`` bias."""
    for user in out.users:
        if op_name(user) in ("add", "add_") and len(user.args) == 2 and user.args[0] is out:
            other = user.args[1]
            if isinstance(other, Node) and op_name(other) == "index":
                fqn = tensor_of(g, other.args[0], src)
                if _shape(g, fqn) == (experts, width):
                    return user, fqn
    return out, None


def _unsqueezed(node, dim: int) -> Optional[Node]:
    if isinstance(node, Node) and op_name(node) == "unsqueeze" and node.args[1] in (dim, dim % 3):
        return node.args[0]
    return None


def _squeezed(node: Node, dim: int) -> Optional[Node]:
    users = [u for u in node.users if op_name(u) == "squeeze" and u.args[1:2] in ((dim,), (dim % 3,))]
    return users[0] if len(users) == 1 else None


def _batched(g: Graph, node: Node, src: dict):
    """``(out node, x, weight, out_axis, ids)`` of a batched_mm expert projection, else None."""
    a, b = node.args[:2]
    for w, x3, out_axis, dim in ((a, b, 1, -1), (b, a, 2, 1)):
        found = _gathered(g, w, src)
        x = _unsqueezed(x3, dim)
        out = _squeezed(node, dim)
        if found is not None and x is not None and out is not None:
            return out, x, found[0], out_axis, found[1]
    return None


def expert_projections(g: Graph) -> list[ExpertProjection]:
    """Every expert projection of the graph, in graph order."""
    src, out = sources(g), []
    for node in g.nodes:
        name = op_name(node)
        if name == "bmm":
            found = _batched(g, node, src)
        elif name in GROUPED and len(node.args) >= 3:
            fused = _fused(g, node.args[1], src)
            found = None if fused is None else (node, node.args[0], fused[0], 1 if fused[1] else 2, node.args[2])
        else:
            continue
        if found is None:
            continue
        end, x, weight, out_axis, ids = found
        shp = _shape(g, weight)
        end, bias = _bias_after(g, end, src, shp[0], shp[out_axis])
        out.append(ExpertProjection(end, x, weight, out_axis, shp[0], shp[3 - out_axis], shp[out_axis], ids, bias))
    return out


def expert_readers(g: Graph) -> dict[str, Node]:
    """3-D parameters read as per-expert matrices (gathered, batched or grouped matmuls; not convolutions):
    FQN -> the first node reading it."""
    src, found = sources(g), {}
    for node in g.nodes:
        name = op_name(node)
        if name not in ("index", "bmm", "baddbmm", "einsum", "matmul", "mm") and name not in GROUPED:
            continue
        for arg in node.all_input_nodes:
            fused = _fused(g, arg, src)
            if fused is not None:
                found.setdefault(fused[0], node)
    return found


@dataclass(frozen=True)
class Router:
    """What routes tokens to one layer's experts."""

    weight: str            # [experts, hidden] weight (or [hidden, experts]: axis 1)
    axis: int
    bias: Optional[str]    # the router projection's bias
    top_k: int
    select: tuple[str, ...]  # other per-expert tensors on the way to the topk (score-correction bias)
    groups: int
    gathered: tuple[str, ...] = ()  # [E, ...] tensors indexed by the chosen experts (weights, biases, scales)


def _topk_of(ids: Node) -> Optional[Node]:
    """The ``topk`` whose indices ``ids`` are (through reshapes, casts, a sort)."""
    node = ids
    for _ in range(12):
        if not isinstance(node, Node):
            return None
        if op_name(node) == "getitem" and op_name(node.args[0]) == "topk":
            return node.args[0] if node.args[1] == 1 else None
        if op_name(node) not in _ROUTE_OPS or not node.args:
            return None
        node = node.args[0]
    return None


def router(g: Graph, ids: Node, experts: int) -> tuple[Optional[Router], str]:
    """The router choosing ``ids`` among ``experts`` experts, or None and why not."""
    topk = _topk_of(ids)
    if topk is None:
        return None, "the expert index of each row does not come from a topk over router scores"
    src, seen, stack, proj, select, groups = sources(g), set(), [topk.args[0]], None, [], 1
    while stack and len(seen) < 200:
        node = stack.pop()
        if not isinstance(node, Node) or node in seen or node.op != "call_function":
            continue
        seen.add(node)
        shp = shape_of(node) or ()
        if op_name(node) in ("view", "reshape") and len(shp) >= 2 and shp[-2] * shp[-1] == experts:
            groups = max(groups, int(shp[-2]))
        if op_name(node) in _PROJ_OPS and shp and shp[-1] == experts:
            proj = proj or node
            continue  # the router's input is the hidden state: stop here
        for arg in node.all_input_nodes:
            fqn = tensor_of(g, arg, src)
            if fqn is None:
                stack.append(arg)
            elif expert_axis(_shape(g, fqn), experts) is not None and fqn not in select:
                select.append(fqn)
    if proj is None:
        return None, f"no projection to {experts} router logits before the topk choosing the experts"
    weight, axis, bias = _router_weight(g, proj, src, experts)
    if weight is None:
        return None, f"the router logits ({proj.name}) are not a projection by a [{experts}, hidden] parameter"
    return Router(weight, axis, bias, int(topk.args[1]), tuple(s for s in select if s != bias), groups,
                  _indexed_by(g, topk, experts, src)), ""


def _indexed_by(g: Graph, topk: Node, experts: int, src: dict) -> tuple[str, ...]:
    """``[experts, ...]`` parameters / buffers indexed by the indices ``topk`` chose (through reshapes, casts,
    a sort and elementwise ops such as a clamp)."""
    found, seen = [], set()
    stack = [u for u in topk.users if op_name(u) == "getitem" and u.args[1] == 1]
    while stack and len(seen) < 200:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for user in node.users:
            name = op_name(user)
            if name in ("index", "embedding") and user.args:
                fqn = tensor_of(g, user.args[0], src)
                if fqn is not None and (_shape(g, fqn) or (0,))[0] == experts and fqn not in found:
                    found.append(fqn)
            elif name in _ROUTE_OPS or name == "floor_divide" or is_pointwise(user):
                stack.append(user)
    return tuple(found)


def _router_weight(g: Graph, proj: Node, src: dict, experts: int):
    name, a = op_name(proj), proj.args
    w, b = (a[1], a[2] if len(a) > 2 else None) if name == "linear" else \
        ((a[2], a[0]) if name == "addmm" else (a[1], None))
    tr = isinstance(w, Node) and op_name(w) in ("t", "transpose", "permute")
    fqn = tensor_of(g, w.args[0] if tr else w, src)
    shp = _shape(g, fqn) or ()
    if len(shp) != 2:
        return None, 0, None
    axis = (0 if name == "linear" else 1) if not tr else (1 if name == "linear" else 0)
    bias = tensor_of(g, b, src) if isinstance(b, Node) else None
    return (fqn, axis, bias) if shp[axis] == experts else (None, 0, None)
