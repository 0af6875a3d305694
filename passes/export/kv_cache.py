"""A decoder-only causal LM as a function of flat tensors with a KV cache (what the ONNX graph computes).

Names follow optimum's convention: inputs ``input_ids``, ``attention_mask`` (``[batch, past + sequence]``),
``position_ids``, ``past_key_values.{i}.key`` / ``.value`` (``[batch, kv_heads_i, past, head_dim]``);
outputs ``logits`` and ``present.{i}.key`` / ``.value`` (``[batch, kv_heads_i, past + sequence,
head_dim]``). Each layer has its own kv-head count (a stripped model keeps different heads per layer),
read from the cache a real forward returns (``cache_layout``), never from the config (shared by all
layers, left unchanged by strip).

``DecoderWithCache`` rebuilds transformers' ``DynamicCache`` from the past tensors, runs the model
with ``use_cache=True`` and returns the logits and the grown cache as tensors. Traced, the cache is
plain ``Concat`` ops; prefill is the same graph with past length 0. Layers of another kind than full
attention (sliding windows, linear attention) are refused: their cache is not a growing tensor pair.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

INPUTS = ("input_ids", "attention_mask", "position_ids")


def past_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


@dataclass(frozen=True)
class CacheLayout:
    """Per layer: kv heads and the key / value head sizes; ``dtype`` of the cache."""

    kv_heads: tuple[int, ...]
    key_dims: tuple[int, ...]
    value_dims: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    @property
    def num_layers(self) -> int:
        return len(self.kv_heads)

    def empty(self, batch: int, past: int = 0, generator=None) -> list[torch.Tensor]:
        """Past tensors of ``past`` positions (zeros for 0, noise otherwise), flat (key, value per layer)."""
        out = []
        for h, dk, dv in zip(self.kv_heads, self.key_dims, self.value_dims):
            for d in (dk, dv):
                out.append(torch.randn(batch, h, past, d, generator=generator, dtype=self.dtype) if past
                           else torch.zeros(batch, h, 0, d, dtype=self.dtype))
        return out


def _cache_kwarg(model: nn.Module) -> str:
    """transformers 5 names the cache argument ``cache`` (``past_key_values`` before, still accepted)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out):
    return out["cache"] if "cache" in out else out["past_key_values"]


def _refuse_other_layers(model: nn.Module) -> None:
    types = getattr(model.config, "layer_types", None)  # HF config: per-layer attention kinds
    other = sorted({t for t in types or () if t != "full_attention"})
    if other:
        raise ValueError(f"{type(model).__name__} has {other} layers: the KV-cache export supports full-attention "
                         f"layers only (their cache is a growing key/value pair per layer)")


def run_with_cache(model: nn.Module, input_ids, attention_mask, position_ids, past: Sequence[torch.Tensor]):
    """``(logits, presents)``: one forward of ``model`` on a DynamicCache built from ``past`` (flat)."""
    from transformers.cache_utils import DynamicCache
    n = len(past) // 2
    cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(n)])
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                **{_cache_kwarg(model): cache})
    layers = _returned_cache(out).layers
    if len(layers) != n:
        raise ValueError(f"{type(model).__name__} returned a cache of {len(layers)} layers for {n} given")
    presents = [t for layer in layers for t in (layer.keys, layer.values)]
    return out["logits"], presents


class DecoderWithCache(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *presents)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        logits, presents = run_with_cache(self.model, input_ids, attention_mask, position_ids, past)
        # every input stays an input of the graph (optimum's signature), even when no layer reads it (a
        # model whose attention sub-layers were all removed): a zero contribution the exporter keeps
        unused = (position_ids[:, :1] + attention_mask[:, :1]).to(logits.dtype).unsqueeze(-1) * 0
        return (logits + unused, *presents)


@torch.no_grad()
def cache_layout(model: nn.Module) -> CacheLayout:
    """The cache shapes a forward of ``model`` returns (kv heads and head sizes per layer)."""
    _refuse_other_layers(model)
    from transformers.cache_utils import DynamicCache, DynamicLayer
    param = next(model.parameters())
    ids = torch.zeros(1, 2, dtype=torch.long, device=param.device)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                **{_cache_kwarg(model): DynamicCache()})
    layers = _returned_cache(out).layers
    bad = [type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer]
    if bad:
        raise ValueError(f"{type(model).__name__} caches {sorted(set(bad))} layers: the KV-cache export supports "
                         f"full-attention layers (DynamicLayer) only")
    return CacheLayout(tuple(int(layer.keys.shape[1]) for layer in layers),
                       tuple(int(layer.keys.shape[-1]) for layer in layers),
                       tuple(int(layer.values.shape[-1]) for layer in layers), param.dtype)


def positions(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """Position ids of the last ``length`` tokens: the count of real tokens before each (left padding
    gets position 0), as HF's ``generate`` computes them."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)[:, -length:]
