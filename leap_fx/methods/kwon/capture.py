"""What mask tuning reads from a forward: each family's output op, its input and its residual partner.

Mask tuning (``kwon_tune.py``) fits the scales of the heads / neurons that feed one *output op*: the
matmul that consumes a family's masked out / down weight. ``OutputCapture`` is a ``TorchFunctionMode``
that finds those ops on any architecture without knowing its module names:

- the carrier (``GranuleMask``) computes the masked weight ``W'`` on every access; a forward hook on
  it remembers that tensor, and the op that receives it (``linear``: ``nn.Linear``; ``addmm``: HF
  ``Conv1D``) is the family's output op: its input ``x`` (context per head / activation per neuron)
  and output ``y`` are recorded (rows = tokens);
- the residual partner ``r`` is the other operand of the first ``add`` one of whose operands equals
  ``y`` (after dropout in eval, a view, ...): the sum ``y + r`` is the sub-layer output before the
  LayerNorm (post-LN) or the residual stream (pre-LN), the quantity Kwon et al. reconstruct.

Ops it does not understand (``nn.MultiheadAttention`` computes its out projection inside
``multi_head_attention_forward``) are listed in ``unsupported``: those families are not tuned.
Rows are the tokens of the attention mask when the op's rows are laid out batch-major (``[B, S, D]``
inputs, or HF ``Conv1D``'s flattened ``[B*S, D]``); otherwise every row counts (padding included).
``keep_outputs`` also keeps each op's own output tensor (``outputs``, autograd graph included): mask
tuning asks which of its rows reach the model's output (``kwon_tune.reaching_rows``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.overrides import TorchFunctionMode

from leap_fx.data.batches import model_inputs
from leap_fx.masks.lifecycle import carriers, original

# op name -> (index of the input x, index of the masked weight, 2-D rows are batch-major)
CONSUMERS = {"linear": (0, 1, False), "addmm": (1, 2, True)}
ADDS = frozenset({"add", "__add__", "__radd__", "add_", "__iadd__"})


class StopForward(Exception):
    """Raised inside a forward once the capture it was run for is complete (truncated forward)."""


@dataclass
class Captured:
    """One family's output op on one batch: input, output, residual partner or None (token rows, or
    the op's own tensors with ``raw=True``); ``batch_major``: 2-D rows are ``[B*S]`` in batch order."""

    x: Optional[torch.Tensor]
    y: torch.Tensor
    r: Optional[torch.Tensor]
    batch_major: bool = True


def output_slice(fam):
    """The slice whose columns carry the family's values: attention ``out``, feed-forward ``down`` (None for
    whole experts: no one output op)."""
    return fam.out if fam.kind == "attention" else fam.down if fam.kind == "ffn" else None


def unit(fam) -> int:
    """Input columns per granule of the output op (a head's out columns, or 1 per neuron)."""
    return fam.unit("out") if fam.kind == "attention" else 1


def out_weight(model, fam) -> torch.Tensor:
    """The unmasked output-op weight in ``nn.Linear``'s ``[out, in]`` layout (HF Conv1D stores ``[in, out]``)."""
    sl = output_slice(fam)
    mod = model.get_submodule(sl.fqn)
    w = (original(mod, sl.param) if hasattr(mod, "parametrizations") else getattr(mod, sl.param)).detach()
    return w if sl.axis == 1 else w.t()


def output_weights(plan) -> dict[str, str]:
    """Weight name of each family's output op -> family key (ops shared by two families are left out)."""
    names: dict[str, list[str]] = {}
    for key, fam in plan.families.items():
        if output_slice(fam) is not None:
            names.setdefault(output_slice(fam).weight_name, []).append(key)
    return {name: keys[0] for name, keys in names.items() if len(keys) == 1}


def output_tensors(out) -> list[torch.Tensor]:
    """Every tensor of a forward's output (tensor, HF ModelOutput, nested tuple / list), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    return [t for o in (out if isinstance(out, (tuple, list)) else ()) for t in output_tensors(o)]


def batch_mask(batch: dict) -> Optional[torch.Tensor]:
    """The batch's 2-D attention mask (``[B, S]``), or None."""
    mask = batch.get("attention_mask")
    return mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def token_rows(t: torch.Tensor, mask: Optional[torch.Tensor], batch_major: bool) -> torch.Tensor:
    """Token rows of ``t`` (``[..., D]`` -> ``[R, D]``, a copy: an in-place residual add may follow),
    only the attention mask's tokens when aligned."""
    if mask is not None and t.dim() >= 3 and tuple(t.shape[:2]) == tuple(mask.shape):
        return t[mask.bool()].reshape(-1, t.shape[-1])
    if mask is not None and t.dim() == 2 and batch_major and t.shape[0] == mask.numel():
        return t[mask.reshape(-1).bool()]
    return t.reshape(-1, t.shape[-1]).clone()


