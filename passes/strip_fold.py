"""Which heads / neurons are provably removable, and the constants they leave behind.

A granule may go only when its contribution to the residual stream is zero or a constant:

- attention head ``h`` (reading kv head ``j``): ``out[:, h] @ softmax(q_h k_j^T) (x W_v_j + b_v_j)``.
  Zero ``out`` columns -> 0. Zero ``v`` rows -> every value row is ``b_v_j``; a softmax row sums
  to 1 (padding / causal masks only move mass, eval mode: no dropout), so the head adds the
  constant ``out[:, h] @ b_v_j``, folded into the out bias. Zero q/k with live v is *not*
  removable: uniform attention still averages ``x W_v``.
- FFN neuron ``j`` (LEAP Eq. 1 granules): zero ``down`` column -> 0; zero ``up`` row ->
  ``act(b_up_j) * down[:, j]`` folded into the down bias. Gated ``act(gate_j) * up_j``: zero when
  ``up_j`` is identically 0, or ``gate_j`` is the constant ``c`` with ``act(c) == 0``; constant when
  both rows are zero.

The rules here only *decide* and *fold* (edit values); ``passes.strip_surgery`` removes shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from passes.plan import AttentionFamily, FeedForwardFamily, Slice

_LOCAL_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``passes.families.ACTIVATIONS[name]`` when available, else the same keys locally."""
    try:
        from passes.families import ACTIVATIONS  # owned by the graph-analysis pass
        table = ACTIVATIONS
    except ImportError:
        table = _LOCAL_ACTIVATIONS
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(table)} "
                         "(add it to passes.families.ACTIVATIONS)")
    return table[name]


# -- tensor access --------------------------------------------------------------------------
def tensor(model: nn.Module, full_name: str) -> torch.Tensor:
    """A parameter (or buffer) by its full dotted name."""
    fqn, _, name = full_name.rpartition(".")
    return getattr(model.get_submodule(fqn) if fqn else model, name)


def bias_name(sl: Slice, model: nn.Module) -> Optional[str]:
    """Full name of the bias sliced with ``sl`` (``Slice.bias`` is relative to ``sl.fqn``)."""
    if sl.bias is None:
        return None
    for cand in (f"{sl.fqn}.{sl.bias}" if sl.fqn else sl.bias, sl.bias):
        try:
            if isinstance(tensor(model, cand), torch.Tensor):
                return cand
        except AttributeError:
            continue
    return None


def indices(sl: Slice, granules: list[int], unit: int) -> list[int]:
    """Absolute indices along ``sl.axis`` of the given granules."""
    return [sl.start + g * unit + u for g in granules for u in range(unit)]


def part(t: torch.Tensor, axis: int, idx: list[int]) -> torch.Tensor:
    return t.detach().index_select(axis, torch.as_tensor(idx, dtype=torch.long, device=t.device))


def is_zero(t: torch.Tensor, atol: float) -> bool:
    return bool(t.abs().max() <= atol) if t.numel() else True


def through(sl: Slice, model: nn.Module, granule: int, unit: int, vec: torch.Tensor) -> torch.Tensor:
    """``W[:, cols] @ vec`` for an input-axis slice (Linear ``[out, in]`` or Conv1D ``[in, out]``)."""
    w = part(tensor(model, sl.weight_name), sl.axis, indices(sl, [granule], unit))
    return torch.tensordot(vec.to(w.dtype), w, dims=([0], [sl.axis]))


# -- folding ----------------------------------------------------------------------------------
_ADDS_OUTPUT_BIAS = ("Conv1D",)  # besides nn.Linear: modules whose forward is x @ W + bias


def output_bias(model: nn.Module, sl: Slice, create: bool) -> Optional[torch.Tensor]:
    """The bias added after the input-axis slice ``sl`` (out-proj / FFN-down); maybe created.

    Only ``nn.Linear`` (which may get a new zero bias) and HF ``Conv1D`` are trusted to add
    ``self.bias`` to their output; otherwise None, and granules with a nonzero constant stay."""
    mod = model.get_submodule(sl.fqn)
    if not (isinstance(mod, nn.Linear) or type(mod).__name__ in _ADDS_OUTPUT_BIAS):
        return None
    b = getattr(mod, "bias", None)
    if isinstance(b, torch.Tensor):
        return b
    if create and isinstance(mod, nn.Linear) and sl.param == "weight" and sl.axis == 1:
        w = mod.weight
        mod.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device),
                                requires_grad=w.requires_grad)
        return mod.bias
    return None


def can_fold(model: nn.Module, sl: Slice) -> bool:
    mod = model.get_submodule(sl.fqn)
    return output_bias(model, sl, create=False) is not None or \
        (isinstance(mod, nn.Linear) and sl.param == "weight" and sl.axis == 1)


@dataclass
class Cut:
    """What strip does to one family: granules removed, constants folded, a kept placeholder."""

    fqn: str
    kind: str
    layer: int
    granules: int
    remove: list[int] = field(default_factory=list)      # q heads / neurons
    kv_remove: list[int] = field(default_factory=list)   # kv heads (attention only)
    folds: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (granule, constant)
    placeholder: Optional[int] = None  # kept, zeroed granule when every granule is removable
    note: str = ""

    @property
    def kept(self) -> list[int]:
        gone = set(self.remove)
        return [g for g in range(self.granules) if g not in gone]


