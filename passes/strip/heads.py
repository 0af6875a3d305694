"""Where heads are stripped: the attention family's strip rules.

Per-head tensors outside q/k/v/out (``fam.coupled``: a bias-table column per head) lose the removed
heads' entries too; a ``frozen`` family keeps every head (a per-head tensor strip cannot slice).

Head ``h`` (reading kv head ``j``) adds ``out[:, h] @ softmax(q_h k_j^T) (x W_v_j + b_v_j)``.
Zero ``out`` columns -> 0. Zero ``v`` rows -> every value row is ``b_v_j``; a softmax row sums
to 1 (padding / causal masks only move mass, eval mode: no dropout), so the head adds the
constant ``out[:, h] @ b_v_j``, folded into the out bias. Zero q/k with live v is *not*
removable: uniform attention still averages ``x W_v``. Under grouped-query attention (``gqa.py``)
a kv group goes when all its q heads are removable, and inside the kept groups the same number of q
heads goes from each (HF repeats every kv head ``num_key_value_groups`` times, set per layer here);
removable heads a layer must keep stay as zero heads (exact) and are named in the report
(``gqa_kept_zero`` and the note).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from passes.analyze.plan import ATTENTION, AttentionFamily, Slice
from passes.strip.cut import Cut, KindHandler
from passes.strip.fold import can_fold
from passes.strip.gqa import realise
from passes.strip.tensors import bias_name, indices, is_zero, part, tensor, through


class Heads(KindHandler):
    kind = ATTENTION
    ATTRS = {
        "BertSelfAttention": (("num_attention_heads", "heads"), ("all_head_size", "width")),
        "RobertaSelfAttention": (("num_attention_heads", "heads"), ("all_head_size", "width")),
        "DistilBertSelfAttention": (("n_heads", "heads"),),
        "MultiHeadSelfAttention": (("n_heads", "heads"),),
        "ViTSelfAttention": (("num_attention_heads", "heads"), ("all_head_size", "width")),
        "ViTAttention": (("num_attention_heads", "heads"),),
        "GPT2Attention": (("num_heads", "heads"), ("split_size", "width")),
        "LlamaAttention": (("num_key_value_groups", "groups"),),  # heads from view(-1, head_dim)
        "SlimMultiheadAttention": (("num_heads", "heads"),),
        "XGLMAttention": (("num_heads", "heads"), ("embed_dim", "width")),  # reshapes to embed_dim
        "MvpAttention": (("num_heads", "heads"), ("embed_dim", "width")),
        "GPTBigCodeAttention": (("num_heads", "heads"), ("embed_dim", "width"), ("num_key_value_groups", "groups")),
        "LevitAttention": (("num_attention_heads", "heads"), ("out_dim_projection", "out_width")),
        "LevitAttentionSubsample": (("num_attention_heads", "heads"), ("out_dim_projection", "out_width")),
    }
    GENERIC = {
        "heads": ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads"),
        "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_kv_head"),
        "width": ("all_head_size", "inner_dim", "split_size", "inner_size"),
        "kv_width": ("kv_dim", "kv_size"),
        "groups": ("num_key_value_groups", "num_queries_per_kv", "num_kv_groups"),
    }
    CONFIG = {"heads": ("num_attention_heads",), "kv_heads": ("num_key_value_heads",)}
    KEEP = ("head_dim", "attention_head_size", "head_size", "scaling")

    @classmethod
    def decide(cls, model: nn.Module, fam: AttentionFamily, atol: float = 0.0) -> Cut:
        """Removable q heads (zero out columns, or a zero kv group whose constant folds), realised for GQA."""
        h, kv, dv, do = fam.num_heads, fam.num_kv_heads, fam.unit("v"), fam.unit("out")
        if kv <= 0 or h % kv:
            raise ValueError(f"{fam.fqn}: num_heads {h} is not a multiple of num_kv_heads {kv}")
        if fam.frozen:
            return Cut(fam.fqn, fam.kind, fam.layer, h, note=f"heads kept (frozen): {fam.frozen}")
        group = h // kv
        out_w = tensor(model, fam.out.weight_name)
        v_w = tensor(model, fam.v.weight_name)
        vb_name = bias_name(fam.v, model)
        vb = tensor(model, vb_name) if vb_name else None
        removable, folds = [], []
        for j in range(kv):
            heads = list(range(j * group, (j + 1) * group))
            out_zero = [is_zero(part(out_w, fam.out.axis, indices(fam.out, [q], do)), atol) for q in heads]
            if not all(out_zero) and is_zero(part(v_w, fam.v.axis, indices(fam.v, [j], dv)), atol):
                b_v = part(vb, 0, indices(fam.v, [j], dv)) if vb is not None else None
                consts = [(q, through(fam.out, model, q, do, b_v)) for q, z in zip(heads, out_zero)
                          if not z and b_v is not None and not is_zero(b_v, 0.0)]
                if not consts or can_fold(model, fam.out):  # else nowhere to put the constant
                    removable += heads
                    folds += consts
                    continue
            removable += [q for q, z in zip(heads, out_zero) if z]
        cut = Cut(fam.fqn, fam.kind, fam.layer, h)
        cls.realise(fam, cut, removable, folds)
        return cut

    @classmethod
    def realise(cls, fam, cut: Cut, removable, folds=()) -> None:
        """Set ``cut`` to what GQA lets go of ``removable`` (constants only of whole groups, which fold)."""
        cut.remove, cut.kv_remove, kept_zero = realise(removable, fam.num_heads, fam.num_kv_heads)
        gone = set(cut.remove)
        cut.folds = [(q, c) for q, c in folds if q in gone]
        cut.kept_zero = kept_zero
        if kept_zero:
            per = (fam.num_heads - len(cut.remove)) // max(1, fam.num_kv_heads - len(cut.kv_remove))
            cut.note = (f"GQA: removable q heads {kept_zero} kept as zero heads (exact): every kept kv head of this "
                        f"layer keeps the same number of q heads (here {per})")

    @classmethod
    def removed_by_role(cls, fam, cut):
        unit = fam.unit
        return {"q": (cut.remove, unit("q")), "out": (cut.remove, unit("out")), "k": (cut.kv_remove, unit("k")),
                "v": (cut.kv_remove, unit("v")), "coupled": (cut.remove, None)}  # None: the slice's size / num_heads

    @classmethod
    def fold_into(cls, fam) -> Slice:
        return fam.out

    @classmethod
    def placeholder(cls, fam, cut):
        keep_q = [0]  # one q head on kv head 0 (groups of 1 in this layer)
        cut.kv_remove = [j for j in cut.kv_remove if j != 0]
        cut.placeholder = keep_q[0]
        cut.remove = [g for g in cut.remove if g not in keep_q]
        return {"q": keep_q, "k": [0], "v": [0], "out": keep_q}

    @classmethod
    def quantities(cls, fam, cut):
        h, kv, d, dv = fam.num_heads, fam.num_kv_heads, fam.head_dim, fam.unit("out")
        nh, nkv = h - len(cut.remove), kv - len(cut.kv_remove)
        return ({"heads": h, "kv_heads": kv, "width": h * d, "kv_width": kv * d, "groups": h // kv,
                 "out_width": h * dv},
                {"heads": nh, "kv_heads": nkv, "width": nh * d, "kv_width": nkv * d, "groups": nh // max(1, nkv),
                 "out_width": nh * dv})

    @classmethod
    def finish(cls, model: nn.Module, fam, cut: Cut) -> None:
        """Caches of per-head tensors the family's modules keep (LeViT's ``attention_bias_cache``: bias rows
        by device, made from the parameters at the first eval forward) are emptied: they held every head."""
        if not cut.remove:
            return
        root = model.get_submodule(fam.fqn) if fam.fqn else model
        for mod in root.modules():
            for name, val in vars(mod).items():
                if "cache" in name and isinstance(val, dict) and any(isinstance(v, torch.Tensor) for v in val.values()):
                    val.clear()

    @classmethod
    def shrunk(cls, fam, cut, slices):
        coupled = tuple(slices.pop(f"coupled:{c.weight_name}", c) for c in fam.coupled)
        return dataclasses.replace(fam, num_heads=fam.num_heads - len(cut.remove),
                                   num_kv_heads=fam.num_kv_heads - len(cut.kv_remove), coupled=coupled,
                                   **slices)

    @classmethod
    def record(cls, fam, cut):
        gone = set(cut.kv_remove)
        return {"kv_kept": [j for j in range(fam.num_kv_heads) if j not in gone], "gqa_kept_zero": list(cut.kept_zero)}

