"""LEAP (Yao, Wu et al., *LEAP: Learnable Pruning for Transformer-based Models*): learnable thresholds.

Every masked matrix (or tied family) gets scores S and one threshold sigma; its kept fraction is
``k = sigmoid(sigma / T)`` (Eq. 4) and the mask keeps the Top-k of S (Eq. 3), straight-through
(``masks.topk.LeapScores``). The objective is ``(1 - alpha) CE + alpha KD + lambda L_reg`` (Eq. 8, the
regulariser of Eq. 5 and 7 in ``leap_regularizer.py``).

Short runs. The paper's runs are ~10^5 steps; the job's are ~200 (quick) to ~640 (full). So the
sigma learning rate is scaled to the run (``auto_mask_lr``), and the job sets, unless told otherwise
(``LeapConfig.job``), measured on MiniLM-L6 / Rotten Tomatoes (quick, target 0.3), and, so the main job's
ONNX is really smaller and faster, ``granularity="structured"`` at ``target="flops:0.5"`` (whole heads
and neurons, half the encoder FLOPs; a density target with another granularity falls back to density:0.3):

- ``mask_lr_scale`` 0.3: sigma's Adam step grows as k'(sigma) rises along the sigmoid, so the auto LR
  sized for steady travel (10.2 for 200 steps) prunes 70 % within ~12 steps, before S has learned
  anything: test accuracy fell to the majority rate (0.585). 0.3 x auto (3.0) prunes over ~100 steps.
- ``lambda_min`` 80 (Eq. 7): near the target lambda sits at lambda_min and sigma's task gradient wins,
  so R stalled at 0.43 (lambda_min 10) / 0.333 (40); 80 reaches 0.302 (test acc 0.643, dense 0.758).
- ``score_init="magnitude"``: S starts from a |W| prior instead of zeros (paper); with zero S the first
  Top-K masks are arbitrary and 200 steps cannot recover: quick hybrid 0.3 test accuracy 0.585
  (= majority) with zero S, 0.715 with the prior (dense 0.7575).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from leap_fx.masks.lifecycle import magnitudes, owners
from leap_fx.masks.topk import LeapScores
from leap_fx.methods.base import PAPER_MASK_LR, LossTerms, TrainedMethod
from leap_fx.methods.leap.config import LeapConfig
from leap_fx.methods.leap.regularizer import LeapRegularizer
from leap_fx.methods.registry import register

__all__ = ["Leap", "auto_mask_lr", "split_sigma_group", "warm_start_scores", "SCORE_PRIOR_STEPS"]

SCORE_PRIOR_STEPS = 20.0  # score_init="magnitude": the prior is worth this many S steps


def auto_mask_lr(config: LeapConfig, total_steps: int, warmup_ratio: float = 0.1) -> float:
    """A sigma learning rate that lets sigma reach the target within ~60% of the run.

    Adam moves sigma by about ``lr x (LR multiplier)`` per step when the regulariser dominates, so the
    distance from ``sigma_0`` (5T, App. A) to ``T logit(R_target)`` needs ``lr ~ delta sigma / area``,
    ``area`` being the sum of warmup+linear-decay multipliers up to 60% of the steps. The paper's
    1e-2 suits its ~10^5-step runs; short runs need more (S is unaffected: zero-initialised Top-K
    ranking is invariant to its learning rate). Never below 1e-2. The factor 4.5 was tuned on tiny
    BERTs (120 and 640 steps, T=32, R_target=0.3, sigma without momentum): R ends within one granule
    of the target in both.
    """
    r = min(max(config.goal.value, 1e-6), 1 - 1e-6)  # k ends near the target in any unit
    t = config.temperature
    travel = config.sigma0 - t * math.log(r / (1 - r))
    w, x = min(max(warmup_ratio, 0.0), 0.5), 0.6  # a warmup over half the run is clamped
    area = w / 2 + ((1 - w) ** 2 - (1 - x) ** 2) / (2 * (1 - w))  # integral of the multiplier over [0, 0.6]
    return max(PAPER_MASK_LR, 4.5 * travel / (area * max(1, total_steps)))


def split_sigma_group(groups: list[dict], model: nn.Module, sigma_beta1: float) -> list[dict]:
    """Move the thresholds sigma out of the "masks" group into their own with Adam ``beta1 = sigma_beta1``.

    With momentum (0.9) sigma runs past the target once L_reg (Eq. 5) switches off below it, by about
    ten steps' worth of sigma learning rate; without momentum it settles at the target."""
    sigmas = {id(o.sigma) for o in owners(model).values() if isinstance(o, LeapScores)}
    out = []
    for g in groups:
        sig = [p for p in g["params"] if id(p) in sigmas]
        out.append({**g, "params": [p for p in g["params"] if id(p) not in sigmas]})
        if sig:
            out.append({**g, "params": sig, "name": "sigma", "betas": (sigma_beta1, 0.999)})
    return out


@torch.no_grad()
def warm_start_scores(model: nn.Module, mask_lr: float, prior_steps: float = SCORE_PRIOR_STEPS) -> dict:
    """Start S from a magnitude prior: ``S_g = prior_steps * mask_lr * m_g / mean(m)``, ``m_g = sum |W|``
    over granule g (all tied members). The prior is worth ``prior_steps`` consistent Adam steps of S,
    so movement (dL/dS = dL/dW' W) overrides it where the gradients agree. Returns ``{owner: mean m}``."""
    means = {}
    own = owners(model)
    for key, m in magnitudes(model).items():
        m = m.to(own[key].scores.dtype)
        means[key] = float(m.mean())
        own[key].scores.copy_(prior_steps * mask_lr * m / m.mean().clamp_min(1e-12))
    return means


@register(LeapConfig)
class Leap(TrainedMethod):
    """LEAP: learnable S and sigma, adaptive lambda L_reg (Eq. 5-8)."""

    log_keys = ("R", "L_reg", "lambda")
    progress_keys = ("R",)

    def make_owner(self, shape, key, device=None) -> LeapScores:
        c = self.config
        return LeapScores(shape, c.temperature, c.sigma0, c.sigma_grad, key=key, device=device)

    def prepare(self, model, plan):
        super().prepare(model, plan)
        if self.config.score_init == "magnitude":
            warm_start_scores(model, self.mask_lr())  # a resumed run then loads its checkpoint's S
        self.regularizer = LeapRegularizer.from_config(model, self.config, plan)

    def mask_lr(self) -> float:
        if self.config.mask_lr is not None:
            return float(self.config.mask_lr)
        return self.config.mask_lr_scale * auto_mask_lr(self.config, self.total_steps, self.train_config.warmup_ratio)

    def param_groups(self, model, lr, weight_decay=0.0):
        return split_sigma_group(super().param_groups(model, lr, weight_decay), model, self.config.sigma_beta1)

    def loss_terms(self, out, teacher_out, batch, step) -> LossTerms:
        terms = super().loss_terms(out, teacher_out, batch, step)
        reg = self.regularizer
        terms.penalty = reg()
        terms.values.update({"R": reg.R, "L_reg": reg.L_reg, "lambda": reg.lam})
        return terms
