"""Kwon et al., step 4: mask tuning, layer by layer, by linear least squares.

A family's output op (attention out projection / FFN down projection) is linear in the mask values of
its kept granules K:  ``y(m) = sum_{g in K} m_g A_g + c``  with ``A_g = x_g W_g^T`` (``x_g``: a head's
context columns / a neuron's activation, ``W_g``: its columns of the out / down weight, ``c``: the bias
and any columns outside the family). With the unpruned model's sub-layer output ``t = y_T + r_T`` on
the same sample (``r``: the residual partner, ``kwon_capture.py``) and the pruned model's own residual
``r_S``, the scales solve (Kwon et al., Sec. 4.4)

    m* = argmin_m || sum_g m_g A_g - B ||^2,    B = t - r_S - c
       ~ 1 + (A^T A + lambda I)^-1 (A^T B - A^T A 1)    (damped step from the searched mask m = 1)

where ``A^T A = blocksum_u((X^T X) o (W^T W))`` and ``A^T B = blocksum_u(sum_rows X o (B W))``
(``u``: head_dim or 1; no ``[tokens x hidden x K]`` tensor is formed). Families are tuned in forward
order, each on the inputs the already-tuned earlier families produce, so later layers also absorb the
error that reaches them through the residual stream (``kwon_replay.Replay`` starts those forwards at
the family's block). ``lambda = damping * mean(diag(A^T A))``.

Deviations from the reference code (all CPU): normal equations accumulated in float64 and solved with
``torch.linalg.lstsq`` as a damped (Levenberg-Marquardt) step from the searched mask (theirs: LSMR /
inverse with cupy, undamped; ``damping -> 0`` is theirs); a solution outside ``[-bound, bound]`` (the
paper's 10) or not finite, or one that does not lower the error, is rejected for that family only,
whose values stay 1, and later families are still tuned (theirs stops tuning at the first rejection);
every layer is fitted on every non-padding token (theirs skips layer 0's heads and fits only [CLS] in a
classifier's last FFN: which token a model pools is not known in general).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from leap_fx.methods.kwon_batches import batch_size
from leap_fx.methods.kwon_capture import capture, out_weight, output_slice, output_weights, unit
from leap_fx.methods.kwon_replay import Replay
from leap_fx.train.progress import Progress

ROUNDING = 1e-9  # relative to B^T B: error differences below this are float64 rounding of m'Am - 2m'b + b'b


@dataclass
class Targets:
    """The unpruned model's sub-layer outputs ``t = y + r`` per family and batch (token rows)."""

    t: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    residual: dict[str, bool] = field(default_factory=dict)  # family has a residual partner (every batch)
    order: list[str] = field(default_factory=list)           # output ops in forward order
    unsupported: set[str] = field(default_factory=set)
    tokens: float = 0.0                                      # token rows per example at the first op


@torch.no_grad()
def teacher_targets(model, plan, batches: list[dict]) -> Targets:
    """Capture ``t`` on ``batches`` from ``model`` as it is (call it with every mask at 1)."""
    fams, out = output_weights(plan), Targets()
    examples = 0
    for batch in batches:
        cap = capture(model, fams, batch)
        out.order = out.order or list(cap.order)
        out.unsupported |= cap.unsupported
        for key, c in cap.done.items():
            out.t.setdefault(key, []).append(c.y if c.r is None else c.y + c.r)
            out.residual[key] = out.residual.get(key, True) and c.r is not None
        examples += batch_size(batch)
        if out.order:
            out.tokens += cap.done[out.order[0]].y.shape[0]
    out.tokens /= max(1, examples)
    return out


