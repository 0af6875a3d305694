"""Whole sub-layers: an attention or FFN sub-layer with nothing left is replaced by the constant it adds.

When every head (every neuron) of a family is removable, strip keeps one zeroed placeholder granule
(``fold.zero_placeholder``), so the sub-layer outputs exactly the out (down) projection's bias ``b``
(with the constants folded into it) while still computing q/k/v, softmax and a width-``head_dim``
matmul. CoFi's layer gates ``z_MHA`` / ``z_FFN`` (Xia et al. 2022, Eq. 4) remove such sub-layers
whole; here the modules are replaced by ``ConstantSublayer`` (no 0-width tensors: onnxruntime
rejects them), chosen by probing one forward of the example inputs:

- the family's module returns the out projection's output (GPT-2 ``attn`` / ``mlp``, ViT
  ``attention`` / ``mlp``, Llama ``self_attn``): it becomes ``b`` broadcast to its input's shape;
- else (BERT: the residual add and LayerNorm sit inside the family's module) the outermost module
  holding q/k/v (up/gate) but not the out projection, whose output *is* the out projection's input
  (``attention.self``, ``intermediate``), returns zeros of width 1, and the out projection ``b``.

Families where neither holds keep the placeholder. strip's own before/after check verifies it all.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from passes.analyze.inputs import split_inputs
from passes.analyze.plan import OUTPUT_ROLES


class ConstantSublayer(nn.Module):
    """Returns ``bias`` broadcast to the leading shape of its first tensor input (``outputs > 0``: a
    tuple of that length, the tensor first, the rest None), whatever the inputs' values."""

    def __init__(self, width: int, outputs: int = 0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(int(width)))
        self.outputs = int(outputs)

    def forward(self, *args, **kwargs):
        x = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        out = self.bias.expand(*x.shape[:-1], self.bias.shape[0]).contiguous()  # a copy, not a view
        return out if self.outputs == 0 else (out,) + (None,) * (self.outputs - 1)

    def spec(self) -> dict:
        """JSON-able constructor arguments (``passes.export.slim_io`` rebuilds from this)."""
        return {"width": int(self.bias.shape[0]), "outputs": self.outputs}


def _first(x) -> Optional[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    if hasattr(x, "values"):
        return next((v for v in x.values() if isinstance(v, torch.Tensor)), None)
    return None


def _probe(model: nn.Module, example_inputs: Any, fqns: set[str]) -> dict[str, tuple]:
    """fqn -> (first input tensor, first output tensor, number of outputs) on one eval forward."""
    seen: dict[str, tuple] = {}
    handles = []
    for fqn in fqns:
        def hook(mod, args, kwargs, out, fqn=fqn):
            if fqn not in seen:
                x = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
                n = len(out) if isinstance(out, tuple) else 0
                seen[fqn] = (x, _first(out), n)
        handles.append(model.get_submodule(fqn).register_forward_hook(hook, with_kwargs=True))
    args, kwargs = split_inputs(example_inputs)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _inside(fqn: str, root: str) -> bool:
    return root == "" or fqn == root or fqn.startswith(root + ".")


def _candidates(fam) -> tuple[str, list[str]]:
    """(consumer module, modules under the family holding every producer but not the consumer)."""
    consumer = next(s.fqn for s in fam.slices if s.role in OUTPUT_ROLES)
    producers = [s.fqn for s in fam.slices if s.role not in OUTPUT_ROLES]
    parts = producers[0].split(".")
    out = []
    for i in range(len(parts), 0, -1):
        fqn = ".".join(parts[:i])
        if not _inside(fqn, fam.fqn) or fqn == fam.fqn or _inside(consumer, fqn):
            break
        if all(_inside(p, fqn) for p in producers):
            out.append(fqn)
    return consumer, out[::-1]  # outermost first


def _replace(model: nn.Module, fqn: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``fqn``; returns the module it replaced."""
    parent, _, name = fqn.rpartition(".")
    old = model.get_submodule(fqn)
    ref = next(old.parameters(), None)
    if ref is not None and isinstance(new, ConstantSublayer):
        new.to(device=ref.device, dtype=ref.dtype)
    setattr(model.get_submodule(parent) if parent else model, name, new.train(old.training))
    return old


def _constant(width: int, outputs: int, value: Optional[torch.Tensor]) -> ConstantSublayer:
    new = ConstantSublayer(width, outputs)
    if value is not None:
        with torch.no_grad():
            new.bias.copy_(value.detach().reshape(-1))
    return new


def _swap(model: nn.Module, fam, probes: dict, consumer: str, inner: list[str]) -> dict[str, nn.Module]:
    """Replace ``fam``'s modules by constants where the probe allows; ``{fqn: replaced module}``."""
    c_in, c_out, _ = probes[consumer]
    bias = getattr(model.get_submodule(consumer), "bias", None)
    width = c_out.shape[-1]
    f_in, f_out, f_n = probes[fam.fqn]
    if fam.fqn and f_out is not None and f_out.shape == c_out.shape and torch.equal(f_out, c_out):
        return {fam.fqn: _replace(model, fam.fqn, _constant(width, f_n, bias))}
    match = next((p for p in inner if p in probes and probes[p][1] is not None
                  and probes[p][1].shape == c_in.shape and torch.equal(probes[p][1], c_in)), None)
    if match is None:
        return {}
    return {match: _replace(model, match, _constant(1, probes[match][2], None)),
            consumer: _replace(model, consumer, _constant(width, 0, bias))}


def strip_sublayers(model: nn.Module, plan, report, example_inputs: Any,
                    check: Callable[[], bool] = lambda: True) -> list[str]:
    """Replace every emptied family (``report``: placeholder kept) by constants; returns their keys.

    ``check()`` runs after each family's replacement (strip: outputs unchanged); if it fails the
    family keeps its placeholder (e.g. ``nn.TransformerEncoderLayer`` reads ``self_attn.batch_first``)."""
    dead = [k for k, f in report.families.items() if f.get("placeholder") is not None and k in plan.families]
    if not dead or example_inputs is None:
        return []
    roles = {k: _candidates(plan.families[k]) for k in dead}
    probes = _probe(model, example_inputs, {plan.families[k].fqn for k in dead}
                    | {c for c, _ in roles.values()} | {p for _, ps in roles.values() for p in ps})
    done = []
    for key in dead:
        fam, (consumer, inner) = plan.families[key], roles[key]
        if consumer not in probes or fam.fqn not in probes:
            continue
        old = _swap(model, fam, probes, consumer, inner)
        if old and not check():
            for fqn, mod in old.items():
                _replace(model, fqn, mod)
            continue
        if old:
            report.replaced.update({fqn: "ConstantSublayer" for fqn in old})
            report.families[key]["sublayer"] = sorted(old)
            done.append(key)
    return done
