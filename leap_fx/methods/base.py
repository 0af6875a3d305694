"""The method protocol: what every pruning method implements, trained or one-shot.

A method is a config dataclass (``leap_fx.spec.MethodConfig``; ``MaskSpec`` for masking methods,
naming the method in ``method``) and a handler registered for it (``registry.register``)::

    @register(LeapConfig)                         # config type -> handler, one registry
    class Leap(TrainedMethod):
        def make_owner(self, shape, key, device): ...  # the mask owner on one granule grid
        def prepare(self, model, plan): ...       # install mask owners through masks.prepare
        def param_groups(self, model, lr, weight_decay): ...
        def loss_terms(self, out, teacher_out, batch, step): ...   # LossTerms(task, penalty, ...)
        def on_step(self, model, step): ...       # schedules, lambda updates; returns log values
        def finalize(self, model): ...            # deterministic masks -> fold
    class Kwon(OneShotMethod):
        def calibrate(self, model, batches, teacher): ...  # scores / masks from data, no training

The loop (``leap_fx.train.loop``) and the job (``leap_fx.run.job``) talk to this protocol only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from torch import nn

from leap_fx.masks.owner import MaskOwner
from leap_fx.masks.lifecycle import densities, fold, owners, param_groups, prepare
from leap_fx.objectives.logit_kd import LogitKD
from leap_fx.objectives.task_loss import ClassificationLoss, TaskLoss
from leap_fx.spec.train import TrainConfig

PAPER_MASK_LR = 1e-2  # LEAP App. A (S and sigma), movement pruning's scores too


@dataclass
class LossTerms:
    """One step's objective. ``loss = task * share + penalty`` (``share``: this rank's share of the
    global batch under DDP, 1 otherwise)."""

    task: torch.Tensor                         # batch mean of the data terms
    penalty: Optional[torch.Tensor] = None     # a function of the parameters only (same on every rank)
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # logged batch means (ce, kd, hidden ...)
    values: dict[str, float] = field(default_factory=dict)        # other logged values (R, lambda, ...)


class Method:
    """Base of every handler. ``config``: the method's config; ``total_steps``: optimiser steps of the
    run (trained methods size their schedules by it); ``train_config``: the loop's settings (``alpha``,
    ``kd_temperature``, ``warmup_ratio``; ``TrainConfig()`` when not given); ``task_loss``: what the task's
    outputs mean to the objective (``ClassificationLoss()`` when not given)."""

    name: ClassVar[str] = ""          # set by ``register`` from the config's ``method``
    config_class: ClassVar[type] = object  # set by ``register``
    kind: ClassVar[str] = "trained"   # "trained" | "one-shot"
    uses_masks: ClassVar[bool] = True
    log_keys: ClassVar[tuple[str, ...]] = ()       # values the method logs besides loss / ce / kd
    progress_keys: ClassVar[tuple[str, ...]] = ()  # values shown on the loop's progress line

    def __init__(self, config, total_steps: int = 1, train_config: Optional[TrainConfig] = None,
                 task_loss: Optional[TaskLoss] = None):
        self.config, self.total_steps = config, max(1, int(total_steps))
        self.train_config = train_config if train_config is not None else TrainConfig()
        self.task_loss = task_loss if task_loss is not None else ClassificationLoss()

    # -- lifecycle ----------------------------------------------------------------------------
    def make_owner(self, shape: tuple, key: str, device=None) -> MaskOwner:
        """The mask owner on one granule grid (every masking method says which)."""
        raise NotImplementedError(f"{type(self).__name__} does not say which mask owner it uses")

    def prepare(self, model: nn.Module, plan) -> None:
        """Install the masks (once; a resumed run prepares, then loads its checkpoint)."""
        if self.uses_masks and not owners(model):
            prepare(model, self.config, plan, owner=self.make_owner)
            if not owners(model):
                raise ValueError(f"{self.name}: prepare registered no masks: check include/exclude patterns")

    def finalize(self, model: nn.Module) -> nn.Module:
        """Deterministic masks baked into plain weights (``fold``)."""
        return fold(model) if self.uses_masks else model

    def densities(self, model: nn.Module) -> dict[str, float]:
        """Measured mask density per governed weight name."""
        return densities(model) if self.uses_masks else {}

    def state_dict(self, model: nn.Module) -> dict:
        """Method state that is not in the model's state_dict (saved in checkpoints, JSON-able)."""
        return {}

    def load_state_dict(self, model: nn.Module, state: dict) -> None:
        """Restore :meth:`state_dict` after a checkpoint load."""


class TrainedMethod(Method):
    """Trained in the loop: optimiser groups, the objective, per-step schedules."""

    kind = "trained"

    def mask_lr(self) -> float:
        """Learning rate of the trainable mask state (methods with a ``mask_lr`` option override)."""
        return PAPER_MASK_LR

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """Weights at ``lr``, trainable mask state at ``mask_lr()``, the objective's own parameters
        (e.g. a layer-distillation projection) at ``lr``."""
        if not self.uses_masks:
            groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr,
                       "weight_decay": weight_decay, "name": "weights"}]
        else:
            groups = param_groups(model, lr=lr, mask_lr=self.mask_lr(), weight_decay=weight_decay)
        extra = [p for p in self.objective_fn.parameters() if p.requires_grad]
        if extra:
            groups.append({"params": extra, "lr": lr, "weight_decay": 0.0, "name": "objective"})
        return groups

    def objective(self) -> nn.Module:
        """The data objective; default logit KD (LEAP Eq. 8) with the loop's alpha / temperature."""
        return LogitKD(self.train_config.alpha, self.train_config.kd_temperature, self.task_loss)

    def on_step(self, model: nn.Module, step: int) -> dict:
        """Before the forward of ``step`` (0-based): schedules; returns values to log."""
        return {}

    def loss_terms(self, out, teacher_out, batch: dict, step: int) -> LossTerms:
        """``out`` / ``teacher_out``: ``objective.Outputs`` of student and teacher (None: no teacher)."""
        parts = self.objective_fn(out, teacher_out, batch)
        return LossTerms(task=parts.pop("task"), parts=parts)

    @property
    def objective_fn(self):
        if not hasattr(self, "_objective"):
            self._objective = self.objective()
        return self._objective


class OneShotMethod(Method):
    """No training loop: ``calibrate`` sets the masks from a few batches, then ``finalize``."""

    kind = "one-shot"

    def calibrate(self, model: nn.Module, batches, teacher: Optional[nn.Module] = None) -> dict:
        """Set the masks from ``batches`` (an iterable of input dicts with ``labels``); returns a report."""
        raise NotImplementedError
