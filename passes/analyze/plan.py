"""The Plan: which weight slices form attention and feed-forward families, keyed by module FQN.

The Plan is the contract between the graph analysis (``passes.analyze``), the mask carrier
(``leap_fx.masks.prepare``) and exact stripping (``passes.strip``). It is plain data: it round-trips
through JSON and prints as a table.

Geometry. A *family* owns ``granules`` (attention heads, or FFN neurons). Each granule is a run of
``unit`` indices along one axis of every member weight:

- ``Slice(fqn, param, axis, start, size)`` says: in ``<fqn>.<param>``, indices
  ``start : start + size`` along ``axis`` belong to this family, laid out granule-major
  (granule ``g`` covers ``start + g*unit : start + (g+1)*unit``). Interleaved layouts (fused qkv
  stored ``[heads, 3, head_dim]``) give an explicit ``index`` list instead, still granule-major
  (``positions()`` is the list either way).
- ``bias`` names the bias that follows the slice (only when ``axis`` is the module's output
  axis, e.g. rows of an ``nn.Linear`` weight, columns of an HF ``Conv1D`` weight).

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
``frozen`` (a reason) says the heads cannot be stripped (a per-head tensor computed from
constants, e.g. ALiBi slopes): masks leave them alone and strip keeps them. For a feed-forward family
``up``/``gate``/``down`` have ``width`` granules of size 1. The residual stream (``Plan.residual``,
only when analysed with ``residual=True``) has ``width`` hidden dims, one index each along every
tensor it touches.

``Plan.unmatched`` lists the attention-like and MLP-like sites ``analyze`` saw but could not match,
with the reason (``analyze(..., strict=True)`` raises instead). ``Plan.trace`` says how the graph was
traced when ``torch.export`` failed (data-dependent branches pinned for the example inputs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Sequence, Union

from passes.io import JsonDataclass

ATTENTION = "attention"
FEED_FORWARD = "ffn"
RESIDUAL = "residual"
OUTPUT_ROLES = ("out", "down")  # slices that consume a granule's output (a head's out columns, a neuron's down column)


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
    role: str  # q k v out | up gate down | coupled
    bias: Optional[str] = None  # bias parameter sliced together with this slice, if any
    index: Optional[tuple[int, ...]] = None  # granule-major positions when not one contiguous run

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
           bias: Optional[str] = None) -> "Slice":
        """A slice from its granule-major positions (contiguous ones become ``start``/``size``)."""
        pos = [int(p) for p in positions]
        return cls(fqn, param, axis, pos[0] if pos else 0, len(pos), role, bias, tuple(pos))

    @property
    def weight_name(self) -> str:
        return f"{self.fqn}.{self.param}" if self.fqn else self.param

    def positions(self) -> list[int]:
        """Every index of the slice along ``axis``, granule-major."""
        return list(self.index) if self.index is not None else list(range(self.start, self.start + self.size))

    def describe(self) -> str:
        if self.index is None:
            return f"[{self.start}:{self.start + self.size}]"
        return f"[{self.size} interleaved]"


@dataclass
class AttentionFamily:
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
class FeedForwardFamily:
    """Feed-forward: up -> activation -> down, or act(gate) * up -> down. ``activation`` is an
    ``ACTIVATIONS`` key, or ``open:<ops>`` for elementwise ops the matcher does not name (``ffn_open.py``);
    ``coupled``: per-neuron tensors on the way (a BatchNorm after up), ``width`` granules each."""

    fqn: str  # lowest common ancestor of up, (gate), down
    layer: int
    width: int
    activation: str  # key of passes.analyze.activations.ACTIVATIONS, e.g. "gelu", "gelu_tanh", "relu", "silu"
    up: Slice
    down: Slice
    gate: Optional[Slice] = None
    kind: str = FEED_FORWARD
    coupled: tuple[Slice, ...] = ()

    def __post_init__(self):
        self.coupled = tuple(Slice(**c) if isinstance(c, dict) else c for c in self.coupled)

    @property
    def granules(self) -> int:
        return self.width

    @property
    def slices(self) -> list[Slice]:
        return [s for s in (self.up, self.gate, self.down) if s is not None]

    def describe(self) -> str:
        extra = f", {self.activation}" if self.activation.startswith("open:") else ""
        extra += f", + {', '.join(c.weight_name for c in self.coupled)}" if self.coupled else ""
        return f"{self.width}" + (" (gated)" if self.gate is not None else "") + extra


@dataclass
class ResidualFamily:
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


Family = Union[AttentionFamily, FeedForwardFamily]
_FAMILY_TYPES = {ATTENTION: AttentionFamily, FEED_FORWARD: FeedForwardFamily, RESIDUAL: ResidualFamily}


@dataclass(frozen=True)
class Unmatched:
    """An attention-like or MLP-like site ``analyze`` saw but could not turn into a family."""

    kind: str     # ATTENTION or FEED_FORWARD
    block: str    # the numbered block holding it ("" when unknown)
    module: str   # innermost module of the site
    node: str     # aten graph node
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} site {self.node} in {self.module or 'the top module'}: {self.reason}"


@dataclass
class Plan(JsonDataclass):  # to_json / from_json: JsonDataclass's, over to_dict / from_dict below
    """Families keyed by their module FQN, plus what was traced and what could not be matched.
    ``residual`` (the residual stream, only when asked for) is kept apart from ``families`` (which
    holds per-layer families only); ``all_families()`` lists both, keyed ``"residual"`` for the stream."""

    families: dict[str, Family] = field(default_factory=dict)
    model_class: str = ""
    residual: Optional[ResidualFamily] = None
    unmatched: list[Unmatched] = field(default_factory=list)
    trace: str = ""  # how the graph was traced when torch.export failed ("": torch.export; pinned.py)

    # -- queries -------------------------------------------------------------------------
    def attention(self) -> list[AttentionFamily]:
        return [f for f in self.families.values() if f.kind == ATTENTION]

    def feed_forward(self) -> list[FeedForwardFamily]:
        return [f for f in self.families.values() if f.kind == FEED_FORWARD]

    def family_of(self, weight_name: str) -> Optional[Family]:
        """The family a parameter (``"<fqn>.weight"``) belongs to, or None."""
        for fam in self.families.values():
            if any(s.weight_name == weight_name for s in fam.slices):
                return fam
        return None

    def weight_names(self) -> list[str]:
        return sorted({s.weight_name for f in self.families.values() for s in f.slices})

    def all_families(self) -> dict:
        """``families`` plus the residual stream (key ``"residual"``) when the Plan has one."""
        return {**self.families, **({RESIDUAL: self.residual} if self.residual is not None else {})}

    @classmethod
    def from_families(cls, fams: dict, model_class: str = "") -> "Plan":
        """A Plan from ``all_families()``-style entries (the residual stream goes to ``residual``)."""
        res = [f for f in fams.values() if f.kind == RESIDUAL]
        return cls(families={k: f for k, f in fams.items() if f.kind != RESIDUAL}, model_class=model_class,
                   residual=res[0] if res else None)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {"model_class": self.model_class,
               "families": {k: asdict(v) for k, v in self.families.items()},
               "unmatched": [asdict(u) for u in self.unmatched]}
        if self.trace:
            out["trace"] = self.trace
        if self.residual is not None:
            out["residual"] = asdict(self.residual)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        fams: dict[str, Family] = {}
        entries = {**d["families"], **({RESIDUAL: d["residual"]} if d.get("residual") else {})}
        for key, fd in entries.items():
            fd = dict(fd)
            typ = _FAMILY_TYPES[fd["kind"]]
            for name in ("q", "k", "v", "out", "up", "down", "gate"):
                if isinstance(fd.get(name), dict):
                    fd[name] = Slice(**fd[name])
            if isinstance(fd.get("slices"), list):
                fd["slices"] = [Slice(**s) if isinstance(s, dict) else s for s in fd["slices"]]
            fams[key] = typ(**fd)
        plan = cls.from_families(fams, d.get("model_class", ""))
        plan.unmatched = [Unmatched(**u) for u in d.get("unmatched", [])]
        plan.trace = d.get("trace", "")
        return plan

    # -- structure ---------------------------------------------------------------------------
    def blocks(self) -> list[str]:
        """The transformer blocks: per layer, the common ancestor of its families (outermost kept)."""
        by_layer: dict[int, list[str]] = {}
        for fam in self.families.values():
            by_layer.setdefault(fam.layer, []).append(fam.fqn)
        found = sorted({common_prefix(fqns) for fqns in by_layer.values()})
        if "" in found:
            return [""]
        return [b for b in found if not any(b != o and b.startswith(o + ".") for o in found)]

    # -- display ---------------------------------------------------------------------------
    def table(self) -> str:
        rows = [("family", "layer", "module", "matrices", "heads x head_dim / ffn width")]
        for fqn, f in sorted(self.families.items(), key=lambda kv: (kv[1].layer, kv[1].kind)):
            fused = {s.fqn for s in f.slices if sum(t.fqn == s.fqn for t in f.slices) > 1}
            mats = ", ".join(f"{s.role}={s.fqn.rsplit('.', 1)[-1]}"
                             + (s.describe() if s.fqn in fused or s.index is not None else "")
                             for s in f.slices)
            rows.append((f.kind, str(f.layer), fqn, mats, f.describe()))
        if self.residual is not None:
            rows.append((RESIDUAL, "all", "(stream)", f"{len(self.residual.slices)} tensors",
                         self.residual.describe()))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [f"WARNING: {u}" for u in self.unmatched]
        lines += [f"NOTE: {self.trace}"] if self.trace else []
        return f"Plan for {self.model_class or 'model'}: {len(self.attention())} attention, " \
               f"{len(self.feed_forward())} feed-forward families\n" + "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
