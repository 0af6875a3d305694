"""Calibration batches for Kwon et al.: inputs of a batch, its size, and length-sorted re-batching.

The job hands a one-shot method batches in data order, each trimmed to its longest row; a batch of
32 reviews is then about twice as wide as its mean review. The Fisher pass and mask tuning only need
the examples, not their grouping, so ``by_length`` re-groups them by length (right-padded rows of a
2-D attention mask only) and each forward computes little padding. A forward holds at most ``size``
examples and ``tokens`` tokens (``FORWARD_TOKENS``): what a backward keeps grows with tokens, not examples
(a language model's 256-token blocks with a 49k vocabulary: 32 blocks per forward peaked at 16 GiB).
"""
from __future__ import annotations

from typing import Iterable

import torch

from leap_fx.data.batches import trim

FORWARD_TOKENS = 2048  # tokens (padding included) per re-grouped forward


def batch_size(batch: dict) -> int:
    return int(next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0])


def split(batch: dict, micro: int) -> Iterable[dict]:
    """Micro-batches of ``micro`` examples, each trimmed to its longest row."""
    n = batch_size(batch)
    for i in range(0, n, micro):
        yield trim({k: v[i:i + micro] for k, v in batch.items()})


def first_examples(batches: list[dict], n: int) -> list[dict]:
    """The first ``n`` examples of ``batches`` (the last batch cut)."""
    out, left = [], n
    for b in batches:
        if left <= 0:
            break
        size = batch_size(b)
        out.append(b if size <= left else trim({k: v[:left] for k, v in b.items()}))
        left -= size
    return out


def _right_padded(batch: dict) -> bool:
    mask = batch.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return False
    lengths = mask.sum(1, keepdim=True)
    return bool((mask.bool() == (torch.arange(mask.shape[1]) < lengths)).all())


def by_length(batches: list[dict], size: int, tokens: int = FORWARD_TOKENS) -> tuple[list[dict], torch.Tensor]:
    """``(batches, order)``: the same examples sorted by length (shortest first) in batches of at most ``size``
    examples and ``tokens`` tokens (one example alone may be longer), each trimmed, and the index of each
    new row among the original examples. The batches stay as they
    are (``order`` = identity) unless every one has a right-padded 2-D attention mask and only
    per-token (``[B, S]``) or per-example (``[B]``, ``[B, k]`` of another width) tensors."""
    same = (batches, torch.arange(sum(batch_size(b) for b in batches)))
    if not batches or not all(_right_padded(b) for b in batches):
        return same
    keys = list(batches[0])
    if any(list(b) != keys or any(v.dim() not in (1, 2) for v in b.values()) for b in batches):
        return same
    width = max(int(b["attention_mask"].shape[1]) for b in batches)
    pads = {k: _pad_value(batches, k) for k in keys}
    full = {k: torch.cat([_widen(b[k], width, pads[k], b["attention_mask"].shape[1]) for b in batches]) for k in keys}
    lengths = full["attention_mask"].sum(1)
    order = torch.argsort(lengths, stable=True)
    return [trim({k: v[idx] for k, v in full.items()}) for idx in _chunks(order, lengths, size, tokens)], order


def _chunks(order: torch.Tensor, lengths: torch.Tensor, size: int, tokens: int) -> list[torch.Tensor]:
    """``order`` (ascending lengths) cut greedily: a chunk grows while it has at most ``size`` rows and its
    rows times its longest length stay within ``tokens``."""
    out, start = [], 0
    for i in range(len(order)):
        rows, longest = i - start + 1, max(1, int(lengths[order[i]]))
        if rows > 1 and (rows > size or rows * longest > tokens):
            out.append(order[start:i])
            start = i
    return out + [order[start:]] if len(order) else out


def _pad_value(batches: list[dict], key: str):
    """A value the data itself uses at padded positions of ``key`` (0 when nothing is padded)."""
    for b in batches:
        pad = b["attention_mask"] == 0
        if b[key].shape == pad.shape and bool(pad.any()):
            return b[key][pad][0].item()
    return 0


def _widen(t: torch.Tensor, width: int, pad, tokens: int) -> torch.Tensor:
    """A per-token ``[B, tokens]`` tensor right-padded to ``width``; anything else (``[B]``, ``[B, 2]``
    span labels) as it is."""
    if t.dim() != 2 or t.shape[1] != tokens or t.shape[1] == width:
        return t
    return torch.cat([t, t.new_full((t.shape[0], width - t.shape[1]), pad)], 1)
