"""The Plan's families: which weight slices form an attention, feed-forward, experts or residual family.

Every family declares what strip, masks and costs read of it (``FamilyFields``: ``coupled``, ``tie``, ``frozen``,
``shared``, ``reads``, with their defaults), so no reader guesses with ``getattr``.

Geometry. A *family* owns ``granules`` (attention heads, or FFN neurons). Each granule is a run of
``unit`` indices along one axis of every member weight:

- ``Slice(fqn, param, axis, start, size)`` says: in ``<fqn>.<param>``, indices
  ``start : start + size`` along ``axis`` belong to this family, laid out granule-major
  (granule ``g`` covers ``start + g*unit : start + (g+1)*unit``). Interleaved layouts (fused qkv
  stored ``[heads, 3, head_dim]``) give an explicit ``index`` list instead, still granule-major
  (``positions()`` is the list either way).
- ``bias`` names the bias that follows the slice (only when ``axis`` is the module's output axis, e.g. rows of
  an ``nn.Linear`` weight, columns of an HF ``Conv1D`` weight).

For an attention family, ``q``/``out`` have ``num_heads`` granules; ``k``/``v`` have ``num_kv_heads``
granules (grouped-query attention: q head ``h`` reads kv head ``h // (num_heads // num_kv_heads)``).
``head_dim`` is q's width per head; k, v and out may differ (``unit(role)``, from the slice sizes):
latent attention reads a head's k from ``kv_b_proj`` without the rope part every head shares, and its v
/ out heads are narrower than q; LeViT's v heads are wider. ``coupled`` lists per-head tensors that are
not projections (a relative-position bias table with one column per head, head-wise scales or biases,
sink logits, a BatchNorm after a projection): ``num_heads`` granules each, removed with the heads;
``shared`` names tensors every head reads alike (rotary tables, latent attention's rope key). Families
with the same ``tie`` read one coupled tensor (T5's bias table is computed once and added in every
layer): their heads are one tied granule, the same heads go everywhere. ``reads`` names per-head tensors
computed in the forward, not parameters (T5's cross-attention ``zeros(1, n_heads, q, k)`` bias, made by
the first layer and added in every later one), as ``module:node``: families reading one are tied too
(its shape follows the first reader's head count).
``frozen`` (a reason) says the heads cannot be stripped (a per-head tensor computed from constants, e.g. ALiBi
slopes): masks leave them alone and strip keeps them. For a feed-forward family ``up``/``gate``/``down`` have
``width`` granules of size 1. The residual stream (``Plan.residual``, only when analysed with ``residual=True``)
has ``width`` hidden dims, one index each along every tensor it touches.

Mixture of experts (transformers 5 stores a layer's experts fused: ``gate_up_proj [experts, 2*ffn, hidden]``,
``down_proj [experts, hidden, ffn]``). ``Slice.expert = e`` addresses expert ``e`` of such a parameter:
``axis`` / ``start`` / ``size`` / ``index`` are axes and positions of the whole parameter, restricted to
``W[e]`` (``gate_up_proj`` rows: axis 1; ``down_proj`` columns: axis 2). Every routed expert is a
feed-forward family whose ``router`` names the Plan key of its ``ExpertsFamily``; the ``ExpertsFamily``
(kind ``"experts"``) owns whole experts: granule ``e`` is index ``e`` along axis 0 of every fused expert
tensor (``members``) and row ``e`` of the router (``router``, with its bias), plus per-expert routing
tensors such as DeepSeek-V3's score-correction bias (``coupled``). ``top_k`` experts run per token, so
at least ``top_k`` experts always stay; ``groups > 1`` (grouped routing) splits the experts in that many
contiguous groups, which must stay equal in size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

ATTENTION = "attention"
FEED_FORWARD = "ffn"
RESIDUAL = "residual"
OUTPUT_ROLES = ("out", "down")  # slices that consume a granule's output (a head's out columns, a neuron's down column)
EXPERTS = "experts"


class FamilyFields:
    """What every family answers, declared once with its default (a family overrides the ones it has):
    ``coupled`` per-granule tensors outside its slices, ``tie`` the key of families sharing granules,
    ``frozen`` why its granules cannot be stripped, ``shared`` tensors every granule reads alike, ``reads``
    computed per-granule tensors (``module:node``)."""

    coupled: tuple = ()
    tie: str = ""
    frozen: str = ""
    shared: tuple = ()
    reads: tuple = ()


def common_prefix(fqns: Iterable[str]) -> str:
    """Lowest common ancestor module of dotted module names ("" when they share none)."""
    paths = [f.split(".") if f else [] for f in fqns]
    out = []
    for parts in zip(*paths):
        if len(set(parts)) != 1:
            break
        out.append(parts[0])
    return ".".join(out)


@dataclass(frozen=True)
class Slice:
    """Indices ``start:start+size`` (or the explicit ``index`` list) along ``axis`` of ``<fqn>.<param>``."""

    fqn: str
    param: str
    axis: int
    start: int
    size: int
    role: str  # q k v out | up gate down | router | coupled
    bias: Optional[str] = None  # bias parameter sliced together with this slice, if any
    index: Optional[tuple[int, ...]] = None  # granule-major positions when not one contiguous run
    expert: Optional[int] = None  # the slice lies in W[expert] of a fused [experts, ...] parameter

    def __post_init__(self):
        if self.index is None:
            return
        idx = tuple(int(i) for i in self.index)
        contiguous = not idx or idx == tuple(range(idx[0], idx[0] + len(idx)))
        object.__setattr__(self, "start", (idx[0] if contiguous else min(idx)) if idx else self.start)
        object.__setattr__(self, "size", len(idx))
        object.__setattr__(self, "index", None if contiguous else idx)  # contiguous: start/size say it all

    @classmethod
    def at(cls, fqn: str, param: str, axis: int, positions: Sequence[int], role: str,
           bias: Optional[str] = None, expert: Optional[int] = None) -> "Slice":
        """A slice from its granule-major positions (contiguous ones become ``start``/``size``)."""
        pos = [int(p) for p in positions]
        return cls(fqn, param, axis, pos[0] if pos else 0, len(pos), role, bias, tuple(pos), expert)

    @property
    def weight_name(self) -> str:
        return f"{self.fqn}.{self.param}" if self.fqn else self.param

    @property
    def member_name(self) -> str:
        """``weight_name``, or ``"<weight_name>[e]"`` for one expert of a fused parameter."""
        return self.weight_name if self.expert is None else f"{self.weight_name}[{self.expert}]"

    def positions(self) -> list[int]:
        """Every index of the slice along ``axis``, granule-major."""
        return list(self.index) if self.index is not None else list(range(self.start, self.start + self.size))

    def describe(self) -> str:
        where = "" if self.expert is None else f"[e{self.expert}]"
        if self.index is None:
            return f"{where}[{self.start}:{self.start + self.size}]"
        return f"{where}[{self.size} interleaved]"


@dataclass
class AttentionFamily(FamilyFields):
    """Multi-head attention: q/k/v projections feeding sdpa (or matmul-softmax-matmul), then out."""

    fqn: str  # the attention module: lowest common ancestor of q, k, v, out
    layer: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    q: Slice
    k: Slice
    v: Slice
    out: Slice
    kind: str = ATTENTION
    coupled: tuple[Slice, ...] = ()  # per-head tensors outside q/k/v/out, num_heads granules each
    tie: str = ""     # families with the same tie share their heads (one tensor read by all of them)
    frozen: str = ""  # why these heads cannot be stripped ("" = they can)
    shared: tuple[str, ...] = ()  # tensors every head reads alike (rotary tables): never sliced
    reads: tuple[str, ...] = ()  # computed per-head-shaped tensors ("module:node"), e.g. T5's zeros bias

    def __post_init__(self):
        self.coupled = tuple(Slice(**c) if isinstance(c, dict) else c for c in self.coupled)
        self.shared, self.reads = tuple(self.shared), tuple(self.reads)

    @property
    def granules(self) -> int:
        return self.num_heads

    @property
    def slices(self) -> list[Slice]:
        return [self.q, self.k, self.v, self.out]

    def unit(self, role: str) -> int:
        """Indices per granule in the slice of ``role`` (q, k, v, out): its size over its head count."""
        return getattr(self, role).size // (self.num_kv_heads if role in ("k", "v") else self.num_heads)

    def describe(self) -> str:
        kv = f" (kv {self.num_kv_heads})" if self.num_kv_heads != self.num_heads else ""
        other = {r: self.unit(r) for r in ("k", "v", "out") if self.unit(r) != self.head_dim}
        dims = f" ({', '.join(f'{r} {u}' for r, u in other.items())})" if other else ""
        extra = f", tied {self.tie}" if self.tie else ""
        coupled = [n for n in dict.fromkeys(c.weight_name for c in self.coupled) if n != self.tie]
        reads = [n for n in self.reads if n != self.tie]
        extra += f", + {', '.join(coupled)}" if coupled else ""
        extra += f", reads {', '.join(reads)}" if reads else ""
        extra += f", FROZEN: {self.frozen}" if self.frozen else ""
        return f"{self.num_heads}{kv} x {self.head_dim}{dims}{extra}"


@dataclass
class FeedForwardFamily(FamilyFields):
    """Feed-forward: up -> activation -> down, or act(gate) * up -> down. A routed expert (``router`` set)
    has slices of one expert of fused parameters (``Slice.expert``) and runs on the tokens routed to it.
    ``activation`` is an ``ACTIVATIONS`` key, or an elementwise function strip cannot evaluate, so only
    neurons with a zero down column are removable: ``""`` (GPT-OSS's clamped SwiGLU) or ``open:<ops>``
    (any elementwise ops between up and down, ``ffn_open.py``). ``coupled``: per-neuron tensors on the way
    (a BatchNorm after up), ``width`` granules each."""

    fqn: str  # lowest common ancestor of up, (gate), down
    layer: int
    width: int
    activation: str  # key of passes.analyze.activations.ACTIVATIONS, e.g. "gelu", "gelu_tanh", "relu", "silu"
    up: Slice
    down: Slice
    gate: Optional[Slice] = None
    kind: str = FEED_FORWARD
    coupled: tuple[Slice, ...] = ()
    router: str = ""  # Plan key of the ExpertsFamily routing tokens to this expert ("" = every token)

    def __post_init__(self):
        self.coupled = tuple(Slice(**c) if isinstance(c, dict) else c for c in self.coupled)

    @property
    def granules(self) -> int:
        return self.width

    @property
    def slices(self) -> list[Slice]:
        return [s for s in (self.up, self.gate, self.down) if s is not None]

    @property
    def expert(self) -> Optional[int]:
        """The expert index inside the fused parameters (None for a dense feed-forward)."""
        return self.down.expert

    def describe(self) -> str:
        extra = f", {self.activation}" if self.activation.startswith("open:") else ""
        extra += f", + {', '.join(c.weight_name for c in self.coupled)}" if self.coupled else ""
        return f"{self.width}" + (" (gated)" if self.gate is not None else "") + extra


@dataclass
class ExpertsFamily(FamilyFields):
    """Whole routed experts of one mixture-of-experts layer (see the module doc): granule ``e`` is expert ``e``
    (index ``e`` along axis 0 of every ``members`` tensor, row ``e`` of the router, entry ``e`` of each
    ``coupled`` routing tensor). ``top_k`` experts run per token; ``experts`` are the Plan keys of the
    per-expert feed-forward families, in expert order; ``width`` their ffn width as analysed."""

    fqn: str  # the mixture-of-experts block: lowest common ancestor of the router and the experts
    layer: int
    num_experts: int
    top_k: int
    router: Slice  # the router's rows (axis 0 of a [experts, hidden] weight), with its bias
    members: tuple[Slice, ...] = ()  # axis 0 of every fused expert tensor (role "up" / "down"), with biases
    coupled: tuple[Slice, ...] = ()  # per-expert routing tensors (score-correction bias), sliced with experts
    groups: int = 1  # grouped routing: experts in `groups` contiguous groups of equal size
    experts: tuple[str, ...] = ()
    width: int = 0
    kind: str = EXPERTS

    def __post_init__(self):
        self.router = Slice(**self.router) if isinstance(self.router, dict) else self.router
        self.members = tuple(Slice(**m) if isinstance(m, dict) else m for m in self.members)
        self.coupled = tuple(Slice(**c) if isinstance(c, dict) else c for c in self.coupled)
        self.experts = tuple(self.experts)

    @property
    def granules(self) -> int:
        return self.num_experts

    @property
    def slices(self) -> list[Slice]:
        return [self.router, *self.members]

    def describe(self) -> str:
        groups = f" in {self.groups} groups" if self.groups > 1 else ""
        coupled = f", + {', '.join(c.param for c in self.coupled)}" if self.coupled else ""
        return f"{self.num_experts} experts{groups}, top {self.top_k}, ffn {self.width}{coupled}"


@dataclass
class ResidualFamily(FamilyFields):
    """The residual stream (``analyze(..., residual=True)``, ``residual.py``): ``width`` hidden dimensions
    shared by every layer. Each slice spans the whole stream axis of one tensor: ``norm`` (LayerNorm /
    RMSNorm weight, with its bias), ``read`` (input columns of a projection reading the stream),
    ``write`` (output rows + bias of a projection adding to it), ``embed`` (embedding columns),
    ``param`` (a parameter added to the stream, e.g. ViT's cls token). ``norms``: norm module FQN ->
    ``[kind ("layer" | "rms"), eps]``: removing dimensions is exact only under masked statistics
    (``passes/strip/masked_norm.py``)."""

    fqn: str
    layer: int
    width: int
    slices: list[Slice]
    norms: dict[str, list] = field(default_factory=dict)
    kind: str = RESIDUAL

    @property
    def granules(self) -> int:
        return self.width

    def describe(self) -> str:
        n = {r: sum(s.role == r for s in self.slices) for r in ("norm", "read", "write")}
        return f"{self.width} hidden: {n['norm']} norms, {n['read']} readers, {n['write']} writers"


Family = Union[AttentionFamily, FeedForwardFamily, ExpertsFamily]
_FAMILY_TYPES = {ATTENTION: AttentionFamily, FEED_FORWARD: FeedForwardFamily, RESIDUAL: ResidualFamily,
                 EXPERTS: ExpertsFamily}


@dataclass(frozen=True)
class Unmatched:
    """An attention-like, MLP-like or expert site ``analyze`` saw but could not turn into a family."""

    kind: str     # ATTENTION, FEED_FORWARD or EXPERTS
    block: str    # the numbered block holding it ("" when unknown)
    module: str   # innermost module of the site
    node: str     # aten graph node
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} site {self.node} in {self.module or 'the top module'}: {self.reason}"
