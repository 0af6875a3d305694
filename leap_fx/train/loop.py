"""The plain-PyTorch training loop for LEAP (paper Eq. 8) and its baselines.

``loss = (1 - α)·CE + α·KD(teacher, τ) + λ·L_reg`` (LEAP; the baselines have no L_reg, dense has no KD
when no teacher is given). AdamW with separate learning rates for weights and S/σ (App. A), linear
warmup then linear decay, fixed seed, JSONL history, periodic validation, atomic checkpoints that a
re-run with the same ``out_dir`` resumes from exactly (batch order is a function of seed and epoch;
the checkpoint holds weights, S, σ, optimizer, scheduler, method state, RNGs and the log means).

Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in DDP and every rank
trains on its share of each global batch (``distributed.py``); rank 0 alone writes files.
A NaN/Inf loss, gradient, score S or threshold σ stops training at that step with
``FloatingPointError``; the last checkpoint on disk is the last good state.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ..data.batches import as_tensors, batches_per_epoch, iterate_batches, num_examples
from .checks import check_forward_inputs, check_labels, non_finite_mask_params
from .distill import objective
from .distributed import Dist, unused_parameters
from .evaluate import logits_of, model_inputs, predict_logits
from .methods import make_method
from .records import Mean, density_by_kind, weight_kinds
from .schedules import lr_scheduler
from .state import (CHECKPOINT, History, TrainConfig, read_checkpoint, remove_stale_temps, restore_checkpoint,
                    rng_state, save_checkpoint)

__all__ = ["TrainResult", "train", "total_steps", "evaluate", "weight_kinds", "density_by_kind"]


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    metrics: dict = field(default_factory=dict)  # final validation metrics and densities
    out_dir: Optional[str] = None


def total_steps(config: TrainConfig, train_data) -> int:
    """Steps of the whole run: ``ceil(epochs * batches per epoch)``, capped by ``max_steps``."""
    steps = math.ceil(config.epochs * batches_per_epoch(train_data, config.batch_size))
    return max(1, min(steps, config.max_steps) if config.max_steps else steps)


def evaluate(model: nn.Module, data, batch_size: int = 128) -> dict[str, float]:
    """Validation accuracy and cross-entropy."""
    labels = as_tensors(data)["labels"]
    logits = predict_logits(model, data, batch_size)
    check_labels(labels, logits.shape[-1])
    return {"val_accuracy": float((logits.argmax(-1) == labels).float().mean()),
            "val_loss": float(nn.functional.cross_entropy(logits, labels))}


def _auto_plan(model, train_data, leap_config):
    """``leap_fx.analyze`` on one training batch, when the granularity needs a Plan (or for logging)."""
    example = model_inputs(next(iterate_batches(train_data, 2)))
    try:
        import leap_fx
        return leap_fx.analyze(model, example)
    except Exception as err:
        if leap_config.needs_plan:
            raise ValueError(f"granularity {leap_config.granularity!r} needs a Plan and automatic analysis "
                             f"failed ({err}); pass plan=leap_fx.analyze(model, example_inputs)") from err
        return None


_NOT_SCHEDULE = ("log_every", "eval_every", "checkpoint_every", "checkpoint_minutes", "eval_batch_size", "fold")


def _check_same_run(extra: dict, config: TrainConfig, leap_config, path: str) -> None:
    """Refuse to resume a checkpoint written with other training or LEAP hyperparameters."""
    diff = []
    for saved, now in ((extra.get("train_config"), config.to_dict()),
                       (extra.get("leap_config"), leap_config.to_dict() if leap_config is not None else None)):
        if saved is not None and now is not None:
            diff += sorted(k for k in now if k not in _NOT_SCHEDULE and saved.get(k) != now[k])
    if diff:
        raise ValueError(f"checkpoint {path} was written with other settings ({', '.join(diff)}); "
                         f"use another out_dir, or resume=False to start over")


def _last_good(ckpt: Optional[str]) -> str:
    return f"; last good checkpoint: {ckpt}" if ckpt and os.path.exists(ckpt) else "; no checkpoint was written"


def _bad_grads(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]


def _grad_norm(params) -> torch.Tensor:
    """Total L2 norm of the gradients (checked for NaN/Inf *before* clipping spreads them)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: what clip_grad_norm_ computes
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _clip(params, max_norm: float, norm: torch.Tensor) -> None:
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef)


