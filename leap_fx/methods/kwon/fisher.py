"""Kwon et al., step 1: mask gradients and the empirical Fisher information of heads and neurons.

Every head and FFN neuron carries a mask variable ``m`` (init 1): the carrier scales the head's
out-projection columns / the neuron's down-projection column by ``m`` and gates q/k/v/up/gate by its
support, so ``m`` is exactly a multiplier on the head's context output / the neuron's activation and
``dL/dm`` comes from autograd through the carrier. For N sample examples (Kwon et al., Sec. 4.1):

    g_i = dL(x_i, y_i; m) / dm  at m = 1,        I = 1/N sum_i g_i g_i^T   (empirical Fisher)

The diagonal ``I_jj = 1/N sum_i g_ij^2`` is granule j's importance. For a converged model the
gradient term of the Taylor expansion vanishes, so pruning a set P (``dm = -1_P``) costs

    dL(P) ~ 1/2 1_P^T I 1_P = 1/(2N) || sum_{j in P} g_{:, j} ||^2                       (Eq. 3)

``MaskGrads`` keeps the per-example gradients of every family (the within-layer Fisher blocks that
mask rearrangement needs) rather than the full matrix.

Per-example gradients at the cost of a batched pass. The carrier scales the output op's columns, so
for one example ``dL/dm_g = sum_tokens sum_{c in g} x_c (gy W)_c``: ``x`` the output op's input (a
head's context, a neuron's activation), ``gy`` the gradient at its output, ``W`` its unmasked weight.
``kwon_capture`` records ``x`` and ``y`` of every family's output op in one forward of a batch,
``autograd.grad(loss, ys)`` gives every ``gy`` in one backward, and the sum above is taken per
example (exact: examples do not interact; padding gets ``gy = 0``). Batches are re-grouped by length
(``kwon_batches.by_length``), so little padding is computed. Where an output op's rows cannot be split
per example (``nn.MultiheadAttention``), every example runs alone through the carrier's autograd
(the reference; ~5x slower on CPU). Deviations: no ``torch.func`` (HF mask code is not vmappable);
``micro > 1`` sums the per-example gradients in groups (the reference code's batch-32 gradients are
``micro=32``; the paper's equation is ``micro=1``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from leap_fx.data.batches import model_inputs
from leap_fx.env.progress import Progress
from leap_fx.methods.kwon.batches import batch_size, by_length, split
from leap_fx.methods.kwon.capture import (
    OutputCapture,
    out_weight,
    output_slice,
    output_weights,
    unit,
)
from leap_fx.objectives.task_loss import ClassificationLoss

FORWARD_BATCH = 32  # examples per batched Fisher forward

LossFn = Callable[[object, dict], torch.Tensor]          # (model outputs, batch) -> summed loss
ForwardLoss = Callable[[nn.Module, dict], torch.Tensor]  # (model, batch) -> summed loss (runs the forward)


def forward_loss(loss: Optional[LossFn] = None, model_loss: Optional[ForwardLoss] = None) -> ForwardLoss:
    """``(model, batch) -> loss``: ``model_loss`` itself, else the forward on the batch's inputs then ``loss``
    (default: classification cross-entropy summed over the examples)."""
    if model_loss is not None:
        return model_loss
    loss = loss or ClassificationLoss().summed
    return lambda model, batch: loss(model(**model_inputs(batch)), batch)


@contextmanager
def only_grad_for(model: nn.Module, params: list[torch.Tensor]):
    """Inside: only ``params`` require grad (no weight gradients are built); restored on exit."""
    keep = {id(p) for p in params}
    before = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in before:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


@dataclass
class MaskGrads:
    """Per-example (per micro-batch) mask gradients: ``grads[key]`` is ``[N, granules]``; ``path``: how
    they were computed (``batched``: captured output ops; ``per-example loop``: the carrier, one at a time)."""

    grads: dict[str, torch.Tensor]
    path: str = "batched"

    @property
    def examples(self) -> int:
        return int(next(iter(self.grads.values())).shape[0]) if self.grads else 0

    def diagonal(self) -> dict[str, torch.Tensor]:
        """Importance ``I_jj = 1/N sum_i g_ij^2`` per family."""
        return {k: g.double().pow(2).mean(0) for k, g in self.grads.items()}

    def loss(self, keep: dict[str, torch.Tensor]) -> float:
        """Fisher estimate of the loss increase of pruning what ``keep`` (0/1 per family) drops (Eq. 3)."""
        return sum(fisher_loss(self.grads[k], keep[k] == 0) for k in keep if k in self.grads)


def fisher_loss(grads: torch.Tensor, pruned: torch.Tensor) -> float:
    """``1/(2N) || sum_{j in pruned} g_{:, j} ||^2`` for one family (``grads``: ``[N, G]``)."""
    s = grads.double()[:, pruned.bool()].sum(1)
    return float(0.5 * s.pow(2).sum() / max(1, grads.shape[0]))


def captured_gradients(model, plan, keys: list[str], batch: dict, loss: ForwardLoss) -> Optional[dict]:
    """Per-example ``dL/dm`` ``[B, granules]`` of the families ``keys`` from one batched pass (module
    doc), or None when some family's output-op rows cannot be split per example."""
    cap = OutputCapture(model, output_weights(plan), need_x=frozenset(keys), raw=True)
    with cap:
        value = loss(model, batch)
    n, fams = batch_size(batch), plan.families
    done = [cap.done.get(k) for k in keys]
    if any(c is None or c.x is None or not _splittable(c, n) for c in done):
        return None
    gys = torch.autograd.grad(value, [c.y for c in done], allow_unused=True)
    return {k: _per_example(model, fams[k], c.x.detach(), gy, n) for k, c, gy in zip(keys, done, gys)}


