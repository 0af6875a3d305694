"""Perplexity on packed blocks: ``exp`` of the mean next-token negative log-likelihood over all blocks.

Every block ``[block_size]`` scores its ``block_size - 1`` next tokens (as HF's ``loss`` with
``labels = input_ids`` does for one block), summed in float64 over blocks; ``perplexity`` is
``exp(nll / tokens)``. ``perplexity_torch`` runs an HF causal LM; ``perplexity_onnx`` runs the
KV-cache graph in onnxruntime (empty cache, numpy only), so the slim model is scored as it is served.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from leap_fx.tasks.causal_lm.onnx_lm import OnnxLM


def _result(nll: float, tokens: int, blocks: int) -> dict:
    mean = nll / max(1, tokens)
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": tokens, "blocks": blocks}


@torch.no_grad()
def perplexity_torch(model, blocks: torch.Tensor, batch_size: int = 8) -> dict:
    """``{"perplexity", "nll", "tokens", "blocks"}`` of ``model`` (HF causal LM) on ``blocks`` ``[n, L]``."""
    if blocks.dim() != 2 or blocks.shape[1] < 2 or blocks.shape[0] == 0:
        raise ValueError(f"blocks must be [n >= 1, block_size >= 2] token ids, got {tuple(blocks.shape)}")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, tokens = 0.0, 0
    try:
        for chunk in blocks.split(batch_size):
            chunk = chunk.to(device)
            logits = model(input_ids=chunk, use_cache=False).logits[:, :-1].float()
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                                   reduction="sum")
            nll += float(ce.double())
            tokens += chunk[:, 1:].numel()
    finally:
        model.train(was)
    return _result(nll, tokens, int(blocks.shape[0]))


def _log_softmax_at(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``log softmax(logits)[target]`` per row, float64 accumulation, one row block at a time."""
    top = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(-1, dtype=np.float64)) + top[..., 0]
    return np.take_along_axis(logits, target[..., None], -1)[..., 0] - lse


def perplexity_onnx(lm, blocks, batch_size: int = 1, threads: Optional[int] = None) -> dict:
    """The same measure from a KV-cache ONNX graph (an ``OnnxLM`` or a path) in onnxruntime."""
    lm = lm if isinstance(lm, OnnxLM) else OnnxLM(str(lm), threads=threads)
    blocks = np.asarray(blocks.numpy() if hasattr(blocks, "numpy") else blocks, dtype=np.int64)
    if blocks.ndim != 2 or blocks.shape[1] < 2 or blocks.shape[0] == 0:
        raise ValueError(f"blocks must be [n >= 1, block_size >= 2] token ids, got {blocks.shape}")
    nll, tokens = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start:start + batch_size]
        logits, _ = lm.forward(chunk, np.ones_like(chunk), lm.empty_past(len(chunk)))
        nll -= float(_log_softmax_at(logits[:, :-1], chunk[:, 1:]).sum())
        tokens += chunk[:, 1:].size
    return _result(nll, tokens, len(blocks))
