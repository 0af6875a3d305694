"""Kwon et al., step 4: mask tuning, layer by layer, by linear least squares.

A family's output op (attention out projection / FFN down projection) is linear in the mask values of
its kept granules K:  ``y(m) = sum_{g in K} m_g A_g + c``  with ``A_g = x_g W_g^T`` (``x_g``: a head's
context columns / a neuron's activation, ``W_g``: its columns of the out / down weight, ``c``: the bias
and any columns outside the family). With the teacher's sub-layer output ``t = y_T + r_T`` on the same
sample (``r``: the residual partner, ``kwon_capture.py``; the teacher: the unpruned model) and the
pruned model's own residual ``r_S``, the scales solve (Kwon et al., Sec. 4.4)

    m* = argmin_m || sum_g m_g A_g - B ||^2,    B = t - r_S - c
       ~ 1 + (A^T A + lambda I)^-1 (A^T B - A^T A 1)    (damped step from the searched mask m = 1)

where ``A^T A = blocksum_u((X^T X) o (W^T W))`` and ``A^T B = blocksum_u(sum_rows X o (B W))``
(``u``: head_dim or 1; no ``[tokens x hidden x K]`` tensor is formed). Families are tuned in forward
order, each on the inputs the already-tuned earlier families produce, so later layers also absorb the
error that reaches them through the residual stream (``kwon_replay.Replay`` starts those forwards at
the family's block). ``lambda = damping * mean(diag(A^T A))``.

**Rows.** The sum runs over the non-padding token rows that can change the model's output
(``reaching_rows``: a random projection of the outputs back-propagated to each output op; a row whose
gradient is exactly 0 is read by nothing downstream). In a BERT classifier only [CLS] leaves the last
layer (the pooler), so both of its families are fitted on [CLS] alone: the reference code's
``cls_only`` (its last FFN, classification tasks), found from the model instead of assumed, and applied
to the last attention too, whose other rows are not read either. On MiniLM-L6 / Rotten Tomatoes at
50 % FLOPs (``bench/kwon_steps.py``, quick mode) fitting every token made tuning useless: the last FFN
(26 neurons) needed scales up to 42, was rejected, and the validation KL to the dense model rose from
0.026 (after rearrangement) to 0.028; on [CLS] it is tuned and the KL falls to 0.020
(``fit_rows="all"`` is the every-token fit).

Deviations from the reference code (CPU; measured on the setting above): it reconstructs not the
unpruned model but the searched mask at the square root of the target (0.71 for 0.5; its ``main.py``):
``tune_teacher="intermediate"``, validation KL 0.029 there, so the paper's unpruned teacher is the
default. Normal equations in float64, solved by ``torch.linalg.lstsq`` as a damped (Levenberg-Marquardt)
step from the searched mask (theirs: LSMR on the normal-equation matrix, ``damp=1`` absolute, negligible
at its scale; ``damping=1e-2`` measured the same as 1e-6). A solution outside ``[-bound, bound]`` (the
paper's 10), not finite, or not lowering the error is rejected for that family only (values stay 1)
and later families are still tuned (theirs stops at the first rejection). Layer 0's heads are tuned too
(theirs skips them; at 50 % all 12 are kept and their scales stay 1.00). Their attention fit adds a
free constant column (a shift post-LN LayerNorm removes, then discarded); fitting in the per-token
mean-centred space, the exact post-LN invariance, measured the same KL (0.0203), so it is not done.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from leap_fx.data.batches import model_inputs
from leap_fx.env.progress import Progress
from leap_fx.masks.lifecycle import owners
from leap_fx.methods.kwon.batches import batch_size
from leap_fx.methods.kwon.capture import (
    OutputCapture,
    batch_mask,
    capture,
    out_weight,
    output_slice,
    output_tensors,
    output_weights,
    token_rows,
    unit,
)
from leap_fx.methods.kwon.fisher import only_grad_for
from leap_fx.methods.kwon.replay import Replay

ROUNDING = 1e-9  # relative to B^T B: error differences below this are float64 rounding of m'Am - 2m'b + b'b


@dataclass
class Targets:
    """The teacher's sub-layer outputs ``t = y + r`` per family and batch (the fitted token rows)."""

    t: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    rows: dict[str, list[Optional[torch.Tensor]]] = field(default_factory=dict)  # fitted rows (None: all)
    residual: dict[str, bool] = field(default_factory=dict)  # family has a residual partner (every batch)
    order: list[str] = field(default_factory=list)           # output ops in forward order
    unsupported: set[str] = field(default_factory=set)
    tokens: float = 0.0                                      # token rows per example at the first op


