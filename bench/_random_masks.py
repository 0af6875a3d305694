"""Random head/neuron masks for bench/speedup.py, fitted so the stripped model hits a FLOPs budget.

Masks are applied through the library's carrier (``leap_fx.masks.zero_granules``) and FLOPs counted by
``passes.measure.count_flops`` (FlopCounterMode, eager attention, the Plan's blocks). ``fit_target``
draws heads per layer around the target (fixed seed) and solves the number of kept FFN neurons by
regula falsi on the measured FLOPs of the stripped model.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from leap_fx.masks.lifecycle import zero_granules
from passes.measure import count_flops
from passes.strip import strip

JITTER = 0.25  # per-layer spread of kept fractions around the target (LEAP masks are uneven)


def encoder_flops(model, plan, seq: int) -> int:
    """Encoder FLOPs at batch 1, sequence ``seq``."""
    ids = torch.ones(1, seq, dtype=torch.long)
    return count_flops(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, plan)["encoder"]


def _distribute(total: int, caps: list, weights: list) -> list:
    """Split ``total`` kept granules over families with ``caps`` proportionally to cap*weight
    (largest remainder, at least 1 and at most cap each)."""
    shares = np.array(caps, float) * np.array(weights, float)
    raw = total * shares / shares.sum()
    counts = np.clip(np.floor(raw).astype(int), 1, caps)
    order = np.argsort(-(raw - np.floor(raw)))
    i = 0
    while counts.sum() < total and i < 10 * len(caps):
        j = order[i % len(caps)]
        if counts[j] < caps[j]:
            counts[j] += 1
        i += 1
    return [int(c) for c in counts]


def slim_from_keep(dense, plan, keep: dict, example=None):
    """(masked copy, stripped copy) of ``dense`` keeping only the granules in ``keep``."""
    masked = zero_granules(copy.deepcopy(dense), plan, keep)
    slim = copy.deepcopy(masked)
    strip(slim, plan, example)
    return masked, slim


def fit_target(dense, plan, target: float, seq: int, dense_flops: int, seed: int, example=None):
    """Random masks whose slim model's measured encoder FLOPs hit ``target`` of the dense ones."""
    rng = np.random.default_rng(seed)
    attn, ffn = plan.attention(), plan.feed_forward()
    perm = {f.fqn: rng.permutation(f.granules) for f in plan.families.values()}
    heads = {f.fqn: int(np.clip(round(target * f.num_heads * (1 + rng.uniform(-JITTER, JITTER))),
                                1, f.num_heads)) for f in attn}
    weights = [1 + rng.uniform(-JITTER, JITTER) for _ in ffn]
    caps = [f.width for f in ffn]

    def build(total: int):
        counts = dict(heads, **dict(zip([f.fqn for f in ffn], _distribute(total, caps, weights))))
        keep = {fqn: sorted(int(i) for i in perm[fqn][:c]) for fqn, c in counts.items()}
        masked, slim = slim_from_keep(dense, plan, keep, example)
        return encoder_flops(slim, plan, seq) / dense_flops, keep, masked, slim

    lo, hi = len(ffn), sum(caps)
    f_lo, f_hi = build(lo)[0], build(hi)[0]
    if not f_lo <= target <= f_hi:
        raise ValueError(f"target {target} is outside [{f_lo:.3f}, {f_hi:.3f}] reachable with heads "
                         f"{list(heads.values())}; change --seed or the target")
    best = None
    for _ in range(20):
        n = int(np.clip(round(lo + (target - f_lo) * (hi - lo) / max(f_hi - f_lo, 1e-12)), lo, hi))
        frac, keep, masked, slim = result = build(n)
        if best is None or abs(frac - target) < abs(best[0] - target):
            best = result
        if abs(frac - target) < 5e-4 or hi - lo <= 1:
            break
        if frac < target:
            lo, f_lo = (n + 1, build(n + 1)[0]) if n == lo else (n, frac)
        else:
            hi, f_hi = (n - 1, build(n - 1)[0]) if n == hi else (n, frac)
    return best
