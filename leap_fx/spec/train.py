"""``TrainConfig``: the loop's own settings (defaults follow the LEAP paper's App. A), plain data.

What to prune and how lives in the method's config (``leap_fx.methods``); this is only how to train.
Methods read ``alpha``, ``kd_temperature`` and ``warmup_ratio`` from it (a method built without one
gets ``TrainConfig()``: one default for each, wherever it is read).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from passes.io import JsonDataclass

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig(JsonDataclass):
    """Hyperparameters of :func:`leap_fx.train.train`."""

    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 3e-5                # weights (App. A)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1       # linear LR warmup, then linear decay to 0
    alpha: float = 0.9              # Eq. 8: (1 - alpha) CE + alpha KD (the default objective)
    kd_temperature: float = 2.0     # tau of the KD softmax
    max_grad_norm: Optional[float] = 1.0
    log_every: int = 10
    eval_every: int = 0             # steps; 0 = at the end of every epoch
    checkpoint_every: int = 0       # steps; 0 = at the end of every epoch (needs out_dir)
    checkpoint_minutes: float = 0.0  # also checkpoint when this much time passed since the last one (0: off)
    eval_batch_size: int = 128
    group_by_length: bool = True    # batches of similar length: less padding (resume stays exact)
    seed: int = 17                  # App. A
    max_steps: Optional[int] = None  # stop (and end every schedule) after this many steps
    fold: bool = True               # bake masks into plain weights at the end
    progress_seconds: float = 30.0  # without a terminal: one progress line at most this often

    def __post_init__(self):
        if self.batch_size < 1 or self.epochs <= 0:
            raise ValueError(f"need batch_size >= 1 and epochs > 0, got {self.batch_size}, {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps} must be >= 1 (or None for full epochs)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha} must be in [0, 1]")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if not self.lr >= 0:
            raise ValueError(f"lr={self.lr} must be >= 0")
