"""CoFi's config (plain data): the gates, the Lagrangian's phases and rates, layer distillation.

The target is the config's (``leap_fx.costs``): ``density:`` = the gated families' parameters (CoFi's
model size), ``flops:`` = their forward FLOPs at ``cost_seq`` tokens (the run's length).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.spec.fields import option
from leap_fx.spec.mask import MaskSpec
from leap_fx.spec.method import JobDefaults

__all__ = ["CofiConfig"]


@dataclass
class CofiConfig(MaskSpec):
    """CoFi settings; the target is the kept fraction of the gated families' parameters or FLOPs."""

    method: ClassVar[str] = "cofi"
    handler: ClassVar[str] = "leap_fx.methods.cofi.handler:Cofi"
    job: ClassVar[JobDefaults] = JobDefaults(granularity="structured")
    strip_sublayers: ClassVar[bool] = True   # strip replaces gated-off sub-layers by their constant

    granularity: str = option("structured", "cofi prunes whole heads and neurons: structured")
    prune_hidden: bool = option(True, "gate hidden dimensions (the residual stream) too")
    prune_layers: bool = option(True, "gate whole attention / FFN sub-layers too")
    drop_rate_init: float = option(0.01, "initial P(gate = 0) of every gate")
    gate_lr: Optional[float] = option(None, "learning rate of log_alpha (default: scaled to the run; "
                                            "reference 0.01)")
    lambda_lr: Optional[float] = option(None, "learning rate of lambda_2 (gradient ascent; default: gate_lr)")
    lambda1_lr_scale: float = option(0.1, "lambda_1's learning rate as a fraction of lambda_2's (short runs: 0.1)")
    dense_warmup_ratio: float = option(0.05, "first fraction of the run without gates (reference: prepruning "
                                             "finetune)")
    target_warmup_ratio: float = option(0.3, "fraction over which the target sparsity rises linearly from 0")
    finetune_ratio: float = option(0.3, "last fraction of the run with the gates frozen")
    layer_distill: bool = option(True, "layer-wise distillation with learned matches (else logit KD only)")
    distill_layers: int = option(4, "teacher layers matched (evenly spaced)")
    layer_weight: float = option(0.9, "weight of the layer loss (reference 0.9)")
    pred_weight: float = option(0.1, "weight of the logit KD loss (reference 0.1)")

    def __post_init__(self):
        super().__post_init__()
        if not self.structured:
            raise ValueError(f"cofi prunes whole heads and neurons: granularity must be 'structured', "
                             f"got {self.granularity!r}")
        w, t, f = self.dense_warmup_ratio, self.target_warmup_ratio, self.finetune_ratio
        if not (0 <= w and 0 < t and 0 <= f and w + t + f <= 1.0):
            raise ValueError(f"need dense_warmup_ratio + target_warmup_ratio + finetune_ratio <= 1 (all >= 0, "
                             f"target warm-up > 0), got {w} + {t} + {f}")
        if not 0.0 < self.drop_rate_init < 0.5:
            raise ValueError(f"drop_rate_init={self.drop_rate_init} must be in (0, 0.5): gates start open")
        for name in ("gate_lr", "lambda_lr"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0 (or unset: scaled to the run)")
        if not self.lambda1_lr_scale > 0:
            raise ValueError(f"lambda1_lr_scale={self.lambda1_lr_scale} must be > 0")
        if self.goal.unit == "latency":
            raise ValueError(f"cofi reaches FLOPs or parameter targets, not {self.goal}: use e.g. 'flops:0.5'")
        if self.distill_layers < 1 or min(self.layer_weight, self.pred_weight) < 0:
            raise ValueError("distill_layers must be >= 1, layer/pred weights >= 0")

    @property
    def residual(self) -> bool:
        return bool(self.prune_hidden)

    @property
    def kept(self) -> float:
        """The kept fraction CoFi's Lagrangian aims at (of parameters or FLOPs: ``goal.unit``)."""
        return float(self.goal.value)
