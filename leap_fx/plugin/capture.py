"""What the user's ``loss_fn(model, batch)`` fed the model and got back: the top module's inputs and output,
recorded by a forward hook while the loss runs, so a teacher sees the same inputs and the distillation
compares the same forward's output (no second student forward)."""
from __future__ import annotations

from torch import nn

__all__ = ["ForwardCapture"]


class ForwardCapture:
    """``with ForwardCapture(model) as cap: loss = loss_fn(model, batch)``; then ``cap.args``, ``cap.kwargs``
    and ``cap.output`` of the model's last forward (None if it was not called)."""

    def __init__(self, model: nn.Module):
        self.model, self.args, self.kwargs, self.output, self._handle = model, (), {}, None, None

    def _hook(self, module, args, kwargs, output):
        self.args, self.kwargs, self.output = args, kwargs, output

    def __enter__(self) -> "ForwardCapture":
        self._handle = self.model.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
