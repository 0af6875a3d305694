"""``Pruner``: any registered method on any model, driven by the user's batches and loss.

    config = LeapConfig(target="flops:0.5", granularity="structured")
    pruner = Pruner(model, config, example_inputs=batch, loss_fn=loss_fn, steps=300)
    opt = pruner.optimizer(lr=1e-4)             # the method's groups: weights, scores / thresholds / gates
    for batch in batches:                       # your loop, your schedule
        pruner.step(batch, opt)                 # on_step + loss_fn (+ KD) + the method's penalty, backward, step
    pruner.finish()                             # fold; a PruningWarning if the target was missed
    pruner.strip(); pruner.export("slim.onnx")  # exact removal, ONNX with onnxruntime parity

``loss_fn(model, batch) -> loss`` runs the forward itself (a batch mean, as usual); ``teacher`` (+
``match_fn(student_out, teacher_out, batch)``, default: the task loss's distillation, else KL of the
logits) adds ``(1 - alpha) loss + alpha KD`` on the same forward. One-shot methods: ``pruner.calibrate(
batches)`` (Kwon: the Fisher of ``loss_fn`` summed over the examples; l2-oneshot: the weights alone).
``fit(batches, lr)`` is a ready loop; ``train(...)`` hands the method to the library's loop (checkpoints,
evaluation; the job's path). What the method objective itself adds (CoFi's layer matching, SparseBERT's
hidden / attention distillation) runs in ``train``; ``step`` adds the method's penalty to your loss.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import replace
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from leap_fx.data.batches import model_inputs
from leap_fx.masks.lifecycle import owners
from leap_fx.methods.base import Method
from leap_fx.methods.kwon.batches import batch_size
from leap_fx.methods.registry import build
from leap_fx.objectives.outputs import Outputs, logits_of
from leap_fx.objectives.task_loss import TaskLoss, kl_divergence
from leap_fx.plugin.capture import ForwardCapture
from leap_fx.plugin.safeguards import achieved, check_mask_lr, target_check
from leap_fx.plugin.safeguards import strip as checked_strip
from leap_fx.plugin.tokens import tokens_per_example
from leap_fx.spec.method import MethodConfig
from leap_fx.spec.train import TrainConfig
from leap_fx.train.loop import train as library_loop
from leap_fx.train.schedules import lr_scheduler
from passes.analyze import analyze
from passes.export import export_onnx

__all__ = ["Pruner"]

LossFn = Callable[[nn.Module, dict], torch.Tensor]


class _NoTask(TaskLoss):
    """The method's own task term is the user's loss, added by the Pruner: here it is 0."""

    def loss(self, logits, batch):
        return torch.zeros((), device=logits.device)


class Pruner:
    """One method on one model (module docstring). ``steps``: the optimiser steps your loop will run
    (trained methods size their schedules and mask learning rates by it; required for them)."""

    def __init__(self, model: nn.Module, config: MethodConfig, *, example_inputs: Optional[dict] = None, plan=None,
                 loss_fn: Optional[LossFn] = None, steps: Optional[int] = None, teacher: Optional[nn.Module] = None,
                 match_fn: Optional[Callable] = None, task_loss: Optional[TaskLoss] = None,
                 train_config: Optional[TrainConfig] = None):
        if not isinstance(config, MethodConfig):
            raise TypeError(f"Pruner needs a method config (e.g. leap_fx.LeapConfig(target='flops:0.5')), got "
                            f"{type(config).__name__}")
        if plan is None and example_inputs is None:
            raise ValueError("Pruner needs example_inputs=<one batch of the model's inputs> (to find its heads and "
                             "neurons) or plan=leap_fx.analyze(model, example_inputs)")
        self.model, self.teacher, self.loss_fn, self.match_fn, self.task_loss = model, teacher, loss_fn, match_fn, task_loss
        self.example = model_inputs(example_inputs) if example_inputs is not None else None  # without labels
        self.plan = plan if plan is not None else analyze(model, self.example, residual=config.residual)
        if config.goal.unit != "density" and not config.cost_seq:
            config = replace(config, cost_seq=tokens_per_example(model, self.plan, example_inputs))
        self.config, self.train_config = config, train_config or TrainConfig()
        self.method: Method = build(config, steps or 1, self.train_config, _NoTask() if loss_fn is not None else task_loss)
        if self.method.kind == "trained":
            if not steps or steps < 1:
                raise ValueError(f"{self.method.name} is trained: declare the optimiser steps your loop will run "
                                 f"(Pruner(..., steps=N)); its schedules and mask learning rate are sized by them")
            check_mask_lr(self.method, steps)
        self.steps, self.step_count, self.prepared, self.last = steps, 0, False, {}
        if teacher is not None:
            teacher.eval()

    @property
    def kind(self) -> str:
        return self.method.kind

    def prepare(self) -> None:
        """Install the method's masks (once; ``param_groups``, ``step``, ``calibrate`` call it)."""
        if not self.prepared:
            self.method.prepare(self.model, self.plan)
            if self.kind == "trained":  # its objective's parameters (a layer map) train with the model
                self.method.objective_fn.to(next(self.model.parameters()).device)
            self.prepared = True

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """The method's optimiser groups: weights at ``lr``, its mask state at its own learning rates."""
        self.prepare()
        return self.method.param_groups(self.model, lr, weight_decay)

    def optimizer(self, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.param_groups(lr, weight_decay), lr=lr, weight_decay=weight_decay)

    # -- a loop of your own --------------------------------------------------------------------
    def _distill(self, cap: ForwardCapture, batch: dict) -> torch.Tensor:
        if cap.output is None:
            raise ValueError("loss_fn(model, batch) did not call the model: distillation needs its output")
        with torch.no_grad():
            t_out = self.teacher(*cap.args, **cap.kwargs)
        if self.match_fn is not None:
            return self.match_fn(cap.output, t_out, batch)
        read = self.task_loss.logits if self.task_loss is not None else logits_of
        if self.task_loss is not None:
            return self.task_loss.distill(read(cap.output), read(t_out), batch, self.train_config.kd_temperature)
        return kl_divergence(read(cap.output), read(t_out), self.train_config.kd_temperature)

    def loss(self, batch: dict) -> torch.Tensor:
        """This step's loss: ``on_step`` (schedules), ``loss_fn`` (+ KD), + the method's penalty."""
        if self.kind != "trained":
            raise ValueError(f"{self.method.name} is one-shot: call pruner.calibrate(batches), not a training loop")
        if self.loss_fn is None:
            raise ValueError("Pruner(..., loss_fn=<(model, batch) -> loss>) is needed for a loop of your own")
        self.prepare()
        values = self.method.on_step(self.model, self.step_count)
        with ForwardCapture(self.model) if self.teacher is not None else contextlib.nullcontext() as cap:
            task = self.loss_fn(self.model, batch)
        total, parts = task, {"task": float(task.detach())}
        if self.teacher is not None:
            kd = self._distill(cap, batch)
            alpha = self.train_config.alpha
            total, parts["kd"] = (1.0 - alpha) * task + alpha * kd, float(kd.detach())
        terms = self.method.loss_terms(Outputs(logits=task.detach().reshape(1)), None, batch, self.step_count)
        if terms.penalty is not None:
            total = total + terms.penalty
            parts["penalty"] = float(terms.penalty.detach())
        self.step_count += 1
        self.last = {"step": self.step_count, "loss": float(total.detach()), **parts, **values, **terms.values}
        return total

    def step(self, batch: dict, optimizer: torch.optim.Optimizer, scheduler=None,
             max_grad_norm: Optional[float] = 1.0) -> dict:
        """``loss`` -> backward -> clip -> optimiser (and scheduler) step; returns the logged values."""
        loss = self.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return dict(self.last)

    def fit(self, batches: Iterable[dict], lr: float, weight_decay: float = 0.0) -> list[dict]:
        """A ready loop: ``steps`` steps over ``batches`` (re-read when exhausted), AdamW, linear warmup
        (``train_config.warmup_ratio``) then linear decay; returns every step's logged values."""
        opt = self.optimizer(lr, weight_decay)
        sched = lr_scheduler(opt, int(self.train_config.warmup_ratio * self.steps), self.steps)
        self.model.train()
        batches = list(batches)
        if not batches:
            raise ValueError("fit needs at least one batch")
        return [self.step(b, opt, sched, self.train_config.max_grad_norm)
                for b in itertools.islice(itertools.cycle(batches), self.steps - self.step_count)]

    # -- the library's loop, one-shot methods, the end -----------------------------------------
    def train(self, train_data, val_data=None, out_dir: Optional[str] = None, resume: bool = False,
              quiet: bool = True, evaluate_fn=None):
        """The library's loop (``leap_fx.train.train``: checkpoints, evaluation, DDP) with this method and the
        task loss; the masks stay unfolded for ``finish``. Returns its ``TrainResult``."""
        if self.task_loss is None or self.loss_fn is not None:
            raise ValueError("Pruner.train runs the library's loop with the task's loss: pass task_loss=<a TaskLoss> "
                             "and no loss_fn (loss_fn is for step / fit, a loop of your own)")
        cfg = replace(self.train_config, fold=False)
        return library_loop(self.model, self.teacher, train_data, val_data, cfg, self.method, self.plan, out_dir,
                            resume, quiet, evaluate_fn=evaluate_fn)

    def calibrate(self, batches: Iterable[dict]) -> dict:
        """A one-shot method's masks from ``batches`` (dicts of the model's inputs and the labels your loss
        reads); Kwon's Fisher is taken of ``loss_fn`` times the batch size (a sum over the examples)."""
        if self.kind != "one-shot":
            raise ValueError(f"{self.method.name} is trained: use step / fit / train, not calibrate")
        self.prepare()
        kwargs = {}
        if self.loss_fn is not None and self.method.name == "kwon":
            kwargs["model_loss"] = lambda model, batch: self.loss_fn(model, batch) * batch_size(batch)
        return self.method.calibrate(self.model, list(batches), self.teacher, **kwargs)

    def achieved(self) -> float:
        """The fraction of the target's unit the current masks keep (CoFi: its gates' own count)."""
        return achieved(self.config, self.model, self.plan, self.method)

    def finish(self) -> dict:
        """Fold the method's masks into plain weights (``finalize``); returns the target check (a
        ``PruningWarning`` when it was missed or nothing was pruned)."""
        if not owners(self.model) and self.method.uses_masks:
            raise ValueError("nothing to fold: the masks were never installed (no step / calibrate) or are folded")
        check = target_check(self.config, self.achieved())
        self.method.finalize(self.model)
        self.model.eval()
        return check

    def strip(self, example_inputs: Optional[dict] = None):
        """Remove the emptied heads / neurons exactly (self-checked); a ``PruningWarning`` if nothing went."""
        return checked_strip(self.model, self.plan, example_inputs or self.example,
                             sublayers=self.config.strip_sublayers)

    def export(self, path: str, example_inputs: Optional[dict] = None, **kwargs):
        """``export_onnx`` of the (stripped) model, onnxruntime parity checked."""
        return export_onnx(self.model, example_inputs or self.example, path, **kwargs)
