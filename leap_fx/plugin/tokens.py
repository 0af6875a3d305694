"""Tokens per example, the length a FLOPs or latency target is counted at (``cost_seq``), from example
inputs: the width of ``input_ids`` (text), else the rows the first attention / feed-forward output op
sees per example (patches + class token for a ViT, frames for audio), measured on one forward."""
from __future__ import annotations

from leap_fx.methods.kwon.handler import rows_per_example

__all__ = ["tokens_per_example"]


def tokens_per_example(model, plan, example: dict) -> int:
    ids = example.get("input_ids")
    if ids is not None and ids.dim() == 2:
        return int(ids.shape[1])
    return max(1, round(rows_per_example(model, plan, example)))
