"""Where FFN neurons are stripped: the feed-forward family's strip rules (LEAP Eq. 1 granules).

Neuron ``j``: zero ``down`` column -> 0; zero ``up`` row -> ``act(b_up_j) * down[:, j]`` folded into
the down bias. Gated ``act(gate_j) * up_j``: zero when ``up_j`` is identically 0, or ``gate_j`` is the
constant ``c`` with ``act(c) == 0``; constant when both rows are zero. Per-neuron tensors
(``fam.coupled``, a BatchNorm after up) lose the removed neurons' entries.

A routed expert (slices of one expert of fused tensors) is read the same way on ``W[e]``; nothing folds
into its down bias (constants stay), and with an activation strip cannot evaluate (``""``: an
elementwise gate outside ``ACTIVATIONS``; ``open:<ops>``: any elementwise ops, ``ffn_open.py``) only
zero down columns count. Every expert of a fused tensor keeps the same width: ``passes/strip/experts.py``
evens them out after ``decide``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from passes.analyze.activations import activation
from passes.analyze.plan import FEED_FORWARD, FeedForwardFamily, Slice
from passes.strip.cut import Cut, KindHandler
from passes.strip.fold import can_fold
from passes.strip.tensors import bias_vector, indices, is_zero, matrix, part, through


class Neurons(KindHandler):
    kind = FEED_FORWARD
    ATTRS = {"LlamaMLP": (("intermediate_size", "ffn"),)}
    GENERIC = {"ffn": ("intermediate_size", "ffn_dim", "dim_feedforward", "ffn_size", "hidden_features",
                       "intermediate_dim")}

    @classmethod
    def decide(cls, model: nn.Module, fam: FeedForwardFamily, atol: float = 0.0) -> Cut:
        """Per-neuron rules above; ``folds`` holds ``const * down[:, j]`` for constant neurons."""
        act = activation(fam.activation) if fam.activation else None
        down_w, down_axis = matrix(model, fam.down)
        (up_w, up_axis), up_b = matrix(model, fam.up), bias_vector(model, fam.up)
        gate_w, gate_axis = matrix(model, fam.gate) if fam.gate is not None else (None, 0)
        gate_b = bias_vector(model, fam.gate) if fam.gate is not None else None
        foldable = fam.down.expert is None and can_fold(model, fam.down)
        cut = Cut(fam.fqn, fam.kind, fam.layer, fam.width)
        for j in range(fam.width):
            if is_zero(part(down_w, down_axis, indices(fam.down, [j], 1)), atol):
                cut.remove.append(j)
                continue
            if act is None:  # an elementwise gate strip cannot evaluate: zero down columns only
                continue
            up_zero = is_zero(part(up_w, up_axis, indices(fam.up, [j], 1)), atol)
            b_u = up_b[j] if up_b is not None else torch.zeros((), dtype=up_w.dtype)
            if gate_w is None:
                const = act(b_u) if up_zero else None
            else:
                gate_zero = is_zero(part(gate_w, gate_axis, indices(fam.gate, [j], 1)), atol)
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

    @classmethod
    def removed_by_role(cls, fam, cut):
        return {"up": (cut.remove, 1), "gate": (cut.remove, 1), "down": (cut.remove, 1),
                "coupled": (cut.remove, None)}  # None: the slice's size / width

    @classmethod
    def fold_into(cls, fam) -> Slice:
        return fam.down

    @classmethod
    def placeholder(cls, fam, cut):
        cut.placeholder = 0
        cut.remove = [g for g in cut.remove if g != 0]
        return {"up": [0], "gate": [0], "down": [0]}

    @classmethod
    def quantities(cls, fam, cut):
        return {"ffn": fam.width}, {"ffn": fam.width - len(cut.remove)}

    @classmethod
    def shrunk(cls, fam, cut, slices):
        coupled = tuple(slices.pop(f"coupled:{c.weight_name}", c) for c in fam.coupled)
        return dataclasses.replace(fam, width=fam.width - len(cut.remove), coupled=coupled, **slices)

