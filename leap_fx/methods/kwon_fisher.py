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

Deviation (CPU, any model): per-example gradients come from micro-batches of ``micro`` examples
(``micro=1``: the paper's per-example equation; each example trimmed to its own length, so no padding
is computed), not from ``torch.func`` (HF attention-mask code is not vmappable) nor from the batch-32
mini-batch gradients of the reference code (``micro=32`` reproduces those).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from leap_fx.data.batches import trim
from leap_fx.train.progress import Progress

LossFn = Callable[[object, dict], torch.Tensor]


def logits_of(outputs) -> torch.Tensor:
    """The prediction tensor of a forward's output (``.logits``, the first element, or the tensor)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if getattr(outputs, "logits", None) is not None:
        return outputs.logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise ValueError(f"cannot find logits in the model's output ({type(outputs).__name__}): pass "
                     f"loss=callable(outputs, batch) -> summed loss to calibrate")


def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision logits are widened; float64 stays)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(_wide(logits).reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")


def _squared_error(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = _wide(logits)
    return F.mse_loss(out.reshape(labels.shape), labels.to(out.dtype), reduction="sum")


LOSSES = {False: _cross_entropy, True: _squared_error}  # labels.is_floating_point() -> summed task loss


def task_loss(outputs, batch: dict) -> torch.Tensor:
    """Summed task loss of a batch: cross entropy for class labels, squared error for real targets."""
    if "labels" not in batch:
        raise ValueError("the calibration batches have no 'labels': kwon needs the task loss (pass "
                         "loss=callable(outputs, batch) -> summed loss for an unlabelled model)")
    labels = batch["labels"]
    return LOSSES[bool(labels.is_floating_point())](logits_of(outputs), labels)


def model_inputs(batch: dict) -> dict:
    """The forward's keyword inputs of a calibration batch (everything but ``labels``)."""
    return {k: v for k, v in batch.items() if k != "labels"}


def batch_size(batch: dict) -> int:
    return int(next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0])


def split(batch: dict, micro: int) -> Iterable[dict]:
    """Micro-batches of ``micro`` examples, each trimmed to its longest row."""
    n = batch_size(batch)
    for i in range(0, n, micro):
        yield trim({k: v[i:i + micro] for k, v in batch.items()})


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
    """Per-example (per micro-batch) mask gradients: ``grads[key]`` is ``[N, granules]``."""

    grads: dict[str, torch.Tensor]

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


def mask_gradients(model: nn.Module, owners: dict, batches: list[dict], loss: Optional[LossFn] = None,
                   micro: int = 1, desc: str = "kwon: mask gradients") -> MaskGrads:
    """``dL/dm`` of every owner in ``owners`` (key -> ``FixedMask``) per micro-batch of ``batches``."""
    loss = loss or task_loss
    keys = list(owners)
    params = [owners[k].values for k in keys]
    total = sum(-(-batch_size(b) // micro) for b in batches)
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    progress = Progress(total, desc=desc)
    was = model.training
    model.eval()
    try:
        with only_grad_for(model, params), torch.enable_grad():
            for batch in batches:
                for piece in split(batch, micro):
                    value = loss(model(**model_inputs(piece)), piece)
                    grads = torch.autograd.grad(value, params, allow_unused=True)
                    for k, p, g in zip(keys, params, grads):
                        rows[k].append((torch.zeros_like(p) if g is None else g).detach().reshape(1, -1))
                    progress.update(1)
    finally:
        progress.close()
        model.train(was)
    return MaskGrads({k: torch.cat(v) for k, v in rows.items()})
