"""Norms over the kept hidden dimensions only: the semantics under which hidden-dimension removal is exact.

LayerNorm over ``d`` dims with zeros in the dropped ones differs from LayerNorm over the ``d'`` kept
ones (mean and variance are divided by ``d``, the dropped dims count as samples). CoFi (Xia et al.
2022, ``CoFiLayerNorm``) trains with the statistics taken over the kept dims, so the network learns
under exactly what the slim model computes. This module is that choice, as a forward hook
(``MaskedNorm``) on every norm of the residual stream; with a keep mask ``m`` (``K = {i: m_i}``):

    LayerNorm:  mu = sum_K x_i / |K|,  var = sum_K (x_i - mu)^2 / |K|,  y_i = (x_i - mu) / sqrt(var + eps) w_i + b_i
    RMSNorm:    r = sum_K x_i^2 / |K|,  y_i = x_i / sqrt(r + eps) w_i

and ``y_i = b_i`` (LayerNorm) / ``x_i w_i`` (RMSNorm) outside ``K``, which is 0 once the gates
zeroed ``w_i`` (and ``b_i``) there. ``keep`` is a fixed bool tensor (a folded model: what strip reads)
or a callable of the module (training: the current gate sample). After strip removed every dim
outside ``K`` the plain norm computes the same, and the hooks are uninstalled.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

Keep = Union[torch.Tensor, Callable[[nn.Module], torch.Tensor]]


def masked_norm(x: torch.Tensor, weight: torch.Tensor, bias, keep: torch.Tensor, kind: str,
                eps: float) -> torch.Tensor:
    """The norm of ``x`` (last axis) with statistics over ``keep`` only (formulas above)."""
    m = keep.to(torch.float32)
    n = m.sum().clamp_min(1.0)
    xf = x.to(torch.float32)
    if kind == "rms":
        r = (xf * xf * m).sum(-1, keepdim=True) / n
        return weight * (xf * torch.rsqrt(r + eps)).to(x.dtype)
    mu = (xf * m).sum(-1, keepdim=True) / n
    xc = (xf - mu) * m
    var = (xc * xc).sum(-1, keepdim=True) / n
    y = (xc * torch.rsqrt(var + eps)).to(x.dtype) * weight
    return y + bias if bias is not None else y


class MaskedNorm:
    """Forward hook replacing a norm's output by ``masked_norm`` of its input (``kind``, ``eps``).

    The first call with every dim kept checks that the hook reproduces the module itself (a norm
    with another formula, e.g. ``(1 + w)`` scaling, is refused rather than silently changed)."""

    def __init__(self, kind: str, eps: float, keep: Keep):
        if kind not in ("layer", "rms"):
            raise ValueError(f"norm kind {kind!r}: use 'layer' or 'rms'")
        self.kind, self.eps, self.keep, self.checked = kind, float(eps), keep, False

    def mask(self, mod: nn.Module) -> torch.Tensor:
        keep = self.keep(mod) if callable(self.keep) else self.keep
        return keep.to(torch.bool)

    def __call__(self, mod: nn.Module, args, out):
        keep = self.mask(mod).to(args[0].device)
        y = masked_norm(args[0], mod.weight, getattr(mod, "bias", None), keep, self.kind, self.eps)
        if not self.checked and bool(keep.all()) and isinstance(out, torch.Tensor):
            with torch.no_grad():
                tol = 1e-4 * max(1.0, float(out.detach().abs().max()))
                if out.shape != y.shape or float((out.detach() - y.detach()).abs().max()) > tol:
                    raise ValueError(f"{type(mod).__name__} does not compute a {self.kind} norm as "
                                     f"x / sqrt(stat + eps) * weight (+ bias): its hidden dims cannot be masked")
            self.checked = True
        return y


def _norms(model: nn.Module, fam) -> dict[str, nn.Module]:
    return {fqn: model.get_submodule(fqn) for fqn in fam.norms}


def install(model: nn.Module, fam, keep: Keep) -> None:
    """A ``MaskedNorm`` on every norm of the residual family ``fam`` (replacing any already there)."""
    uninstall(model, fam)
    for fqn, mod in _norms(model, fam).items():
        kind, eps = fam.norms[fqn]
        mod.register_forward_hook(MaskedNorm(kind, eps, keep))


def installed(model: nn.Module, fam) -> dict[str, MaskedNorm]:
    """norm FQN -> its ``MaskedNorm`` (norms without one are missing)."""
    out = {}
    for fqn, mod in _norms(model, fam).items():
        hooks = [h for h in mod._forward_hooks.values() if isinstance(h, MaskedNorm)]
        if hooks:
            out[fqn] = hooks[-1]
    return out


def uninstall(model: nn.Module, fam) -> int:
    """Remove every ``MaskedNorm`` from the family's norms; returns how many were removed."""
    n = 0
    for mod in _norms(model, fam).values():
        for key in [k for k, h in mod._forward_hooks.items() if isinstance(h, MaskedNorm)]:
            del mod._forward_hooks[key]
            mod._forward_hooks_with_kwargs.pop(key, None)
            mod._forward_hooks_always_called.pop(key, None)
            n += 1
    return n


def fix(model: nn.Module, fam) -> None:
    """Replace every dynamic keep (a callable) by its current value (eval mode): what ``fold`` bakes."""
    for fqn, hook in installed(model, fam).items():
        mod = model.get_submodule(fqn)
        was = mod.training
        mod.eval()
        try:
            hook.keep = hook.mask(mod).detach().clone()
        finally:
            mod.train(was)