@dataclass
class Fit:
    """What tuning did to one family (``mse``: mean squared reconstruction error per output element)."""

    family: str
    kept: int
    status: str                      # tuned | rejected: ... | skipped: ...
    mse_before: Optional[float] = None
    mse_after: Optional[float] = None
    scale_min: Optional[float] = None
    scale_max: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def columns(fam, kept: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Input columns (Linear orientation) of the kept granules, granule-major; and the unit."""
    u = unit(fam)
    return (output_slice(fam).start + kept[:, None] * u + torch.arange(u)).reshape(-1), u


@torch.no_grad()
def normal_equations(model, plan, key: str, kept: torch.Tensor, batches, targets: Targets,
                     replay: Optional[Replay] = None):
    """``(A^T A, A^T B, B^T B, rows x outputs)`` of one family on ``batches`` (see module doc);
    ``replay`` starts each forward at the family's block."""
    fam = plan.families[key]
    cols, u = columns(fam, kept)
    wk = out_weight(model, fam)[:, cols].float()
    fams, k = output_weights(plan), len(kept)
    xtx = torch.zeros(len(cols), len(cols), dtype=torch.float64)
    xb = torch.zeros(len(cols), dtype=torch.float64)
    btb, count = 0.0, 0
    for i, (batch, t) in enumerate(zip(batches, targets.t[key])):
        with replay.patched(i) if replay is not None else nullcontext():
            c = capture(model, fams, batch, need_x=frozenset({key}), stop_at=key).done[key]
        if targets.residual[key] and c.r is None:
            raise RuntimeError(f"{key}: the residual add seen in the unpruned model is missing now")
        x = c.x[:, cols].float()
        b = t.float() - c.y.float() + x @ wk.t() - (c.r.float() if targets.residual[key] else 0.0)
        xtx += (x.t() @ x).double()
        xb += (x * (b @ wk)).sum(0).double()
        btb += float(b.double().pow(2).sum())
        count += b.numel()
    ata = (xtx * (wk.t() @ wk).double()).view(k, u, k, u).sum((1, 3))
    return ata, xb.view(k, u).sum(1), btb, count


def solve(ata: torch.Tensor, atb: torch.Tensor, damping: float, start: torch.Tensor) -> torch.Tensor:
    """Damped least squares from ``start`` (Levenberg-Marquardt step, float64, CPU):
    ``m = start + d``, ``(A^T A + lambda I) d = A^T B - A^T A start``, ``lambda = damping * mean diag``;
    ``damping -> 0`` is the plain least-squares solution, a larger one keeps ``m`` nearer ``start``."""
    lam = damping * float(ata.diagonal().mean().clamp_min(1e-30))
    a = ata + lam * torch.eye(len(atb), dtype=ata.dtype)
    return start + torch.linalg.lstsq(a, (atb - ata @ start).unsqueeze(1)).solution.squeeze(1)


def fit_family(model, plan, key: str, owner, batches, targets: Targets, damping: float, bound: float,
               replay: Optional[Replay] = None) -> Fit:
    """Tune one family's kept scales in place (``owner.set``); returns what happened."""
    values = owner.values.detach().reshape(-1).clone()
    kept = torch.nonzero(values).flatten()
    if len(kept) == 0:
        return Fit(key, 0, "skipped: nothing kept")
    ata, atb, btb, count = normal_equations(model, plan, key, kept, batches, targets, replay)
    err = lambda m: float(m @ ata @ m - 2 * m @ atb + btb) / max(1, count)  # noqa: E731
    ones = values[kept].double()
    m = solve(ata, atb, damping, ones)
    fit = Fit(key, len(kept), "tuned", err(ones), None, float(m.min()), float(m.max()))
    if not bool(torch.isfinite(m).all()) or float(m.abs().max()) > bound:
        fit.status = f"rejected: a scale outside [-{bound:g}, {bound:g}]; values stay 1"
    elif err(m) > fit.mse_before + ROUNDING * btb / max(1, count):  # the expansion cancels: allow rounding
        fit.status = "rejected: no lower error; values stay 1"
    else:
        values[kept] = m.to(values.dtype)
        owner.set(values.reshape(owner.grid_shape))
    fit.mse_after = err(m) if fit.status == "tuned" else fit.mse_before
    return fit


def tune(model, plan, owners: dict, batches: list[dict], targets: Targets, damping: float = 1e-6,
         bound: float = 10.0, replay: bool = True) -> list[Fit]:
    """Tune every family in forward order (see module doc); families that cannot be are listed skipped.
    ``replay=False``: every forward from the embeddings (the reference for ``Replay``)."""
    fits, blocks = [], Replay(model, plan, batches if replay else [])
    progress = Progress(len(plan.families), desc="kwon: mask tuning")
    for key in targets.order + [k for k in plan.families if k not in targets.order]:
        if key not in owners:
            fits.append(Fit(key, 0, "skipped: not masked"))
        elif key not in targets.order or key in targets.unsupported:
            fits.append(Fit(key, int(owners[key].hard_mask().sum()), "skipped: output op not understood "
                                                                       "(e.g. nn.MultiheadAttention)"))
        else:
            blocks.advance(max(0, blocks.block_of(plan.families[key].fqn)))
            fits.append(fit_family(model, plan, key, owners[key], batches, targets, damping, bound, blocks))
        progress.update(1)
    progress.close()
    return fits
