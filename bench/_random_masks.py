"""Random head/neuron masks for bench/speedup.py, fitted so the stripped model hits a FLOPs budget.

``encoder_flops`` measures with ``torch.utils.flop_counter.FlopCounterMode`` (eager attention);
``apply_masks`` zeroes dropped heads/neurons through a Plan's slices; ``fit_target`` draws heads per
layer around the target (fixed seed) and solves the number of kept FFN neurons by regula falsi.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

JITTER = 0.25  # per-layer spread of kept fractions around the target (LEAP masks are uneven)


def encoder_flops(model, seq: int) -> int:
    """Encoder FLOPs at batch 1 measured by ``FlopCounterMode`` (eager attention: its matmuls count)."""
    from torch.utils.flop_counter import FlopCounterMode
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        x = torch.zeros(1, seq, model.config.hidden_size)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.get_submodule("encoder")(x)
    finally:
        model.set_attn_implementation(previous)
    return int(counter.get_total_flops())


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# -- masks -------------------------------------------------------------------------------------
def _kv_granule(fam, role: str, g: int) -> int:
    """Index of head ``g``'s granule in slice ``role`` (k/v are shared under grouped-query attention)."""
    if role in ("k", "v") and fam.num_kv_heads != fam.num_heads:
        return g // (fam.num_heads // fam.num_kv_heads)
    return g


def apply_masks(model, plan, keep: dict) -> None:
    """Zero every dropped granule: q/k/v rows (+bias) and out columns of a head; up/gate rows
    (+bias) and down columns of a neuron. ``keep`` maps family FQN -> kept granule indices."""
    with torch.no_grad():
        for fqn, fam in plan.families.items():
            kept = set(int(i) for i in keep[fqn])
            for s in fam.slices:
                grans = fam.num_kv_heads if (fam.kind == "attention" and s.role in ("k", "v")) \
                    else fam.granules
                unit = s.size // grans
                alive = {_kv_granule(fam, s.role, g) for g in kept} if fam.kind == "attention" else kept
                weight = model.get_parameter(s.weight_name)
                bias = model.get_parameter(f"{s.fqn}.{s.bias}" if s.fqn else s.bias) if s.bias else None
                for g in range(grans):
                    if g in alive:
                        continue
                    weight.narrow(s.axis, s.start + g * unit, unit).zero_()
                    if bias is not None:
                        bias.narrow(0, s.start + g * unit, unit).zero_()


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


def slim_from_keep(dense, plan, strip, keep: dict):
    """(masked copy, stripped copy) of ``dense`` keeping only the granules in ``keep``."""
    masked = copy.deepcopy(dense)
    apply_masks(masked, plan, keep)
    return masked, strip(copy.deepcopy(masked), plan)


def fit_target(dense, plan, strip, target: float, seq: int, dense_flops: int, seed: int):
    """Random masks whose slim model's measured encoder FLOPs hit ``target`` of the dense ones.

    Heads per layer are drawn around ``target`` (fixed seed); the total number of kept FFN neurons
    is then solved by regula falsi on the FLOP counter's measurement of the stripped model.
    """
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
        masked, slim = slim_from_keep(dense, plan, strip, keep)
        return encoder_flops(slim, seq) / dense_flops, keep, masked, slim

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
