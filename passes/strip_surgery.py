"""Physical removal of decided granules and the attribute updates the forwards depend on.

Two backends remove the same indices (decided in ``passes.strip_fold``):

- ``torch_pruning``: ``tp.DependencyGraph`` rooted at the q (or FFN-up) rows; the group it
  propagates is *checked* against the Plan (exactly q/k/v rows + out columns, or up/gate rows +
  down columns, same indices) before ``group.prune()``; any mismatch falls back to slicing.
  Eligible families: separate ``nn.Linear`` q/k/v/out (up/gate/down) and no GQA.
- ``slice``: index_select on every Plan slice (fused q/k/v, HF ``Conv1D``, GQA, any module).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from passes.plan import AttentionFamily
from passes.strip_fold import Cut, bias_name, indices

# -- which indices go ---------------------------------------------------------------------------


def removals(model: nn.Module, fam, cut: Cut) -> dict[str, tuple[int, list[int]]]:
    """``{full param name: (axis, indices)}`` for every weight and bias the cut touches."""
    if isinstance(fam, AttentionFamily):
        unit = fam.head_dim
        per_role = {"q": cut.remove, "out": cut.remove, "k": cut.kv_remove, "v": cut.kv_remove}
    else:
        unit = 1
        per_role = {"up": cut.remove, "gate": cut.remove, "down": cut.remove}
    out: dict[str, tuple[int, list[int]]] = {}
    for sl in fam.slices:
        idx = indices(sl, sorted(per_role[sl.role]), unit)
        _merge(out, sl.weight_name, sl.axis, idx)
        bname = bias_name(sl, model)
        if bname is not None:
            _merge(out, bname, 0, idx)
    return {k: v for k, v in out.items() if v[1]}


def _merge(acc, name, axis, idx):
    if name in acc and acc[name][0] != axis:
        raise ValueError(f"{name}: sliced along two axes ({acc[name][0]} and {axis}) by one Plan")
    old = acc.get(name, (axis, []))[1]
    acc[name] = (axis, sorted(set(old) | set(idx)))


# -- slicing backend --------------------------------------------------------------------------

# leaf module class -> attribute(s) recomputed from the new weight shape
_LEAF_SHAPE_ATTRS = {
    "Linear": lambda m: {"out_features": m.weight.shape[0], "in_features": m.weight.shape[1]},
    "NonDynamicallyQuantizableLinear": lambda m: {"out_features": m.weight.shape[0],
                                                  "in_features": m.weight.shape[1]},
    "Conv1D": lambda m: {"nf": m.weight.shape[1]},  # HF GPT-2: weight [in, out]
}


@torch.no_grad()
def slice_params(model: nn.Module, remove: dict[str, tuple[int, list[int]]]) -> None:
    touched = set()
    for name, (axis, idx) in remove.items():
        fqn, _, pname = name.rpartition(".")
        mod = model.get_submodule(fqn) if fqn else model
        old = getattr(mod, pname)
        gone = set(idx)
        keep = torch.as_tensor([i for i in range(old.shape[axis]) if i not in gone], dtype=torch.long)
        new = old.detach().index_select(axis, keep.to(old.device)).clone()
        setattr(mod, pname, nn.Parameter(new, requires_grad=old.requires_grad)
                if isinstance(old, nn.Parameter) else new)
        touched.add(fqn)
    for fqn in touched:
        sync_leaf(model.get_submodule(fqn) if fqn else model)


def sync_leaf(mod: nn.Module) -> None:
    fn = _LEAF_SHAPE_ATTRS.get(type(mod).__name__)
    if fn is not None:
        for k, v in fn(mod).items():
            setattr(mod, k, v)


# -- torch-pruning backend ------------------------------------------------------------------


def tp_eligible(model: nn.Module, fam) -> Optional[str]:
    """None if torch-pruning can remove this family; else the reason it cannot."""
    if isinstance(fam, AttentionFamily) and fam.num_kv_heads != fam.num_heads:
        return "GQA: torch-pruning's q_proj group does not terminate (test_strip limitation test)"
    for sl in fam.slices:
        mod = model.get_submodule(sl.fqn)
        if type(mod) is not nn.Linear or sl.param != "weight":
            return f"{sl.weight_name} is not a plain nn.Linear weight"
        if sl.start != 0 or sl.size != mod.weight.shape[sl.axis]:
            return f"{sl.weight_name} is fused (slice {sl.start}:{sl.start + sl.size})"
        if sl.axis != (1 if sl.role in ("out", "down") else 0):
            return f"{sl.weight_name}: unexpected axis {sl.axis} for role {sl.role}"
    return None


def tp_remove(dg, model: nn.Module, fam, remove: dict) -> Optional[str]:
    """Prune through the dependency graph; None on success, else why it was not done."""
    import torch_pruning as tp
    from torch_pruning import _helpers

    root = fam.q if isinstance(fam, AttentionFamily) else fam.up
    expected = {}
    for sl in fam.slices:
        mod = model.get_submodule(sl.fqn)
        idx = remove.get(sl.weight_name, (sl.axis, []))[1]
        expected[id(mod)] = (sl.role not in ("out", "down"), tuple(idx))
    root_idx = remove.get(root.weight_name, (0, []))[1]
    group = dg.get_pruning_group(model.get_submodule(root.fqn), tp.prune_linear_out_channels,
                                 idxs=list(root_idx))
    seen = {}
    for dep, idxs in group.items:
        tgt = dep.target.module
        if isinstance(tgt, nn.Module) and any(True for _ in tgt.parameters(recurse=False)):
            plain = tuple(sorted(_helpers.to_plain_idxs(idxs)))
            seen[id(tgt)] = (bool(dg.is_out_channel_pruning_fn(dep.handler)), plain)
    if seen != expected:
        names = {id(m): n for n, m in model.named_modules()}
        show = lambda d: {names.get(k, k): ("out" if v[0] else "in", len(v[1])) for k, v in d.items()}
        return f"dependency group {show(seen)} != plan {show(expected)}"
    group.prune()
    return None


# -- attribute updates ----------------------------------------------------------------------
# quantities: heads, kv_heads (counts), width (= heads * head_dim), kv_width, ffn (FFN width)
ATTENTION_ATTRS: dict[str, tuple[tuple[str, str], ...]] = {
    "BertSelfAttention": (("num_attention_heads", "heads"), ("all_head_size", "width")),
    "RobertaSelfAttention": (("num_attention_heads", "heads"), ("all_head_size", "width")),
    "DistilBertSelfAttention": (("n_heads", "heads"),),
    "MultiHeadSelfAttention": (("n_heads", "heads"),),
    "ViTSelfAttention": (("num_attention_heads", "heads"), ("all_head_size", "width")),
    "ViTAttention": (("num_attention_heads", "heads"),),
    "GPT2Attention": (("num_heads", "heads"), ("split_size", "width")),
    "LlamaAttention": (),  # infers heads from view(-1, head_dim); kv groups keep their ratio
    "SlimMultiheadAttention": (("num_heads", "heads"),),
}
FFN_ATTRS: dict[str, tuple[tuple[str, str], ...]] = {
    "LlamaMLP": (("intermediate_size", "ffn"),),
}
# generic fallback: attribute names that hold the quantity, updated only if the value matches
_GENERIC = {
    "heads": ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_kv_head"),
    "width": ("all_head_size", "inner_dim", "split_size", "inner_size"),
    "kv_width": ("kv_dim", "kv_size"),
    "ffn": ("intermediate_size", "ffn_dim", "dim_feedforward", "ffn_size", "hidden_features"),
}


def update_attributes(model: nn.Module, fam, old: dict, new: dict) -> dict[str, dict]:
    """Set head counts / widths on the family module and its (non-leaf) submodules.

    ``old``/``new`` map quantity -> value. A class in the table gets exactly its listed
    attributes; any other class gets the generic names whose current value equals ``old``."""
    table = ATTENTION_ATTRS if isinstance(fam, AttentionFamily) else FFN_ATTRS
    changed: dict[str, dict] = {}
    root = model.get_submodule(fam.fqn) if fam.fqn else model
    for rel, mod in root.named_modules():
        if type(mod).__name__ in _LEAF_SHAPE_ATTRS:
            continue
        fqn = f"{fam.fqn}.{rel}".strip(".") if rel else fam.fqn
        cls = type(mod).__name__
        if cls in table:
            pairs = [(a, q) for a, q in table[cls] if hasattr(mod, a)]
        else:
            pairs = [(a, q) for q, names in _GENERIC.items() if q in old for a in names
                     if isinstance(getattr(mod, a, None), int) and getattr(mod, a) == old[q]]
        for attr, q in pairs:
            if q in new and getattr(mod, attr) != new[q]:
                setattr(mod, attr, new[q])
                changed.setdefault(fqn, {})[attr] = new[q]
    return changed


def quantities(fam, cut: Cut) -> tuple[dict, dict]:
    """(old, new) quantity dicts for ``update_attributes``."""
    if isinstance(fam, AttentionFamily):
        h, kv, d = fam.num_heads, fam.num_kv_heads, fam.head_dim
        nh, nkv = h - len(cut.remove), kv - len(cut.kv_remove)
        return ({"heads": h, "kv_heads": kv, "width": h * d, "kv_width": kv * d},
                {"heads": nh, "kv_heads": nkv, "width": nh * d, "kv_width": nkv * d})
    return {"ffn": fam.width}, {"ffn": fam.width - len(cut.remove)}


def replace_mha(model: nn.Module, fam: AttentionFamily) -> Optional[str]:
    """Swap an ``nn.MultiheadAttention`` owning the family for :class:`SlimMultiheadAttention`."""
    from passes.strip_mha import SlimMultiheadAttention

    mod = model.get_submodule(fam.q.fqn)
    if not isinstance(mod, nn.MultiheadAttention):
        return None
    slim = SlimMultiheadAttention.from_mha(mod)
    parent, _, name = fam.q.fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, slim)
    return fam.q.fqn
