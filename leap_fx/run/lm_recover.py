"""Recovery fine-tuning of a one-shot language model (``--recover STEPS``, the causal-LM task's ``recover``).

After a one-shot method (Kwon, L2, random) the job strips the model; ``recover`` then trains the
**stripped** model, every remaining weight, for ``STEPS`` optimiser steps on the training blocks in the
shared loop (``leap_fx.train``, the dense method: no masks) with the task's objective, LEAP's Eq. 8
``(1 - alpha) CE + alpha T^2 KL`` where CE is the next-token loss and KL the top-k distillation from the
dense model (``tasks.causal_lm.kd``). Removed heads and neurons are gone from the tensors, so training
cannot bring them back and the FLOPs stay what the method reached. ``--lr``, ``--batch-size`` and
``--alpha`` are the loop's; the checkpoint lives in ``<out>/train/`` (``--resume`` continues it).
"""
from __future__ import annotations

import math
import os
from dataclasses import replace

from torch import nn

from leap_fx.data.batches import batches_per_epoch
from leap_fx.methods.dense.config import DenseConfig
from leap_fx.methods.registry import build, config_class, handler_class
from leap_fx.spec.options import PruneOptions
from leap_fx.spec.train import TrainConfig
from leap_fx.train.loop import train

__all__ = ["check_recover", "recover", "recover_config"]


def check_recover(opts: PruneOptions, steps: int) -> None:
    """Recovery is for one-shot methods; a trained method already fine-tunes (one line naming the fix)."""
    if steps and handler_class(config_class(opts.method)).kind != "one-shot":
        raise ValueError(f"--recover {steps}: recovery fine-tunes one-shot methods (kwon, l2-oneshot, random); "
                         f"{opts.method!r} trains already: set its --epochs instead, or drop --recover")


def recover_config(base: TrainConfig, steps: int, train_tensors: dict) -> TrainConfig:
    """The job's training settings, run for exactly ``steps`` optimiser steps (as many epochs as needed)."""
    per_epoch = batches_per_epoch(train_tensors, base.batch_size)
    return replace(base, epochs=float(math.ceil(steps / per_epoch)), max_steps=steps,
                   log_every=max(1, steps // 50))


def recover(task, opts: PruneOptions, student: nn.Module, teacher: nn.Module, data, steps: int, base: TrainConfig,
            out: str, device) -> tuple[nn.Module, list[dict], dict]:
    """Fine-tune ``student`` (stripped, in place) for ``steps`` steps: ``(model on CPU, history, record)``.
    The record holds the settings and the validation loss / perplexity before and after."""
    train_t, val_t = task.tensors(data.blocks["train"]), task.tensors(data.blocks["validation"])
    cfg = recover_config(base, steps, train_t)
    method = build(DenseConfig(), steps, cfg, task.task_loss())
    student, teacher = student.to(device).requires_grad_(True), teacher.to(device)
    before = task.evaluate(student.eval(), val_t)
    res = train(student, teacher, train_t, val_t, cfg, method, None, out_dir=os.path.join(out, "train"),
                resume=opts.resume, quiet=not opts.verbose, evaluate_fn=task.evaluate)
    losses = [r["task"] for r in res.history if r.get("type") == "train" and "task" in r]
    record = {"steps": int(res.metrics.get("step", 0)), "lr": cfg.lr, "batch_size": cfg.batch_size,
              "alpha": cfg.alpha, "kd_temperature": cfg.kd_temperature, "kd_top_k": task.config.kd_top_k,
              "epochs": cfg.epochs, "blocks": int(data.blocks["train"].shape[0]),
              "objective": "(1 - alpha) next-token CE + alpha T^2 top-k KL from the dense model",
              "val_loss_before": before["val_loss"], "val_perplexity_before": before["val_perplexity"],
              "val_loss_after": res.metrics.get("val_loss"), "val_perplexity_after": res.metrics.get("val_perplexity"),
              "train_loss_first_log": losses[0] if losses else None, "train_loss_last_log": losses[-1] if losses else None}
    return res.model.requires_grad_(False).cpu().eval(), res.history, record
