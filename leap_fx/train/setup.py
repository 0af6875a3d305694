"""What a training run settles before its first step: its length (``total_steps``), the method it runs
(``as_method``: a config is built, ``None`` is the dense teacher's plain fine-tuning), and the Plan when
the method or the teacher's distillation needs one (``auto_plan``, analysed on one training batch)."""
from __future__ import annotations

import math

from torch import nn

from leap_fx.data.batches import batches_per_epoch, iterate_batches, model_inputs
from leap_fx.methods import build
from leap_fx.methods.base import Method
from leap_fx.methods.dense.config import DenseConfig
from leap_fx.spec.train import TrainConfig
from passes.analyze import analyze

__all__ = ["analyze_or_explain", "as_method", "auto_plan", "total_steps"]


def total_steps(config: TrainConfig, train_data) -> int:
    """Steps of the whole run: ``ceil(epochs * batches per epoch)``, capped by ``max_steps``."""
    steps = math.ceil(config.epochs * batches_per_epoch(train_data, config.batch_size))
    return max(1, min(steps, config.max_steps) if config.max_steps else steps)


def analyze_or_explain(model: nn.Module, example: dict, residual: bool, why: str):
    """``passes.analyze`` on ``example``; a failure names what needed the Plan and how to pass one."""
    try:
        return analyze(model, example, residual=residual)
    except Exception as err:
        raise ValueError(f"{why} needs a Plan and automatic analysis failed ({err}); pass "
                         f"plan=leap_fx.analyze(model, example_inputs)") from err


def auto_plan(model: nn.Module, train_data, needs_plan: bool, why: str = "this method", residual: bool = False):
    """``passes.analyze`` on one training batch (None if it fails and the method can do without);
    ``residual``: with the residual stream (methods pruning hidden dimensions)."""
    example = model_inputs(next(iterate_batches(train_data, 2)))
    try:
        return analyze_or_explain(model, example, residual, why)
    except ValueError:
        if needs_plan:
            raise
        return None


def as_method(method, config: TrainConfig, n_total: int) -> Method:
    if isinstance(method, Method):
        return method
    return build(DenseConfig() if method is None else method, n_total, config)
