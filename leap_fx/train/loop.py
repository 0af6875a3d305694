"""The plain-PyTorch training loop for LEAP (paper Eq. 8) and its baselines.

``loss = (1 - α)·CE + α·KD(teacher, τ) + λ·L_reg`` (LEAP; the baselines have no L_reg, dense has no KD
when no teacher is given). AdamW with separate learning rates for weights and S/σ (App. A), linear
warmup then linear decay, fixed seed, JSONL history, periodic validation, atomic checkpoints that a
re-run with the same ``out_dir`` resumes from exactly (batch order is a function of seed and epoch).
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

from ..data.batches import batches_per_epoch, iterate_batches, num_examples
from .distill import objective
from .evaluate import logits_of, model_inputs, predict_logits
from .methods import make_method
from .schedules import lr_scheduler
from .state import CHECKPOINT, History, TrainConfig, load_checkpoint, save_checkpoint


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


def weight_kinds(plan, names) -> dict[str, str]:
    """weight name -> family kind (``attention`` / ``ffn``; ``other`` outside any family)."""
    if plan is None:
        return {}
    out = {}
    for n in names:
        fam = plan.family_of(n)
        out[n] = fam.kind if fam is not None else "other"
    return out


def density_by_kind(model: nn.Module, dens: dict[str, float], kinds: dict[str, str]) -> dict[str, float]:
    """Element-weighted measured density overall (``density``) and per family kind (``density_<kind>``)."""
    sums: dict[str, list[float]] = {}
    for name, d in dens.items():
        fqn, _, pname = name.rpartition(".")
        mod = model.get_submodule(fqn)
        n = mod.parametrizations[pname].original.numel() if hasattr(mod, "parametrizations") \
            else getattr(mod, pname).numel()
        for key in ("density", f"density_{kinds[name]}" if name in kinds else None):
            if key:
                acc = sums.setdefault(key, [0.0, 0.0])
                acc[0] += d * n
                acc[1] += n
    return {k: v[0] / v[1] for k, v in sums.items() if v[1]}


def evaluate(model: nn.Module, data, batch_size: int = 128) -> dict[str, float]:
    """Validation accuracy and cross-entropy."""
    from ..data.batches import as_tensors
    labels = as_tensors(data)["labels"]
    logits = predict_logits(model, data, batch_size)
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


_NOT_SCHEDULE = ("log_every", "eval_every", "checkpoint_every", "eval_batch_size", "fold")


def _check_same_run(saved: Optional[dict], config: TrainConfig, path: str) -> None:
    """Refuse to resume a checkpoint written with other training hyperparameters."""
    if saved is None:
        return
    now = config.to_dict()
    diff = sorted(k for k in now if k not in _NOT_SCHEDULE and saved.get(k) != now[k])
    if diff:
        raise ValueError(f"checkpoint {path} was written with other settings ({', '.join(diff)}); "
                         f"use another out_dir, or resume=False to start over")


class _Mean:
    def __init__(self):
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, values: dict) -> None:
        self.n += 1
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def pop(self) -> dict:
        out = {k: v / max(1, self.n) for k, v in self.sums.items()}
        self.sums, self.n = {}, 0
        return out


def train(model: nn.Module, teacher: Optional[nn.Module], train_data, val_data=None,
          config: Optional[TrainConfig] = None, leap_config=None, plan=None, out_dir: Optional[str] = None,
          resume: bool = True, quiet: bool = False, stop_after: Optional[int] = None) -> TrainResult:
    """Train ``model`` in place with ``config.method`` and return it (folded unless ``config.fold=False``).

    Args:
        teacher: dense fine-tuned model for KD (None: CE only).
        train_data / val_data: tokenised ``TextSplit`` or dict of tensors with ``labels``.
        leap_config: target density and granularity (methods leap/movement/magnitude).
        plan: family Plan; computed with ``leap_fx.analyze`` when None and masks are used.
        out_dir: history.jsonl, checkpoint.pt and configs go here; a re-run resumes from checkpoint.pt.
        stop_after: stop (without finishing) after this many global steps, as if interrupted.
    """
    config = config or TrainConfig()
    n_total = total_steps(config, train_data)
    bpe = batches_per_epoch(train_data, config.batch_size)
    torch.manual_seed(config.seed)
    method = make_method(config, leap_config, None, n_total)
    if method.uses_masks and plan is None:
        plan = _auto_plan(model, train_data, leap_config)
    method.plan = plan
    method.setup(model)
    optimizer = torch.optim.AdamW(method.param_groups(model), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = lr_scheduler(optimizer, int(config.warmup_ratio * n_total), n_total)
    kinds = weight_kinds(plan, method.densities(model)) if method.uses_masks else {}

    history, step, ckpt = History(out_dir), 0, None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        ckpt = os.path.join(out_dir, CHECKPOINT)
        config.to_json(os.path.join(out_dir, "train_config.json"))
        if leap_config is not None:
            leap_config.to_json(os.path.join(out_dir, "leap_config.json"))
        if resume and os.path.exists(ckpt):
            state = load_checkpoint(ckpt, model, optimizer, scheduler)
            _check_same_run(state.get("extra", {}).get("train_config"), config, ckpt)
            step = state["step"]
            history.resume(step)
        else:
            history.reset()
    if teacher is not None:
        teacher.eval()
    eval_every = config.eval_every or bpe
    ckpt_every = config.checkpoint_every or bpe
    stop = min(n_total, stop_after) if stop_after else n_total

    from tqdm.auto import tqdm
    bar = tqdm(total=n_total, initial=step, desc=config.method, unit="step", leave=False,
               disable=quiet or not sys.stderr.isatty())
    meter, t0 = _Mean(), time.perf_counter()
    model.train()
    while step < stop:
        epoch, start = divmod(step, bpe)
        for batch in iterate_batches(train_data, config.batch_size, shuffle=True, seed=config.seed,
                                     epoch=epoch, start=start, group_by_length=config.group_by_length):
            sched_log = method.before_step(model, step)
            inputs = model_inputs(batch)
            logits = logits_of(model(**inputs))
            t_logits = None
            if teacher is not None and config.alpha > 0:
                with torch.no_grad():
                    t_logits = logits_of(teacher(**inputs))
            parts = objective(logits, batch["labels"], t_logits, config.alpha, config.kd_temperature)
            penalty, pen_log = method.penalty(model)
            loss = parts["task"] if penalty is None else parts["task"] + penalty
            if not torch.isfinite(loss):
                last = f"; last good checkpoint: {ckpt}" if ckpt and os.path.exists(ckpt) else ""
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at step {step + 1} "
                                         f"(ce={parts['ce'].item()}, kd={parts['kd'].item()}){last}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]], config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            meter.add({"loss": loss.item(), "ce": parts["ce"].item(), "kd": parts["kd"].item(), **pen_log})
            if step % config.log_every == 0 or step == n_total:
                rec = {"type": "train", "step": step, "epoch": step / bpe, **meter.pop(), **sched_log,
                       "lr": optimizer.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - t0}
                if len(optimizer.param_groups) > 1:
                    rec["mask_lr"] = optimizer.param_groups[1]["lr"]
                if method.uses_masks:
                    rec.update(density_by_kind(model, method.densities(model), kinds))
                history.add(rec)
                bar.set_postfix({k: round(rec[k], 4) for k in ("loss", "R", "density") if k in rec})
            if val_data is not None and (step % eval_every == 0 or step == n_total):
                history.add({"type": "eval", "step": step, "epoch": step / bpe,
                             **evaluate(model, val_data, config.eval_batch_size)})
                model.train()
            if ckpt and (step % ckpt_every == 0 or step == n_total):
                save_checkpoint(ckpt, model, optimizer, scheduler, step,
                                {"method": config.method, "train_config": config.to_dict()})
            if step >= stop:
                break
    bar.close()
    model.eval()
    if step < n_total:  # interrupted on purpose (stop_after): leave masks in place
        return TrainResult(model, history.records, {"step": step}, out_dir)
    metrics = {"step": step, "examples": num_examples(train_data)}
    if method.uses_masks:
        metrics.update(density_by_kind(model, method.densities(model), kinds))
        if config.fold:
            model = method.finish(model)
    if val_data is not None:
        metrics.update(evaluate(model, val_data, config.eval_batch_size))
    return TrainResult(model, history.records, metrics, out_dir)
