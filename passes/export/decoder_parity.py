"""Parity of a KV-cache decoder graph: a prefill and ``steps`` decoding steps, onnxruntime vs PyTorch.

Batch ``batch`` (default 2) of random ids, the first row left-padded by ``pad`` tokens (so the mask and
position ids are exercised), prefill with an empty cache, then ``steps`` greedy steps: the next token is
PyTorch's argmax, fed to both sides, and each side feeds back its *own* cache (onnxruntime its
``present.*`` outputs, PyTorch its DynamicCache tensors), so a cache that drifts shows in the next
step's logits. Per call: ``max_abs_diff`` is the max |ORT - PyTorch| over the logits of real (unpadded)
positions, ``max_rel_diff`` the same over ``max(1, largest |logit|)``; the cache, at real positions too,
is compared relative to each tensor's largest value (``cache_max_rel_diff``). The bound ``atol`` applies
to both relative diffs: float32 rounding grows with a value's size (SmolLM2-135M: cache values up to 18
differ by 3e-4 between onnxruntime and PyTorch, and by as much between PyTorch float32 and float64; its
logits, up to ~30 on a pruned model, by up to 8e-4), and below 1 the bound is absolute. A NaN on one side
only is an infinite diff.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from passes.export.kv_cache import (
    INPUTS,
    CacheLayout,
    past_names,
    positions,
    run_with_cache,
)


def _diff(ref: torch.Tensor, got: np.ndarray, keep: Optional[np.ndarray] = None) -> float:
    a = ref.detach().float().numpy()
    if a.shape != got.shape:
        return float("inf")
    d = np.abs(a - got)
    both_nan = np.isnan(a) & np.isnan(got)
    d = np.where(both_nan, 0.0, d)
    d = np.where(np.isnan(d), np.inf, d)
    if keep is not None:
        d = d[keep]
    return float(d.max()) if d.size else 0.0


def _compare(logits, presents, got, mask: np.ndarray) -> tuple[float, float, float, float]:
    """(logits max abs diff, cache max abs diff, cache max diff relative to each tensor's max |value|, logits max
    abs diff relative to their max |value|), over
    real positions only (``mask`` ``[B, total]``: a padded position's cache entry is never read, and the
    exporters differ on what a fully masked query computes)."""
    cache_abs, cache_rel = 0.0, 0.0
    real = mask.astype(bool)[:, None, :, None]
    for ref, out in zip(presents, got[1:]):
        ok = out.ndim == 4 and out.shape[0] == real.shape[0] and out.shape[2] == real.shape[2]
        d = _diff(ref, out, np.broadcast_to(real, out.shape) if ok else None)
        cache_abs = max(cache_abs, d)
        cache_rel = max(cache_rel, d / max(1.0, float(ref.abs().max())) if ref.numel() else 0.0)
    real_rows = mask[:, -got[0].shape[1]:].astype(bool)
    logit_abs = _diff(logits, got[0], real_rows)
    scale = float(logits[torch.from_numpy(real_rows)].abs().max()) if real_rows.any() else 0.0
    return logit_abs, cache_abs, cache_rel, logit_abs / max(1.0, scale)


@torch.no_grad()
def decode_parity(model: nn.Module, session, layout: CacheLayout, *, vocab_size: int, batch: int = 2,
                  prompt: int = 7, steps: int = 8, pad: int = 2, seed: int = 0) -> dict:
    """``{"prefill", "steps": [...], "max_abs_diff", "max_rel_diff"}`` (logits) and ``cache_max_abs_diff`` /
    ``cache_max_rel_diff`` over every call (see module doc)."""
    g = torch.Generator().manual_seed(seed)
    lo = 4 if vocab_size > 8 else 0
    ids = torch.randint(lo, vocab_size, (batch, prompt), generator=g)
    mask = torch.ones(batch, prompt, dtype=torch.long)
    if batch > 1 and 0 < pad < prompt:
        mask[0, :pad] = 0
    past = layout.empty(batch)
    ort_past = [t.numpy() for t in past]
    names = list(INPUTS) + past_names(layout.num_layers)
    diffs = []
    for step in range(steps + 1):
        pos = positions(mask, ids.shape[1])
        logits, presents = run_with_cache(model, ids, mask, pos, past)
        got = session.run(None, dict(zip(names, [ids.numpy(), mask.numpy(), pos.numpy(), *ort_past])))
        diffs.append(_compare(logits, presents, got, mask.numpy()))
        past, ort_past = presents, got[1:]
        ids = logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.long)], dim=1)
    logit = [d[0] for d in diffs]
    return {"prefill": logit[0], "steps": logit[1:], "max_abs_diff": max(logit), "max_rel_diff": max(d[3] for d in diffs),
            "cache_max_abs_diff": max(d[1] for d in diffs), "cache_max_rel_diff": max(d[2] for d in diffs),
            "batch": batch, "prompt": prompt, "left_padding": pad if batch > 1 else 0}
