"""The aten op vocabulary the matchers read: an op's name (``op_name``), a node's traced shape, and the op
classes (layout ops that only move channels, identity and pointwise ops, attention, softmax, matmul)."""
from __future__ import annotations

import operator
from typing import Any, Optional

import torch
from torch.fx import Node

__all__ = ["ATTENTION_OPS", "IDENTITY_OPS", "LAYOUT_OPS", "MATMUL_OPS", "SOFTMAX_OPS", "UNTAGGED_POINTWISE",
           "is_pointwise", "op_name", "shape_of"]


def op_name(node: Node) -> str:
    """``aten.view.default`` -> ``"view"``; ``operator.getitem`` -> ``"getitem"``; else ``""``."""
    if node.op != "call_function":
        return ""
    t = node.target
    if t is operator.getitem:
        return "getitem"
    packet = getattr(t, "overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(t, "__name__", "")


def shape_of(node: Any) -> Optional[tuple]:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


# ops that only move channels around: re-run them on an index tensor to follow channels
LAYOUT_OPS = frozenset({
    "view", "reshape", "_unsafe_view", "transpose", "permute", "t", "unflatten", "flatten", "select",
    "slice", "narrow", "split", "split_with_sizes", "chunk", "unbind", "tensor_split", "getitem",
    "squeeze", "unsqueeze", "expand", "repeat", "repeat_interleave", "movedim", "swapaxes", "reshape_as", "view_as",
    "expand_as"})
# ops that keep every channel where it is (value changes, position does not)
IDENTITY_OPS = frozenset({"dropout", "clone", "contiguous", "to", "_to_copy", "alias", "detach",
                          "type_as", "lift_fresh_copy"})
ATTENTION_OPS = frozenset({"scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
                           "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
                           "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_attention_math"})
SOFTMAX_OPS = frozenset({"softmax", "_softmax", "_safe_softmax"})
MATMUL_OPS = frozenset({"matmul", "bmm", "einsum"})


# elementwise aten ops that lack the pointwise tag (LeViT's Hardswish)
UNTAGGED_POINTWISE = frozenset({"hardswish", "log_sigmoid", "hardswish_"})


def is_pointwise(node: Node) -> bool:
    """Elementwise op (value-only): aten pointwise tag, an untagged elementwise op, or an identity op like
    dropout/clone."""
    if op_name(node) in IDENTITY_OPS or op_name(node) in UNTAGGED_POINTWISE:
        return True
    return torch.Tag.pointwise in getattr(node.target, "tags", ())
