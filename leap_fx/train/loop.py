"""The plain-PyTorch training loop of every trained method (LEAP, its baselines, the dense teacher).

Each step: ``method.on_step`` (schedules) -> student forward (and teacher forward, capturing block
outputs when the method's objective asks) -> ``method.loss_terms`` -> ``task * share + penalty`` ->
backward -> clip -> AdamW step (the method's parameter groups) -> LR schedule (linear warmup, then
linear decay). The method owns the objective; the loop owns batching, logging, evaluation and
checkpoints: atomic, resumable exactly (batch order is a function of seed and epoch; the checkpoint
holds weights, mask state, optimizer, scheduler, method state, RNGs and the log means).

Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in DDP and every rank
trains on its share of each global batch (``distributed.py``); rank 0 alone writes files.
A NaN/Inf loss, gradient or mask parameter stops training at that step with ``FloatingPointError``;
the last checkpoint on disk is the last good state.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from leap_fx.data.batches import (
    as_tensors,
    batches_per_epoch,
    iterate_batches,
    model_inputs,
    num_examples,
)
from leap_fx.env.progress import Progress
from leap_fx.masks.lifecycle import owners
from leap_fx.objectives.outputs import Outputs, logits_of
from leap_fx.objectives.tapping import observe, same_layout, taps
from leap_fx.spec.train import TrainConfig
from leap_fx.train.checkpoint import (
    CHECKPOINT,
    History,
    check_same_content,
    check_same_run,
    read_checkpoint,
    remove_stale_temps,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
)
from leap_fx.train.checks import (
    check_forward_inputs,
    grad_norm,
    last_good,
    non_finite_mask_params,
)
from leap_fx.train.digest import run_content
from leap_fx.train.distributed import Dist, unused_parameters
from leap_fx.train.validation import evaluate
from leap_fx.train.records import Mean, density_by_kind, weight_kinds
from leap_fx.train.schedules import lr_scheduler
from leap_fx.train.setup import as_method, auto_plan, total_steps

__all__ = ["Loop", "TrainResult", "evaluate", "train"]

_NOT_SCHEDULE = ("log_every", "eval_every", "checkpoint_every", "checkpoint_minutes", "eval_batch_size", "fold",
                 "progress_seconds")


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    metrics: dict = field(default_factory=dict)  # final validation metrics and densities
    out_dir: Optional[str] = None


class Loop:
    """One run of :func:`train`; its methods are the loop's stages."""

    def __init__(self, model, teacher, train_data, val_data, config, method, plan, out_dir, resume, quiet,
                 evaluate_fn: Optional[Callable] = None):
        self.model, self.teacher, self.val_data, self.config = model, teacher, val_data, config
        self.evaluate_fn = evaluate_fn or evaluate
        self.dist = Dist.current()
        self.dist.check_batch_size(config.batch_size)
        self.tensors = as_tensors(train_data)
        check_forward_inputs(model, [k for k in self.tensors if k != "labels"], "the training data")
        self.n_total, self.bpe = total_steps(config, train_data), batches_per_epoch(train_data, config.batch_size)
        torch.manual_seed(config.seed + self.dist.rank)
        self.method = as_method(method, config, self.n_total)
        needs_plan = self.method.uses_masks and self.method.config.needs_plan
        captures = self.method.objective_fn.captures
        if plan is None and (self.method.uses_masks or captures):
            plan = auto_plan(model, train_data, needs_plan or bool(captures), f"method {self.method.name!r}",
                             self.method.config.residual)
        self.plan, self.taps = plan, taps(plan, captures) if captures else {}
        self.teacher_taps = self.taps if not self.taps or teacher is None or same_layout(model, teacher) else \
            taps(auto_plan(teacher, train_data, True, "distilling from a teacher of another layout"), captures)
        self.method.prepare(model, plan)
        self.method.objective_fn.to(next(model.parameters()).device)  # its parameters train with the model
        self.optimizer = torch.optim.AdamW(self.method.param_groups(model, config.lr, config.weight_decay),
                                           lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = lr_scheduler(self.optimizer, int(config.warmup_ratio * self.n_total), self.n_total)
        self.kinds = weight_kinds(plan, self.method.densities(model))
        self.owners = owners(model)
        self.main, self.quiet = self.dist.is_main, quiet
        self.history = History(out_dir if self.main else None)
        self.step, self.carry, self.ckpt = 0, {}, os.path.join(out_dir, CHECKPOINT) if out_dir else None
        self.out_dir, self.labels_checked = out_dir, False
        self.content = run_content(self.tensors, teacher) if out_dir else {}
        if out_dir:
            self._resume_or_start(resume)

    def _resume_or_start(self, resume: bool) -> None:
        if self.dist.broadcast(bool(resume and os.path.exists(self.ckpt))):
            state = read_checkpoint(self.ckpt)
            extra = state.get("extra", {})
            self._check_same_run(extra)  # before anything is loaded or written
            check_same_content(extra.get("content") or {}, self.content, self.ckpt)
            restore_checkpoint(state, self.model, self.optimizer, self.scheduler, self.dist.rank)
            self.method.objective_fn.load_state_dict(state.get("objective", {}))
            self.method.load_state_dict(self.model, extra.get("method_state") or {})
            self.step, self.carry = state["step"], extra.get("loop", {})
            self.history.resume(self.step)
            if self.main and not self.quiet:
                print(f"[leap-fx] {self.method.name}: resuming from step {self.step} of {self.n_total} "
                      f"({self.ckpt})", flush=True)
        else:
            self.history.reset()
        if self.main:
            os.makedirs(self.out_dir, exist_ok=True)
            remove_stale_temps(self.out_dir)
            self.config.to_json(os.path.join(self.out_dir, "train_config.json"))

    def _check_same_run(self, extra: dict) -> None:
        check_same_run(extra, {"method": self.method.name, "train_config": self.config.to_dict(),
                               "method_config": self._method_config()}, self.ckpt, _NOT_SCHEDULE)

    def _method_config(self) -> dict:
        return self.method.config.to_dict()

    def forward(self, net, batch: dict) -> tuple[Outputs, Optional[Outputs]]:
        """Student (and teacher) outputs, with what the objective captures (block outputs, scores)."""
        inputs = model_inputs(batch)
        task = self.method.task_loss
        out, t_out = observe(net, inputs, self.model, self.taps, task.logits), None
        if self.teacher is not None and (self.config.alpha > 0 or self.taps):
            with torch.no_grad():
                t_out = observe(self.teacher, inputs, self.teacher, self.teacher_taps, task.logits)
        return out, t_out

    def train_step(self, net, batch: dict, params: list) -> dict:
        """One optimiser step; returns the values to log."""
        sched_log = self.method.on_step(self.model, self.step)
        local, share = self.dist.shard(batch)
        device = next(self.model.parameters()).device
        local = {k: v.to(device) for k, v in local.items()}
        out, t_out = self.forward(net, local)
        if not self.labels_checked:
            self.method.task_loss.check(out.logits, self.tensors["labels"])
            self.labels_checked = True
        terms = self.method.loss_terms(out, t_out, local, self.step)
        loss = terms.task * share + (terms.penalty if terms.penalty is not None else 0.0)
        names = ["task", *terms.parts]  # batch means over every rank (the global batch's)
        means = self.dist.sum(torch.stack([terms.task.detach().float(), *[p.detach().float() for p in
                                                                          terms.parts.values()]])
                              * (share / self.dist.world)).tolist()
        logged = dict(zip(names, means))
        total = logged["task"] + (float(terms.penalty.detach()) if terms.penalty is not None else 0.0)
        if not math.isfinite(total):
            raise FloatingPointError(f"non-finite loss ({total}) at step {self.step + 1} ({logged}, "
                                     f"{terms.values}): lower the learning rates{last_good(self.ckpt)}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = grad_norm(params)
        if not torch.isfinite(norm):
            bad = [n for n, p in self.model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            raise FloatingPointError(f"non-finite gradients at step {self.step + 1} in {bad[:5]}; the parameters "
                                     f"were not updated{last_good(self.ckpt)}")
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grads_with_norm_(params, self.config.max_grad_norm, norm)
        self.optimizer.step()
        self.scheduler.step()
        bad = non_finite_mask_params(self.owners)
        if bad:
            raise FloatingPointError(f"non-finite mask parameters {bad[:5]} after step {self.step + 1}: "
                                     f"lower mask_lr{last_good(self.ckpt)}")
        self.step += 1
        return {"loss": total, **logged, **terms.values, **sched_log}

    def log(self, meter: Mean, values: dict, t0: float) -> dict:
        rec = {"type": "train", "step": self.step, "epoch": self.step / self.bpe, **meter.pop(),
               "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - t0}
        for group in self.optimizer.param_groups[1:]:  # each group's rate under its own name
            name = group.get("name", "group")
            rec["mask_lr" if name == "masks" else f"{name}_lr"] = group["lr"]
        if self.method.uses_masks:
            rec.update(density_by_kind(self.model, self.method.densities(self.model), self.kinds))
        self.history.add(rec)
        return rec

    def checkpoint(self, meter: Mean, t0: float) -> None:
        rngs = self.dist.gather(rng_state())
        if self.main:
            loop = {"meter": meter.state(), "elapsed_s": time.perf_counter() - t0, "world": self.dist.world}
            extra = {"method": self.method.name, "train_config": self.config.to_dict(),
                     "method_config": self._method_config(),
                     "method_state": self.method.state_dict(self.model), "loop": loop, "content": self.content}
            save_checkpoint(self.ckpt, self.model, self.optimizer, self.scheduler, self.step, extra, rng=rngs,
                            more_tensors={"objective": self.method.objective_fn.state_dict()})

    def _checkpoint_due(self, every: int, last: float) -> bool:
        """Every ``every`` steps, at the end, and (``checkpoint_minutes`` > 0) when rank 0's clock says so."""
        if self.step % every == 0 or self.step == self.n_total:
            return True
        minutes = self.config.checkpoint_minutes
        return minutes > 0 and self.dist.broadcast(time.perf_counter() - last >= 60.0 * minutes)

    def run(self, stop_after: Optional[int], find_unused_parameters: Optional[bool]) -> TrainResult:
        cfg, model = self.config, self.model
        if self.teacher is not None:
            self.teacher.eval()
        eval_every, ckpt_every = cfg.eval_every or self.bpe, cfg.checkpoint_every or self.bpe
        stop = min(self.n_total, stop_after) if stop_after else self.n_total
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        progress = Progress(self.n_total, self.step, self.method.name, self.quiet or not self.main,
                            cfg.progress_seconds)
        meter, t0 = Mean(self.carry.get("meter")), time.perf_counter() - self.carry.get("elapsed_s", 0.0)
        model.train()
        net = self.dist.wrap(model, self._find_unused(find_unused_parameters))
        last_save = time.perf_counter()
        while self.step < stop:
            epoch, start = divmod(self.step, self.bpe)
            for batch in iterate_batches(self.tensors, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                                         start=start, group_by_length=cfg.group_by_length):
                values = self.train_step(net, batch, params)
                meter.add(values)
                shown = {k: values[k] for k in ("loss", *self.method.progress_keys) if k in values}
                progress.update(1, shown)
                if self.main and (self.step % cfg.log_every == 0 or self.step == self.n_total):
                    self.log(meter, values, t0)
                if self.main and self.val_data is not None and (self.step % eval_every == 0
                                                               or self.step == self.n_total):
                    self.history.add({"type": "eval", "step": self.step, "epoch": self.step / self.bpe,
                                      **self.evaluate_fn(model, self.val_data, cfg.eval_batch_size)})
                    model.train()
                if self.ckpt and self._checkpoint_due(ckpt_every, last_save):
                    last_save = time.perf_counter()
                    self.checkpoint(meter, t0)
                if self.step >= stop:
                    break
        progress.close()
        del net
        model.eval()
        return self.finish()

    def _find_unused(self, flag: Optional[bool]) -> bool:
        if not self.dist.active or flag is not None:
            return bool(flag)
        trial = self.dist.shard(next(iterate_batches(self.tensors, self.config.batch_size)))[0]
        device = next(self.model.parameters()).device
        trial = model_inputs({k: v.to(device) for k, v in trial.items()})
        return self.dist.any(bool(unused_parameters(self.model, trial, logits_of)))

    def finish(self) -> TrainResult:
        model = self.model
        if self.step < self.n_total:  # interrupted on purpose (stop_after): leave masks in place
            return TrainResult(model, self.history.records, {"step": self.step}, self.out_dir)
        metrics = {"step": self.step, "examples": num_examples(self.tensors)}
        if self.method.uses_masks:
            metrics.update(density_by_kind(model, self.method.densities(model), self.kinds))
            if self.config.fold:
                model = self.method.finalize(model)
        if self.val_data is not None and self.main:
            metrics.update(self.evaluate_fn(model, self.val_data, self.config.eval_batch_size))
        return TrainResult(model, self.history.records, metrics, self.out_dir)


def train(model: nn.Module, teacher: Optional[nn.Module], train_data, val_data=None,
          config: Optional[TrainConfig] = None, method=None, plan=None, out_dir: Optional[str] = None,
          resume: bool = True, quiet: bool = False, stop_after: Optional[int] = None,
          find_unused_parameters: Optional[bool] = None, evaluate_fn: Optional[Callable] = None) -> TrainResult:
    """Train ``model`` in place with ``method`` and return it (folded unless ``config.fold=False``).

    Args:
        teacher: dense fine-tuned model for KD (None: CE only).
        train_data / val_data: tokenised ``TextSplit`` or dict of tensors with ``labels``.
        method: a method config (``LeapConfig(...)``, ``MagnitudeConfig(...)``, ...), a built
            ``Method``, or None (dense fine-tuning).
        plan: family Plan; computed with ``passes.analyze`` when None and the method needs one.
        out_dir: history.jsonl, checkpoint.pt and train_config.json; a re-run resumes from checkpoint.pt.
        stop_after: stop (without finishing) after this many global steps, as if interrupted.
        find_unused_parameters: passed to DDP (multi-process runs only); None (default): True iff
            one trial forward leaves a trainable parameter without gradient.
        evaluate_fn: ``(model, val_data, batch_size) -> {name: value}`` logged at every evaluation (the
            task's metric; default: classification accuracy and loss, ``train.evaluate.evaluate``).
    """
    loop = Loop(model, teacher, train_data, val_data, config or TrainConfig(), method, plan, out_dir, resume,
                quiet, evaluate_fn)
    return loop.run(stop_after, find_unused_parameters)