def decide_attention(model: nn.Module, fam: AttentionFamily, atol: float = 0.0) -> Cut:
    """Whole kv groups go when every q head of the group is zero or constant (GQA-safe)."""
    h, kv, d = fam.num_heads, fam.num_kv_heads, fam.head_dim
    if kv <= 0 or h % kv:
        raise ValueError(f"{fam.fqn}: num_heads {h} is not a multiple of num_kv_heads {kv}")
    group = h // kv
    out_w = tensor(model, fam.out.weight_name)
    v_w = tensor(model, fam.v.weight_name)
    vb_name = bias_name(fam.v, model)
    vb = tensor(model, vb_name) if vb_name else None
    cut = Cut(fam.fqn, fam.kind, fam.layer, h)
    for j in range(kv):
        heads = list(range(j * group, (j + 1) * group))
        out_zero = [is_zero(part(out_w, fam.out.axis, indices(fam.out, [q], d)), atol) for q in heads]
        v_zero = is_zero(part(v_w, fam.v.axis, indices(fam.v, [j], d)), atol)
        if all(out_zero):
            cut.remove += heads
            cut.kv_remove.append(j)
        elif v_zero:
            b_v = part(vb, 0, indices(fam.v, [j], d)) if vb is not None else None
            consts = [(q, through(fam.out, model, q, d, b_v)) for q, z in zip(heads, out_zero)
                      if not z and b_v is not None and not is_zero(b_v, 0.0)]
            if consts and not can_fold(model, fam.out):
                continue  # nowhere to put the constant: keep the group
            cut.remove += heads
            cut.kv_remove.append(j)
            cut.folds += consts
    if group > 1:
        cut.note = f"GQA: only whole kv groups of {group} q heads are removed"
    return cut


def decide_ffn(model: nn.Module, fam: FeedForwardFamily, atol: float = 0.0) -> Cut:
    """Per-neuron rules above; ``folds`` holds ``const * down[:, j]`` for constant neurons."""
    act = activation(fam.activation)
    down_w = tensor(model, fam.down.weight_name)
    up_w = tensor(model, fam.up.weight_name)
    up_b = _bias_vec(model, fam.up)
    gate_w = tensor(model, fam.gate.weight_name) if fam.gate is not None else None
    gate_b = _bias_vec(model, fam.gate) if fam.gate is not None else None
    foldable = can_fold(model, fam.down)
    cut = Cut(fam.fqn, fam.kind, fam.layer, fam.width)
    for j in range(fam.width):
        if is_zero(part(down_w, fam.down.axis, indices(fam.down, [j], 1)), atol):
            cut.remove.append(j)
            continue
        up_zero = is_zero(part(up_w, fam.up.axis, indices(fam.up, [j], 1)), atol)
        b_u = up_b[j] if up_b is not None else torch.zeros((), dtype=up_w.dtype)
        if gate_w is None:
            const = act(b_u) if up_zero else None
        else:
            gate_zero = is_zero(part(gate_w, fam.gate.axis, indices(fam.gate, [j], 1)), atol)
            b_g = gate_b[j] if gate_b is not None else torch.zeros((), dtype=gate_w.dtype)
            if up_zero and gate_zero:
                const = act(b_g) * b_u
            elif (up_zero and b_u == 0) or (gate_zero and act(b_g) == 0):
                const = torch.zeros((), dtype=up_w.dtype)
            else:
                const = None
        if const is None:
            continue
        if const != 0:
            if not foldable:
                continue
            cut.folds.append((j, through(fam.down, model, j, 1, const.reshape(1))))
        cut.remove.append(j)
    return cut


def _bias_vec(model: nn.Module, sl: Slice) -> Optional[torch.Tensor]:
    name = bias_name(sl, model)
    if name is None:
        return None
    return part(tensor(model, name), 0, list(range(sl.start, sl.start + sl.size))).reshape(-1)


@torch.no_grad()
def apply_folds(model: nn.Module, cut: Cut, into: Slice) -> None:
    """Add every folded constant to the bias after ``into`` (created on nn.Linear if absent)."""
    if not cut.folds:
        return
    b = output_bias(model, into, create=True)
    if b is None:
        raise ValueError(f"{into.weight_name}: cannot fold constants, no bias to fold into")
    for _, const in cut.folds:
        b.add_(const.to(b.dtype))


@torch.no_grad()
def zero_placeholder(model: nn.Module, fam, cut: Cut) -> None:
    """Keep one granule of an emptied family so no tensor has width 0; zero it so it adds 0."""
    if len(set(cut.remove)) != cut.granules:
        return
    if isinstance(fam, AttentionFamily):
        group = fam.num_heads // fam.num_kv_heads
        keep_q, keep_kv, unit = list(range(group)), [0], fam.head_dim
        per_slice = {"q": keep_q, "k": keep_kv, "v": keep_kv, "out": keep_q}
        cut.kv_remove = [j for j in cut.kv_remove if j != 0]
    else:
        keep_q, unit = [0], 1
        per_slice = {"up": keep_q, "gate": keep_q, "down": keep_q}
    cut.placeholder = keep_q[0]
    cut.remove = [g for g in cut.remove if g not in keep_q]
    for sl in fam.slices:
        idx = indices(sl, per_slice[sl.role], unit)
        tensor(model, sl.weight_name).index_fill_(sl.axis, torch.as_tensor(idx), 0.0)
        bname = bias_name(sl, model)
        if bname is not None:
            tensor(model, bname).index_fill_(0, torch.as_tensor(idx), 0.0)