def _checkpoint_due(step: int, n_total: int, every: int, minutes: float, last: float, dist: Dist) -> bool:
    """Every ``every`` steps, at the end, and (``minutes`` > 0) when rank 0's clock says so."""
    if step % every == 0 or step == n_total:
        return True
    return minutes > 0 and dist.broadcast(time.perf_counter() - last >= 60.0 * minutes)


def train(model: nn.Module, teacher: Optional[nn.Module], train_data, val_data=None,
          config: Optional[TrainConfig] = None, leap_config=None, plan=None, out_dir: Optional[str] = None,
          resume: bool = True, quiet: bool = False, stop_after: Optional[int] = None,
          find_unused_parameters: Optional[bool] = None) -> TrainResult:
    """Train ``model`` in place with ``config.method`` and return it (folded unless ``config.fold=False``).

    Args:
        teacher: dense fine-tuned model for KD (None: CE only).
        train_data / val_data: tokenised ``TextSplit`` or dict of tensors with ``labels``.
        leap_config: target density and granularity (methods leap/movement/magnitude).
        plan: family Plan; computed with ``leap_fx.analyze`` when None and masks are used.
        out_dir: history.jsonl, checkpoint.pt and configs go here; a re-run resumes from checkpoint.pt.
        stop_after: stop (without finishing) after this many global steps, as if interrupted.
        find_unused_parameters: passed to DDP (multi-process runs only); None (default): True iff
            one trial forward leaves a trainable parameter without gradient (an owner with
            ``fixed_k`` gives σ none, a model may skip a head).
    """
    config = config or TrainConfig()
    dist = Dist.current()
    dist.check_batch_size(config.batch_size)
    tensors = as_tensors(train_data)
    check_forward_inputs(model, [k for k in tensors if k != "labels"], "the training data")
    n_total = total_steps(config, train_data)
    bpe = batches_per_epoch(train_data, config.batch_size)
    torch.manual_seed(config.seed + dist.rank)
    method = make_method(config, leap_config, None, n_total)
    if method.uses_masks and plan is None:
        plan = _auto_plan(model, train_data, leap_config)
    method.plan = plan
    method.setup(model)
    optimizer = torch.optim.AdamW(method.param_groups(model), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = lr_scheduler(optimizer, int(config.warmup_ratio * n_total), n_total)
    kinds = weight_kinds(plan, method.densities(model)) if method.uses_masks else {}
    owners = method.owners(model) if method.uses_masks else {}

    main = dist.is_main
    history, step, ckpt, carry = History(out_dir if main else None), 0, None, {}
    if out_dir:
        ckpt = os.path.join(out_dir, CHECKPOINT)
        if dist.broadcast(bool(resume and os.path.exists(ckpt))):
            state = read_checkpoint(ckpt)
            extra = state.get("extra", {})
            _check_same_run(extra, config, leap_config, ckpt)  # before anything is loaded or written
            restore_checkpoint(state, model, optimizer, scheduler, dist.rank)
            method.load_state_dict(model, extra.get("method_state") or {})
            step, carry = state["step"], extra.get("loop", {})
            history.resume(step)
        else:
            history.reset()
        if main:
            os.makedirs(out_dir, exist_ok=True)
            remove_stale_temps(out_dir)
            config.to_json(os.path.join(out_dir, "train_config.json"))
            if leap_config is not None:
                leap_config.to_json(os.path.join(out_dir, "leap_config.json"))
    if teacher is not None:
        teacher.eval()
    eval_every = config.eval_every or bpe
    ckpt_every = config.checkpoint_every or bpe
    stop = min(n_total, stop_after) if stop_after else n_total
    device = next(model.parameters()).device
    params = [p for g in optimizer.param_groups for p in g["params"]]

    from tqdm.auto import tqdm
    bar = tqdm(total=n_total, initial=step, desc=config.method, unit="step", leave=False,
               disable=quiet or not main or not sys.stderr.isatty())
    meter, t0 = Mean(carry.get("meter")), time.perf_counter() - carry.get("elapsed_s", 0.0)
    model.train()
    if dist.active and find_unused_parameters is None:
        trial = dist.shard(next(iterate_batches(tensors, config.batch_size)))[0]
        trial = model_inputs({k: v.to(device) for k, v in trial.items()})
        find_unused_parameters = dist.any(bool(unused_parameters(model, trial, logits_of)))
    net = dist.wrap(model, bool(find_unused_parameters))
    checked_labels, last_save = False, time.perf_counter()
    while step < stop:
        epoch, start = divmod(step, bpe)
        for batch in iterate_batches(tensors, config.batch_size, shuffle=True, seed=config.seed,
                                     epoch=epoch, start=start, group_by_length=config.group_by_length):
            sched_log = method.before_step(model, step)
            local, scale = dist.shard(batch)
            local = {k: v.to(device) for k, v in local.items()}
            inputs = model_inputs(local)
            logits = logits_of(net(**inputs))
            if not checked_labels:
                check_labels(tensors["labels"], logits.shape[-1])
                checked_labels = True
            t_logits = None
            if teacher is not None and config.alpha > 0:
                with torch.no_grad():
                    t_logits = logits_of(teacher(**inputs))
            parts = objective(logits, local["labels"], t_logits, config.alpha, config.kd_temperature)
            penalty, pen_log = method.penalty(model)
            loss = parts["task"] * scale if penalty is None else parts["task"] * scale + penalty
            # batch means over every rank (the loss of the global batch, as one process computes it)
            task, ce, kd = dist.sum(torch.stack([parts[k].detach().float() for k in ("task", "ce", "kd")])
                                    * (scale / dist.world)).tolist()
            total = task + (float(penalty.detach()) if penalty is not None else 0.0)
            if not math.isfinite(total):
                raise FloatingPointError(f"non-finite loss ({total}) at step {step + 1} (ce={ce}, kd={kd}"
                                         f"{', R=' + str(pen_log['R']) if 'R' in pen_log else ''}): lower "
                                         f"the learning rates{_last_good(ckpt)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = _grad_norm(params)
            if not torch.isfinite(norm):
                raise FloatingPointError(f"non-finite gradients at step {step + 1} in {_bad_grads(model)[:5]}; "
                                         f"the parameters were not updated{_last_good(ckpt)}")
            if config.max_grad_norm:
                _clip(params, config.max_grad_norm, norm)
            optimizer.step()
            scheduler.step()
            bad = non_finite_mask_params(owners)
            if bad:
                raise FloatingPointError(f"non-finite LEAP scores/thresholds {bad[:5]} after step {step + 1}: "
                                         f"lower mask_lr{_last_good(ckpt)}")
            step += 1
            bar.update(1)
            meter.add({"loss": total, "ce": ce, "kd": kd, **pen_log})
            if main and (step % config.log_every == 0 or step == n_total):
                rec = {"type": "train", "step": step, "epoch": step / bpe, **meter.pop(), **sched_log,
                       "lr": optimizer.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - t0}
                if len(optimizer.param_groups) > 1:
                    rec["mask_lr"] = optimizer.param_groups[1]["lr"]
                if method.uses_masks:
                    rec.update(density_by_kind(model, method.densities(model), kinds))
                history.add(rec)
                bar.set_postfix({k: round(rec[k], 4) for k in ("loss", "R", "density") if k in rec})
            if main and val_data is not None and (step % eval_every == 0 or step == n_total):
                history.add({"type": "eval", "step": step, "epoch": step / bpe,
                             **evaluate(model, val_data, config.eval_batch_size)})
                model.train()
            if ckpt and _checkpoint_due(step, n_total, ckpt_every, config.checkpoint_minutes, last_save, dist):
                last_save = time.perf_counter()
                rngs = dist.gather(rng_state())
                if main:
                    loop = {"meter": meter.state(), "elapsed_s": time.perf_counter() - t0, "world": dist.world}
                    extra = {"method": config.method, "train_config": config.to_dict(),
                             "leap_config": leap_config.to_dict() if leap_config is not None else None,
                             "method_state": method.state_dict(model), "loop": loop}
                    save_checkpoint(ckpt, model, optimizer, scheduler, step, extra, rng=rngs)
            if step >= stop:
                break
    bar.close()
    del net
    model.eval()
    if step < n_total:  # interrupted on purpose (stop_after): leave masks in place
        return TrainResult(model, history.records, {"step": step}, out_dir)
    metrics = {"step": step, "examples": num_examples(train_data)}
    if method.uses_masks:
        metrics.update(density_by_kind(model, method.densities(model), kinds))
        if config.fold:
            model = method.finish(model)
    if val_data is not None and main:
        metrics.update(evaluate(model, val_data, config.eval_batch_size))
    return TrainResult(model, history.records, metrics, out_dir)
