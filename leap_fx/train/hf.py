"""Hugging Face ``Trainer`` integration (needs ``accelerate``, as every HF Trainer does).

- :class:`LeapTrainer` (a ``transformers.Trainer``): prepares the model, optimises weights and S/σ
  with separate learning rates (``leap_fx.masks.param_groups``, App. A) and trains on
  ``(1 - α)·CE + α·KD + λ·L_reg`` (Eq. 8); logs ``R``, ``lambda``, ``L_reg``, ``ce``, ``kd`` and the
  measured density with the Trainer's own logs.
- :class:`LeapTrainerCallback`: for a stock ``Trainer`` whose loss you handle yourself; it adds the
  LEAP statistics to every log and can fold the masks when training ends.
"""
from __future__ import annotations

import math

from typing import Optional

import torch
from transformers import Trainer, TrainerCallback

from leap_fx.masks.prepare import densities, fold, owners, param_groups, prepare
from leap_fx.methods.leap import auto_mask_lr, split_sigma_group
from leap_fx.methods.leap_regularizer import LeapRegularizer
from leap_fx.train.objective import logits_of, objective


class TensorDictDataset(torch.utils.data.Dataset):
    """A map-style dataset over a tokenised ``TextSplit`` or a dict of tensors (for ``Trainer``)."""

    def __init__(self, data):
        from leap_fx.data.batches import as_tensors
        self.tensors = as_tensors(data)
        self.n = int(self.tensors["labels"].shape[0])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}


def _mean_density(model) -> dict[str, float]:
    dens = densities(model)
    return {"density_mean": sum(dens.values()) / len(dens)} if dens else {}


def _stats(model, regularizer=None) -> dict[str, float]:
    if not owners(model):
        return {}
    out = {}
    if regularizer is not None:
        reg = regularizer
        reg()  # refresh R / L_reg / lambda at the current sigma (no backward)
        out.update({"R": reg.R, "L_reg": reg.L_reg, "lambda": reg.lam})
    return {**out, **_mean_density(model)}


class LeapTrainerCallback(TrainerCallback):
    """Adds LEAP statistics (R, λ, L_reg, mean measured density) to every log; optionally folds at the end."""

    def __init__(self, leap_config=None, fold_at_end: bool = False, plan=None):
        self.leap_config, self.fold_at_end, self.plan = leap_config, fold_at_end, plan  # plan: flops / latency targets
        self._reg = None

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if model is None or logs is None or "loss" not in logs:
            return
        if self._reg is None and self.leap_config is not None:
            self._reg = LeapRegularizer.from_config(model, self.leap_config, self.plan)
        stats = _stats(model, self._reg)
        logs.update(stats)
        if state.log_history:
            state.log_history[-1].update(stats)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.fold_at_end and model is not None:
            fold(model)


class LeapTrainer(Trainer):
    """``Trainer`` with the LEAP objective (Eq. 8) and LEAP's two learning rates.

    Extra keyword arguments: ``leap_config`` (required), ``plan`` (for hybrid/structured),
    ``teacher`` (KD; None = CE only), ``alpha`` (0.9), ``kd_temperature`` (2.0), ``mask_lr``
    (None = :func:`leap_fx.methods.leap.auto_mask_lr`), ``sigma_beta1`` (0.0, see
    :func:`leap_fx.methods.leap.split_sigma_group`).
    """

    def __init__(self, *args, leap_config=None, plan=None, teacher: Optional[torch.nn.Module] = None,
                 alpha: float = 0.9, kd_temperature: float = 2.0, mask_lr: Optional[float] = None,
                 sigma_beta1: float = 0.0, **kwargs):
        if leap_config is None:
            raise ValueError("LeapTrainer needs leap_config=LeapConfig(target_density=...)")
        model = kwargs.get("model", args[0] if args else None)
        if model is None:
            raise ValueError("LeapTrainer needs a model")
        if not owners(model):
            prepare(model, leap_config, plan=plan)
        self.leap_config, self.teacher = leap_config, teacher
        self.alpha, self.kd_temperature, self.mask_lr = alpha, kd_temperature, mask_lr
        self.sigma_beta1 = sigma_beta1
        self.regularizer = LeapRegularizer.from_config(model, leap_config, plan)
        self._sums: dict[str, float] = {}
        self._count = 0
        self._total_steps = 1
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
        if teacher is not None:
            teacher.eval()

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self._total_steps = num_training_steps
        super().create_optimizer_and_scheduler(num_training_steps)

    def _planned_steps(self) -> int:
        """Optimizer steps of the run (transformers 5 creates the optimizer before it tells us)."""
        a = self.args
        if a.max_steps and a.max_steps > 0:
            return int(a.max_steps)
        per_epoch = max(1, len(self.get_train_dataloader()) // max(1, a.gradient_accumulation_steps))
        return max(1, math.ceil(per_epoch * a.num_train_epochs))

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            a = self.args
            steps = self._total_steps if self._total_steps > 1 else self._planned_steps()
            mask_lr = self.mask_lr if self.mask_lr is not None else \
                auto_mask_lr(self.leap_config, steps, a.get_warmup_steps(steps) / max(1, steps))
            model = model if model is not None else self.model
            groups = split_sigma_group(param_groups(model, lr=a.learning_rate, mask_lr=mask_lr,
                                                    weight_decay=a.weight_decay), model, self.sigma_beta1)
            self.optimizer = torch.optim.AdamW(groups, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2),
                                               eps=a.adam_epsilon)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        features = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**features)
        logits = logits_of(outputs)
        t_logits = None
        if self.teacher is not None and self.alpha > 0 and model.training:
            with torch.no_grad():
                t_logits = logits_of(self.teacher(**features))
        parts = objective(logits, labels, t_logits, self.alpha, self.kd_temperature)
        loss = parts["task"]
        if model.training:
            loss = loss + self.regularizer()
            reg = self.regularizer
            for k, v in (("ce", parts["ce"].item()), ("kd", parts["kd"].item()), ("R", reg.R),
                         ("L_reg", reg.L_reg), ("lambda", reg.lam)):
                self._sums[k] = self._sums.get(k, 0.0) + v
            self._count += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self._count:
            logs.update({k: v / self._count for k, v in self._sums.items()})
            self._sums, self._count = {}, 0
            logs.update(_mean_density(self.model))
        super().log(logs, *args, **kwargs)