def reaching_rows(cap: OutputCapture, out) -> dict[str, Optional[torch.Tensor]]:
    """Per captured family: which of its token rows (as ``capture`` keeps them) can change the model's
    output, as a bool vector, or None when all can. A row reaches if the gradient of a fixed random
    projection of every output tensor is nonzero there: exactly 0 for a row nothing downstream reads
    (all but [CLS] in a BERT classifier's last layer, which only the pooler's [CLS] row leaves)."""
    outs = [t for t in output_tensors(out) if t.is_floating_point() and t.requires_grad]
    keys = [k for k, y in cap.outputs.items() if k in cap.done and y.requires_grad]
    if not outs or not keys:
        return {}
    gen = torch.Generator().manual_seed(0)
    probe = sum((t.float() * torch.randn(t.shape, generator=gen)).sum() for t in outs)
    grads = torch.autograd.grad(probe, [cap.outputs[k] for k in keys], allow_unused=True)
    found = {}
    for key, gy in zip(keys, grads):
        y = cap.outputs[key]
        hit = torch.zeros(y.shape[:-1], dtype=torch.bool) if gy is None else gy.ne(0).any(-1)
        sel = token_rows(hit.unsqueeze(-1), cap.mask, cap.done[key].batch_major).reshape(-1)
        found[key] = None if bool(sel.all()) else sel
    return found


def _targets_pass(model, fams: dict[str, str], batch: dict, reaching: bool):
    """One forward capturing every family's ``y`` and ``r`` (and, ``reaching``, the rows that reach)."""
    if not reaching:
        return capture(model, fams, batch), {}
    cap = OutputCapture(model, fams, batch_mask(batch), keep_outputs=True)
    with only_grad_for(model, [o.values for o in owners(model).values()]), torch.enable_grad():
        with cap:
            out = model(**model_inputs(batch))
            cap.flush()
        return cap, reaching_rows(cap, out)


def teacher_targets(model, plan, batches: list[dict], reaching: bool = True) -> Targets:
    """Capture ``t`` on ``batches`` from ``model`` as it is (the teacher's masks set); ``reaching``:
    keep only the rows that reach the model's output (``reaching_rows``), else every token row."""
    fams, out = output_weights(plan), Targets()
    examples = 0
    for batch in batches:
        cap, reach = _targets_pass(model, fams, batch, reaching)
        out.order = out.order or list(cap.order)
        out.unsupported |= cap.unsupported
        for key, c in cap.done.items():
            t, sel = c.y if c.r is None else c.y + c.r, reach.get(key)
            out.t.setdefault(key, []).append(t if sel is None else t[sel])
            out.rows.setdefault(key, []).append(sel)
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
            raise RuntimeError(f"{key}: the residual add seen in the teacher is missing now")
        rows = slice(None) if targets.rows[key][i] is None else targets.rows[key][i]  # the fitted rows
        x = c.x[rows][:, cols].float()
        b = t.float() - c.y[rows].float() + x @ wk.t() - (c.r[rows].float() if targets.residual[key] else 0.0)
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
    if all(sel is not None and not bool(sel.any()) for sel in targets.rows[key]):
        return Fit(key, len(kept), "skipped: no row of its output reaches the model's output")
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
