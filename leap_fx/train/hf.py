"""Hugging Face ``Trainer`` integration: any method, through its protocol (needs ``accelerate``).

``MethodTrainer`` is a ``transformers.Trainer`` that drives ``leap_fx.methods.build(config)`` exactly as
the library's own loop does, so no config field is read in one place and ignored in the other:

- ``create_optimizer``: the method is built for the run's optimiser steps, ``prepare`` installs its
  masks (on the Plan; analysed from the first training batch when not given), and the optimiser takes
  the method's ``param_groups`` (LEAP: weights, scores S, thresholds sigma with their own beta1 ...);
- every step: ``on_step`` (schedules) before the forward (a ``TrainerCallback``), then ``loss_terms``
  on the student's and the teacher's ``Outputs`` (with what the method's objective captures);
  ``loss = task + penalty``; the method's logged values are averaged into the Trainer's logs;
- ``on_train_end``: ``finalize`` (deterministic masks folded into plain weights) unless ``finalize=False``.

``train_config`` supplies what the method's objective reads (``alpha``, ``kd_temperature``,
``warmup_ratio``); the learning rate, batch size and schedule are the ``TrainingArguments``'.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from transformers import Trainer, TrainerCallback

from leap_fx.data.batches import as_tensors, model_inputs
from leap_fx.methods.registry import build
from leap_fx.objectives.tapping import observe, same_layout, taps
from leap_fx.spec.method import MethodConfig
from leap_fx.spec.train import TrainConfig
from leap_fx.train.setup import analyze_or_explain

__all__ = ["MethodTrainer", "TensorDictDataset"]


class TensorDictDataset(torch.utils.data.Dataset):
    """A map-style dataset over a tokenised ``TextSplit`` or a dict of tensors (for ``Trainer``)."""

    def __init__(self, data):
        self.tensors = as_tensors(data)
        self.n = int(next(iter(self.tensors.values())).shape[0])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}


class _Steps(TrainerCallback):
    """Calls the method's ``on_step`` before each optimiser step and ``finalize`` at the end."""

    def __init__(self, trainer: "MethodTrainer"):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        t = self.trainer
        t.add_values(t.method.on_step(t.model, state.global_step))

    def on_train_end(self, args, state, control, **kwargs):
        t = self.trainer
        if t.finalize_at_end and t.method.uses_masks:
            t.method.finalize(t.model)


class MethodTrainer(Trainer):
    """``Trainer`` over a method's protocol (module docstring).

    Keyword arguments besides the Trainer's: ``method_config`` (required: ``LeapConfig(...)``,
    ``CofiConfig(...)``, ...), ``plan`` (None: analysed from one training batch), ``teacher`` (KD; None:
    the task loss alone), ``train_config`` (``TrainConfig``: alpha, kd_temperature, warmup_ratio),
    ``finalize`` (fold the masks when training ends, default True).
    """

    def __init__(self, *args, method_config: Optional[MethodConfig] = None, plan=None,
                 teacher: Optional[torch.nn.Module] = None, train_config: Optional[TrainConfig] = None,
                 finalize: bool = True, **kwargs):
        if not isinstance(method_config, MethodConfig):
            raise ValueError("MethodTrainer needs method_config=<a method's config>, e.g. LeapConfig(target='flops:0.5')")
        self.method_config, self.plan, self.teacher = method_config, plan, teacher
        self.method_train_config = train_config if train_config is not None else TrainConfig()
        self.finalize_at_end, self.method = finalize, None
        self.taps, self.teacher_taps, self._sums, self._count = {}, {}, {}, 0
        super().__init__(*args, **kwargs)
        self.add_callback(_Steps(self))
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
        if teacher is not None:
            teacher.eval()

    def _planned_steps(self) -> int:
        """Optimiser steps of the run (transformers 5 creates the optimizer before it tells us)."""
        a = self.args
        if a.max_steps and a.max_steps > 0:
            return int(a.max_steps)
        per_epoch = max(1, len(self.get_train_dataloader()) // max(1, a.gradient_accumulation_steps))
        return max(1, math.ceil(per_epoch * a.num_train_epochs))

    def _build_method(self) -> None:
        """Build the method for this run and install its masks (once)."""
        model = self.model
        method = build(self.method_config, self._planned_steps(), self.method_train_config)
        captures = method.objective_fn.captures
        example = None
        if self.plan is None and (method.uses_masks or captures):
            example = self._example()
            self.plan = analyze_or_explain(model, example, self.method_config.residual, f"method {method.name!r}")
        method.prepare(model, self.plan)
        method.objective_fn.to(next(model.parameters()).device)
        self.taps = taps(self.plan, captures) if captures else {}
        self.teacher_taps = self.taps
        if captures and self.teacher is not None and not same_layout(model, self.teacher):
            teacher_plan = analyze_or_explain(self.teacher, example or self._example(), False, "a teacher of another layout")
            self.teacher_taps = taps(teacher_plan, captures)
        self.method = method

    def _example(self) -> dict:
        """Two rows of the first training batch, on the model's device: the inputs analysis traces with."""
        batch = next(iter(self.get_train_dataloader()))
        device = next(self.model.parameters()).device
        return {k: v[:2].to(device) for k, v in model_inputs(batch).items()}

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            if self.method is None:
                self._build_method()
            a = self.args
            groups = self.method.param_groups(self.model, a.learning_rate, a.weight_decay)
            self.optimizer = torch.optim.AdamW(groups, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2),
                                               eps=a.adam_epsilon)
        return self.optimizer

    def add_values(self, values: dict) -> None:
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.method is None:
            self._build_method()
        features = model_inputs(inputs)
        logits = self.method.task_loss.logits
        out = observe(model, features, self.model, self.taps, logits)
        t_out = None
        if self.teacher is not None and model.training:
            with torch.no_grad():
                t_out = observe(self.teacher, features, self.teacher, self.teacher_taps, logits)
        terms = self.method.loss_terms(out, t_out, inputs, self.state.global_step)
        loss = terms.task + (terms.penalty if terms.penalty is not None and model.training else 0.0)
        if model.training:
            self.add_values({"task": terms.task.detach(), **{k: v.detach() for k, v in terms.parts.items()},
                             **terms.values})
            self._count += 1
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self._count:
            logs.update({k: v / self._count for k, v in self._sums.items()})
            self._sums, self._count = {}, 0
        super().log(logs, *args, **kwargs)
