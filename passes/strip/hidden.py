"""Where hidden dimensions are stripped: the residual family's strip rules (CoFi's ``z_hidden``).

A hidden dim ``i`` can go when nothing downstream reads it: every norm of the stream computes its
statistics over the kept set ``K`` only (a ``MaskedNorm`` hook, ``masked_norm.py``: the semantics the
gates trained under) and every projection reading the stream has a zero input column ``i``. Then the
stream's value in dim ``i`` (embeddings, biases, writer rows) never reaches an output, and the dim is
removed from every tensor of the family: embedding columns, norm weights and biases, reader columns,
writer rows and biases, parameters added to the stream. The norms over the ``|K|`` kept dims then
compute exactly what the masked norms did, so the hooks are uninstalled (``finish``).

Not removable (nothing is cut, ``Cut.note`` says why): a norm without a ``MaskedNorm`` (the plain
norm's statistics include every dim), norms disagreeing on ``K``, or a reader with a non-zero column
outside ``K``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from passes.analyze.plan import RESIDUAL, ResidualFamily, Slice
from passes.strip.cut import Cut, KindHandler
from passes.strip.masked_norm import installed, uninstall
from passes.strip.tensors import is_zero, part, tensor

ROLES = ("norm", "embed", "param", "write", "read")


class Hidden(KindHandler):
    kind = RESIDUAL

    @classmethod
    def decide(cls, model: nn.Module, fam: ResidualFamily, atol: float = 0.0) -> Cut:
        cut = Cut(fam.fqn, fam.kind, fam.layer, fam.width)
        hooks = installed(model, fam)
        missing = sorted(set(fam.norms) - set(hooks))
        if missing:
            cut.note = f"norms without masked statistics (all dims kept): {missing[:3]}"
            return cut
        keeps = [h.keep for h in hooks.values()]
        if any(callable(k) for k in keeps):
            cut.note = "masked norms still follow live gates: fold the model first"
            return cut
        keep = keeps[0].to(torch.bool).cpu()
        if any(not torch.equal(k.to(torch.bool).cpu(), keep) for k in keeps) or keep.numel() != fam.width:
            cut.note = "the norms of the stream keep different dims"
            return cut
        drop = [i for i in range(fam.width) if not keep[i]]
        if not drop or len(drop) == fam.width:
            cut.note = "no dim dropped" if not drop else "every dim dropped: nothing left to keep"
            return cut
        for sl in fam.slices:
            if sl.role == "read" and not is_zero(part(tensor(model, sl.weight_name), sl.axis, drop), atol):
                cut.note = f"{sl.weight_name} reads dropped dims (non-zero columns)"
                return cut
        cut.remove = drop
        return cut

    @classmethod
    def removed_by_role(cls, fam, cut):
        return {role: (cut.remove, 1) for role in ROLES}

    @classmethod
    def fold_into(cls, fam) -> Slice:
        return fam.slices[0]  # hidden dims leave no constant (never folded)

    @classmethod
    def placeholder(cls, fam, cut):
        raise ValueError("the residual stream is never emptied (decide keeps at least one dim)")

    @classmethod
    def quantities(cls, fam, cut):
        return {"hidden": fam.width}, {"hidden": fam.width - len(cut.remove)}

    @classmethod
    def shrunk(cls, fam, cut, slices):
        width = fam.width - len(cut.remove)
        return dataclasses.replace(fam, width=width, slices=[dataclasses.replace(s, size=width) for s in fam.slices])

    @classmethod
    def finish(cls, model: nn.Module, fam, cut: Cut) -> None:
        """Dims outside ``K`` are gone: the plain norms now compute the masked ones."""
        if cut.remove:
            uninstall(model, fam)