class OutputCapture(TorchFunctionMode):
    """Capture the output ops of ``families`` (weight name -> key) in one forward of ``model``.

    ``need_x``: families whose input rows are kept (the others keep ``y`` and ``r`` only);
    ``stop_at``: raise ``StopForward`` once that family is complete; ``raw``: keep the op's own tensors
    (autograd included, no row selection, no residual search); ``keep_outputs``: also keep each op's
    own output in ``outputs[key]``. Results: ``done[key]``."""

    def __init__(self, model, families: dict[str, str], mask: Optional[torch.Tensor] = None,
                 need_x: frozenset = frozenset(), stop_at: Optional[str] = None, raw: bool = False,
                 keep_outputs: bool = False):
        super().__init__()
        self.model, self.families, self.mask = model, families, mask
        self.need_x, self.stop_at, self.raw, self.keep_outputs = need_x, stop_at, raw, keep_outputs
        self.outputs: dict[str, torch.Tensor] = {}
        self.latest: dict[str, torch.Tensor] = {}
        self.pending: dict[str, tuple] = {}
        self.done: dict[str, Captured] = {}
        self.order: list[str] = []
        self.unsupported: set[str] = set()
        self.handles: list = []

    def __enter__(self):
        for name, _, _, carrier in carriers(self.model):
            if name in self.families:
                key = self.families[name]
                self.handles.append(carrier.register_forward_hook(
                    lambda mod, args, out, key=key: self.latest.__setitem__(key, out)))
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a property read (T5 checks ``self.wo.weight.dtype`` before its matmul)
            return func(*args, **kwargs)
        if self.pending and name in ADDS and len(args) >= 2:
            self._residual(args[0], args[1])
        key = next((k for k, w in self.latest.items() if any(a is w for a in args)), None)
        out = func(*args, **kwargs)
        if key is None:
            return out
        weight = self.latest.pop(key)
        self.flush()                              # a later output op: earlier ones had no residual add
        spec = CONSUMERS.get(name)
        if spec is None or len(args) <= spec[1] or args[spec[1]] is not weight or not torch.is_tensor(out):
            self.unsupported.add(key)
            return out
        x = args[spec[0]] if key in self.need_x else None
        self.order.append(key)
        if self.keep_outputs:
            self.outputs[key] = out
        if self.raw:
            self.done[key] = Captured(x, out, None, spec[2])
        else:
            self.pending[key] = (x, out, spec[2])
        return out

    def _residual(self, a, b) -> None:
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.numel() != b.numel():
            return
        for key, (_, y, _) in list(self.pending.items()):
            for mine, other in ((a, b), (b, a)):
                if mine.numel() == y.numel() and torch.equal(mine.reshape(-1), y.reshape(-1)):
                    self._finish(key, other.reshape(y.shape))
                    return

    def _finish(self, key: str, r: Optional[torch.Tensor]) -> None:
        x, y, batch_major = self.pending.pop(key)
        pick = lambda t: None if t is None else token_rows(t.detach(), self.mask, batch_major)  # noqa: E731
        self.done[key] = Captured(pick(x), pick(y), pick(r), batch_major)
        if key == self.stop_at:
            raise StopForward(key)

    def flush(self) -> None:
        """Complete every pending capture without a residual (end of forward / next output op)."""
        for key in list(self.pending):
            self._finish(key, None)


def capture(model, families: dict[str, str], batch: dict, need_x: frozenset = frozenset(),
            stop_at: Optional[str] = None) -> OutputCapture:
    """Run ``model`` on ``batch`` (inputs only, no grad) under an ``OutputCapture``; returns it."""
    cap = OutputCapture(model, families, batch_mask(batch), need_x, stop_at)
    try:
        with torch.no_grad(), cap:
            model(**model_inputs(batch))
            cap.flush()
    except StopForward:
        pass
    return cap
