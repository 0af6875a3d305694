"""Physical removal: the indices a cut removes from every slice (and bias), sliced out with
``index_select``, and the attributes the forwards read (head counts, widths) set to the new values.

The torch-pruning backend (``tp_backend.py``) removes the same indices through its dependency graph
where it is eligible; ``slice_params`` handles everything else (fused q/k/v, HF Conv1D, GQA, MHA). One
expert of a fused ``[experts, ...]`` parameter is named ``"<param>[e]"`` (``Slice.member_name``), its
axis that of the whole parameter: every expert loses the same number of indices (``experts.py``).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from passes.strip.cut import Cut
from passes.strip.layer_config import PREFIX, config_int, set_config
from passes.strip.tensors import bias_name, indices


def members(fam) -> list:
    """Every slice strip edits: the family's weights and its coupled per-head tensors."""
    return list(fam.slices) + list(fam.coupled)


def removals(model: nn.Module, fam, cut: Cut, handler) -> dict[str, tuple[int, list[int]]]:
    """``{full param name: (axis, indices)}`` for every weight and bias the cut touches."""
    out: dict[str, tuple[int, list[int]]] = {}
    per_role = handler.removed_by_role(fam, cut)
    for sl in members(fam):
        granules, unit = per_role[sl.role]
        idx = indices(sl, sorted(granules), unit if unit is not None else sl.size // fam.granules)
        _merge(out, sl.member_name, sl.axis, idx)
        bname = bias_name(sl, model)
        if bname is not None:  # a bias follows its weight's output axis ([experts, out] for one expert)
            _merge(out, bname if sl.expert is None else f"{bname}[{sl.expert}]", 0 if sl.expert is None else 1, idx)
    return {k: v for k, v in out.items() if v[1]}


def _merge(acc, name, axis, idx):
    if name in acc and acc[name][0] != axis:
        raise ValueError(f"{name}: sliced along two axes ({acc[name][0]} and {axis}) by one Plan")
    old = acc.get(name, (axis, []))[1]
    acc[name] = (axis, sorted(set(old) | set(idx)))


# leaf module class -> attribute(s) recomputed from the new weight shape
_LEAF_SHAPE_ATTRS = {
    "Linear": lambda m: {"out_features": m.weight.shape[0], "in_features": m.weight.shape[1]},
    "NonDynamicallyQuantizableLinear": lambda m: {"out_features": m.weight.shape[0],
                                                  "in_features": m.weight.shape[1]},
    "Conv1D": lambda m: {"nf": m.weight.shape[1]},  # HF GPT-2: weight [in, out]
    "LayerNorm": lambda m: {"normalized_shape": tuple(m.weight.shape)},  # hidden dims (hidden.py)
    "Embedding": lambda m: {"num_embeddings": m.weight.shape[0], "embedding_dim": m.weight.shape[1]},
    "Conv2d": lambda m: {"out_channels": m.weight.shape[0], "in_channels": m.weight.shape[1] * m.groups},
    "BatchNorm1d": lambda m: {"num_features": m.running_mean.shape[0] if m.running_mean is not None
                              else m.weight.shape[0]},  # LeViT's Linear -> BatchNorm1d (per-channel, coupled)
}


def _aliases(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """id(parameter) -> every (module fqn, module, name) holding it (tied weights: several)."""
    out: dict[int, list] = {}
    for fqn, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod._parameters.items():
            if p is not None:
                out.setdefault(id(p), []).append((fqn, mod, pname))
    return out


_EXPERT = re.compile(r"^(.*)\[(\d+)\]$")


def _per_expert(model: nn.Module, remove: dict) -> dict[str, tuple[int, list[list[int]]]]:
    """``"<param>[e]"`` entries as ``{param: (axis, kept indices per expert)}``; every expert keeps as many."""
    found: dict[str, dict[int, tuple[int, list[int]]]] = {}
    for name, (axis, idx) in remove.items():
        m = _EXPERT.match(name)
        if m:
            found.setdefault(m.group(1), {})[int(m.group(2))] = (axis, idx)
    out = {}
    for name, per in found.items():
        t = getattr(model.get_submodule(name.rpartition(".")[0]) if "." in name else model, name.rpartition(".")[2])
        axis = next(iter(per.values()))[0]
        gone = [set(per[e][1]) if e in per else set() for e in range(t.shape[0])]
        keep = [[i for i in range(t.shape[axis]) if i not in g] for g in gone]
        if len({len(k) for k in keep}) != 1:
            raise ValueError(f"{name}: experts would keep different widths {sorted({len(k) for k in keep})}; one "
                             f"fused tensor holds every expert at one width")
        out[name] = (axis, keep)
    return out


@torch.no_grad()
def slice_params(model: nn.Module, remove: dict[str, tuple[int, list[int]]]) -> None:
    """Remove indices along an axis of each named tensor; a tied parameter is sliced once and every
    module holding it gets the sliced one (GPT-2's ``wte`` / ``lm_head``). Per-expert entries
    (``"<param>[e]"``) go first: their expert indices are those before any expert is removed."""
    touched, done = set(), set()
    for name, (axis, keep) in _per_expert(model, remove).items():
        fqn, _, pname = name.rpartition(".")
        mod = model.get_submodule(fqn) if fqn else model
        old = getattr(mod, pname)
        new = torch.stack([old[e].index_select(axis - 1, torch.as_tensor(k, device=old.device))
                           for e, k in enumerate(keep)]).clone()
        setattr(mod, pname, nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter)
                else new)
    aliases = _aliases(model)  # after the per-expert pass: ids of the tensors it replaced may be reused
    for name, (axis, idx) in remove.items():
        if _EXPERT.match(name):
            continue
        fqn, _, pname = name.rpartition(".")
        mod = model.get_submodule(fqn) if fqn else model
        old = getattr(mod, pname)
        if id(old) in done:
            continue
        gone = set(idx)
        keep = torch.as_tensor([i for i in range(old.shape[axis]) if i not in gone], dtype=torch.long)
        new = old.detach().index_select(axis, keep.to(old.device)).clone()
        new = nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
        done.add(id(new))
        for a_fqn, a_mod, a_name in aliases.get(id(old), [(fqn, mod, pname)]):
            setattr(a_mod, a_name, new)
            touched.add(a_fqn)
    for fqn in touched:
        sync_leaf(model.get_submodule(fqn) if fqn else model)


def sync_leaf(mod: nn.Module) -> None:
    fn = _LEAF_SHAPE_ATTRS.get(type(mod).__name__)
    if fn is not None:
        for k, v in fn(mod).items():
            setattr(mod, k, v)


def update_attributes(model: nn.Module, fam, old: dict, new: dict, handler) -> dict[str, dict]:
    """Set head counts / widths on the family module and its (non-leaf) submodules.

    ``old``/``new`` map quantity -> value. A class in the table gets exactly its listed
    attributes; any other class gets the generic names whose current value equals ``old``."""
    table = handler.ATTRS
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
            pairs = [(a, q) for q, names in handler.GENERIC.items() if q in old for a in names
                     if isinstance(getattr(mod, a, None), int) and getattr(mod, a) == old[q]]
        for attr, q in pairs:
            if q in new and getattr(mod, attr) != new[q]:
                setattr(mod, attr, new[q])
                changed.setdefault(fqn, {})[attr] = new[q]
        own = {a: new[q] for q, names in handler.CONFIG.items() if q in old and q in new for a in names
               if config_int(mod, a) == old[q] != new[q]}
        if own:
            set_config(mod, own)
            changed.setdefault(fqn, {}).update({PREFIX + a: v for a, v in own.items()})
    return changed


def shape_attributes(model: nn.Module, handlers) -> dict[str, dict]:
    """Every integer attribute a strip handler may set (head counts, widths), and those it keeps that a module
    derives from them (``KindHandler.KEEP``), per module: a slim model's manifest records them so loading
    needs no strip report."""
    names, configs, kept = set(), set(), set()
    for h in handlers:
        names |= {a for pairs in h.ATTRS.values() for a, _ in pairs}
        names |= {a for attrs in h.GENERIC.values() for a in attrs}
        configs |= {a for attrs in h.CONFIG.values() for a in attrs}
        kept |= set(h.KEEP)
    out: dict[str, dict] = {}
    for fqn, mod in model.named_modules():
        if type(mod).__name__ in _LEAF_SHAPE_ATTRS:
            continue
        found = {a: getattr(mod, a) for a in sorted(names)
                 if isinstance(getattr(mod, a, None), int) and not isinstance(getattr(mod, a), bool)}
        found.update({PREFIX + a: config_int(mod, a) for a in sorted(configs) if config_int(mod, a) is not None})
        found.update({a: vars(mod)[a] for a in sorted(kept) if type(vars(mod).get(a)) in (int, float)})
        if found:
            out[fqn] = found
    return out