def _splittable(c, n: int) -> bool:
    return (c.x.dim() >= 3 and c.x.shape[0] == n) or (c.x.dim() == 2 and c.batch_major and c.x.shape[0] % n == 0)


def _per_example(model, fam, x: torch.Tensor, gy: Optional[torch.Tensor], n: int) -> torch.Tensor:
    sl, u = output_slice(fam), unit(fam)
    if gy is None:  # the output does not reach the loss
        return x.new_zeros(n, fam.granules)
    w = out_weight(model, fam)[:, sl.start:sl.start + sl.size]
    xs = x.reshape(n, -1, x.shape[-1])[..., sl.start:sl.start + sl.size]
    return ((gy.reshape(n, -1, gy.shape[-1]) @ w) * xs).sum(1).view(n, -1, u).sum(-1)


def _batched_rows(model, plan, keys: list[str], batches: list[dict], loss: ForwardLoss) -> Optional[dict]:
    """Per-example gradients from length-sorted batched passes, rows in the order given (or None)."""
    ordered, order = by_length(batches, FORWARD_BATCH)
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    progress = Progress(len(order), desc="kwon: mask gradients")
    try:
        for batch in ordered:
            got = captured_gradients(model, plan, keys, batch, loss)
            if got is None:
                return None
            for k in keys:
                rows[k].append(got[k].detach())
            progress.update(batch_size(batch))
    finally:
        progress.close()
    back = torch.argsort(order)
    return {k: torch.cat(v)[back] for k, v in rows.items()}


def _loop_rows(model, params: list[torch.Tensor], keys: list[str], batches: list[dict], loss: ForwardLoss) -> dict:
    """Per-example gradients by autograd through the carrier, one example at a time (the reference)."""
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    progress = Progress(sum(batch_size(b) for b in batches), desc="kwon: mask gradients (per example)")
    try:
        for piece in (p for b in batches for p in split(b, 1)):
            grads = torch.autograd.grad(loss(model, piece), params, allow_unused=True)
            for k, p, g in zip(keys, params, grads):
                rows[k].append((torch.zeros_like(p) if g is None else g).detach().reshape(1, -1))
            progress.update(1)
    finally:
        progress.close()
    return {k: torch.cat(v) for k, v in rows.items()}


def mask_gradients(model: nn.Module, plan, owners: dict, batches: list[dict], loss: Optional[LossFn] = None,
                   micro: int = 1, exact_loop: bool = False, model_loss: Optional[ForwardLoss] = None) -> MaskGrads:
    """``dL/dm`` of every owner in ``owners`` (family key -> ``FixedMask``, values at 1) per example of
    ``batches``, summed in groups of ``micro``; ``exact_loop``: the carrier path for every example.
    ``loss(outputs, batch)`` or ``model_loss(model, batch)`` (the forward inside): summed over the examples."""
    loss, keys = forward_loss(loss, model_loss), list(owners)
    params = [owners[k].values for k in keys]
    was = model.training
    model.eval()
    try:
        with only_grad_for(model, params), torch.enable_grad():
            rows, path = (None if exact_loop else _batched_rows(model, plan, keys, batches, loss)), "batched"
            if rows is None:
                rows, path = _loop_rows(model, params, keys, batches, loss), "per-example loop"
    finally:
        model.train(was)
    return MaskGrads({k: _groups(v.float(), micro) for k, v in rows.items()}, path)


def _groups(g: torch.Tensor, micro: int) -> torch.Tensor:
    """Rows summed in consecutive groups of ``micro`` (the last group may be smaller)."""
    if micro <= 1:
        return g
    return torch.stack([part.sum(0) for part in g.split(micro)])
