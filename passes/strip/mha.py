"""A head-prunable stand-in for ``nn.MultiheadAttention`` with the same forward contract.

``nn.MultiheadAttention`` ties ``embed_dim`` (the residual width) to the q/k/v width, so heads
cannot be removed from it. :class:`SlimMultiheadAttention` keeps the same parameter names
(``in_proj_weight`` ``[3 * heads * head_dim, embed_dim]``, ``in_proj_bias``, ``out_proj``), so a
Plan traced on the dense model still addresses it, and the same call signature
(``query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
is_causal``) returning ``(output, None)``: attention weights are never materialised, so
``need_weights=True`` still returns None (nn.TransformerEncoderLayer asks for none). Per-head
3-D ``attn_mask`` ``[B * original_heads, L, S]`` is sliced to the kept heads. It sets ``_qkv_same_embed_dim = False`` so
``nn.TransformerEncoder`` takes its regular (non fast-path, non nested-tensor) route.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class SlimMultiheadAttention(nn.Module):
    """Self/cross attention with ``num_heads * head_dim`` independent of ``embed_dim``."""

    _qkv_same_embed_dim = False  # keeps nn.TransformerEncoder(Layer) off its fused fast path

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, *, batch_first: bool = False,
                 dropout: float = 0.0, bias: bool = True, out_bias: bool = True,
                 kept_heads: Optional[list[int]] = None, orig_heads: Optional[int] = None):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.batch_first, self.dropout = batch_first, dropout
        self.kept_heads = list(range(num_heads)) if kept_heads is None else list(kept_heads)
        self.orig_heads = num_heads if orig_heads is None else orig_heads
        width = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width)) if bias else None
        self.out_proj = nn.Linear(width, embed_dim, bias=out_bias)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> "SlimMultiheadAttention":
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("only nn.MultiheadAttention with kdim == vdim == embed_dim, no "
                             "add_bias_kv and no add_zero_attn can be head-stripped")
        new = cls(mha.embed_dim, mha.num_heads, mha.head_dim, batch_first=mha.batch_first,
                  dropout=mha.dropout, bias=mha.in_proj_bias is not None,
                  out_bias=mha.out_proj.bias is not None)
        w = mha.in_proj_weight
        new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.in_proj_weight.copy_(w)
            if mha.in_proj_bias is not None:
                new.in_proj_bias.copy_(mha.in_proj_bias)
            new.out_proj.load_state_dict(mha.out_proj.state_dict())
        return new.train(mha.training)

    def spec(self) -> dict:
        """JSON-able constructor arguments (``passes.export.slim_io`` rebuilds from this)."""
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "head_dim": self.head_dim,
                "batch_first": self.batch_first, "dropout": self.dropout,
                "bias": self.in_proj_bias is not None, "out_bias": self.out_proj.bias is not None,
                "kept_heads": self.kept_heads, "orig_heads": self.orig_heads}

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}"

    # -- forward ------------------------------------------------------------------------------
    def _mask(self, attn_mask, key_padding_mask, batch: int, q_len: int, k_len: int, dtype):
        """Merge ``attn_mask`` (L,S) / (B*orig_heads, L, S) and ``key_padding_mask`` (B,S) into
        one additive float mask (True = masked, as in nn.MultiheadAttention)."""
        def additive(m):
            if m.dtype == torch.bool:
                return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
            return m.to(dtype)
        mask = None
        if attn_mask is not None:
            mask = additive(attn_mask)
            if mask.dim() == 3:  # per-head masks address the heads that were there originally
                mask = mask.view(batch, self.orig_heads, q_len, k_len)[:, self.kept_heads]
        if key_padding_mask is not None:
            kpm = additive(key_padding_mask).view(batch, 1, 1, k_len)
            mask = kpm if mask is None else mask + kpm
        return mask

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        batched = query.dim() == 3
        if not batched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first or not batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, lq, _ = query.shape
        lk = key.shape[1]
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        q = F.linear(query, w_q, b_q).view(b, lq, -1, self.head_dim).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(b, lk, -1, self.head_dim).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, lk, -1, self.head_dim).transpose(1, 2)
        mask = self._mask(attn_mask, key_padding_mask, b, lq, lk, q.dtype)
        causal = bool(is_causal) and mask is None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, -1))
        if not self.batch_first or not batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        return out, None


def replace_mha(model: nn.Module, fam) -> Optional[str]:
    """Swap an ``nn.MultiheadAttention`` owning the family for :class:`SlimMultiheadAttention`."""
    mod = model.get_submodule(fam.q.fqn)
    if not isinstance(mod, nn.MultiheadAttention):
        return None
    slim = SlimMultiheadAttention.from_mha(mod)
    parent, _, name = fam.q.fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, slim)
    return fam.q.fqn


def keep_heads(model: nn.Module, fam, kept: list[int]) -> None:
    """After removal: a SlimMultiheadAttention remembers which original heads it kept (3-D masks)."""
    mod = model.get_submodule(fam.q.fqn)
    if isinstance(mod, SlimMultiheadAttention):
        mod.kept_heads = [mod.kept_heads[i] for i in kept]
