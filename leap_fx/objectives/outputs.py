"""What one forward produced, as the objectives see it: ``Outputs`` and ``logits_of``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["Outputs", "logits_of"]


@dataclass
class Outputs:
    """What one forward produced: logits, and the captured block outputs (if asked)."""

    logits: torch.Tensor
    hidden: Optional[list[torch.Tensor]] = None      # block outputs ("hidden")
    attention: Optional[list[torch.Tensor]] = None   # pre-softmax scores per attention family ("attention")
    embeddings: Optional[list[torch.Tensor]] = None  # [the first block's input] ("embeddings")


def logits_of(output) -> torch.Tensor:
    """Logits from an HF ModelOutput, a tuple or a plain tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if getattr(output, "logits", None) is not None:
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ValueError(f"cannot find logits in the model's output ({type(output).__name__}): pass a loss "
                     f"function that reads this output (loss_fn(model, batch) -> loss)")
