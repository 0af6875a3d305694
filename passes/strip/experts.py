"""Where experts are stripped: whole experts (``ExpertsFamily``) and the widths of routed experts.

**Whole experts.** Expert ``e`` is marked for removal when its router row and its slice of every fused
expert tensor are zero (what the mask carrier leaves after ``fold``; biases are not looked at). A zero
expert still takes routing slots in the dense model, so removing it is a routing change, not a zero
removal: the stripped model routes every token among the remaining experts, exactly what the dense model
computes with the removed experts' logits at ``-inf`` (``routing.excluded_experts``, strip's reference for
its self-check). Removed: the router row (and its bias), index ``e`` along axis 0 of every fused tensor
and its bias, entries of per-expert routing tensors (score-correction bias); the experts and router
modules' counts (``num_experts`` ...) are set, and the config's (``num_local_experts`` / ``num_experts`` /
``n_routed_experts``) when every layer keeps the same number. Kept even when marked, with the reason in
the report: experts needed so that ``top_k`` remain (``num_experts_per_tok`` is never changed), and
under grouped routing (DeepSeek-V3's ``n_group``) the experts that would make groups unequal or leave a
group with fewer than ``max(2, top_k)`` (its top-2 group score and the top-k need them).

**Expert widths.** One fused tensor holds every expert at one width, so experts cannot keep different
numbers of neurons. Each expert drops its removable neurons (``neurons.py`` on ``W[e]``), then every
expert of the layer keeps the widest survivor's count ``W``: an expert with fewer live neurons keeps
some removable ones, which add exactly 0 (nothing of an expert folds). This is exact and shrinks the
tensor to ``W``, the most any pruning of these experts can get without per-expert widths; a method
that keeps the same number of neurons in every expert of a layer loses nothing to it. ``W`` is rounded up
to a multiple of 16 bytes of the tensor's dtype (4 float32 neurons) when there are removable neurons to
keep: torch's ``grouped_mm`` (transformers' CPU default) refuses rows whose stride is not a multiple of
16 bytes.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

from torch import nn

from passes.analyze.plan import EXPERTS, FEED_FORWARD, ExpertsFamily, Plan
from passes.strip.cut import Cut, KindHandler
from passes.strip.tensors import indices, is_zero, matrix, part, tensor

COUNTS = ("num_local_experts", "num_experts", "n_routed_experts")  # HF config names of the expert count


class Experts(KindHandler):
    kind = EXPERTS
    ATTRS: dict = {}
    GENERIC = {"experts": ("num_experts", "num_local_experts", "n_routed_experts", "num_routed_experts")}

    @classmethod
    def decide(cls, model: nn.Module, fam: ExpertsFamily, atol: float = 0.0) -> Cut:
        cut = Cut(fam.fqn, fam.kind, fam.layer, fam.num_experts)
        marked = [e for e in range(fam.num_experts)
                  if all(is_zero(part(*matrix(model, sl), indices(sl, [e], 1)), atol) for sl in fam.slices)]
        cut.remove, cut.note = _allowed(fam, marked)
        return cut

    @classmethod
    def removed_by_role(cls, fam, cut):
        return {role: (cut.remove, 1) for role in ("router", "up", "gate", "down", "coupled")}

    @classmethod
    def fold_into(cls, fam):
        return fam.router  # nothing folds: a removed expert leaves no constant

    @classmethod
    def placeholder(cls, fam, cut):
        raise AssertionError("an experts family always keeps top_k >= 1 experts")  # decide never empties it

    @classmethod
    def quantities(cls, fam, cut):
        return {"experts": fam.num_experts}, {"experts": fam.num_experts - len(cut.remove)}

    @classmethod
    def shrunk(cls, fam, cut, slices):
        n = fam.num_experts - len(cut.remove)
        size = lambda sl: dataclasses.replace(sl, start=0, size=n, index=None)  # noqa: E731 - axis 0: 0..n-1
        return dataclasses.replace(fam, num_experts=n, router=size(fam.router),
                                   members=tuple(map(size, fam.members)), coupled=tuple(map(size, fam.coupled)))


def _allowed(fam: ExpertsFamily, marked: list[int]) -> tuple[list[int], str]:
    """The marked experts strip may remove (see the module doc; the lowest-numbered first), and why any stay."""
    notes, keep = [], fam.top_k
    if fam.groups > 1:
        size = fam.num_experts // fam.groups
        groups = [[e for e in marked if e // size == g] for g in range(fam.groups)]
        each = max(0, min(min(len(g) for g in groups), size - max(2, fam.top_k)))
        allowed = [e for g in groups for e in g[:each]]
        if len(allowed) < len(marked):
            notes.append(f"grouped routing ({fam.groups} groups of {size}): {len(marked) - len(allowed)} marked "
                         f"experts kept so that every group loses the same number and keeps >= {max(2, keep)}")
        marked = allowed
    room = fam.num_experts - keep
    if len(marked) > room:
        notes.append(f"{len(marked) - room} marked experts kept: top_k={keep} experts must remain "
                     f"(num_experts_per_tok is not changed)")
        marked = marked[:room]
    return sorted(marked), "; ".join(notes)


def even_widths(model: nn.Module, plan: Plan, cuts: dict[str, Cut]) -> None:
    """Give every expert of one fused tensor the same number of neurons (module doc): pad with removable ones."""
    by_tensor: dict[str, list[str]] = defaultdict(list)
    for key, fam in plan.families.items():
        if fam.kind == FEED_FORWARD and fam.expert is not None:
            by_tensor[fam.down.weight_name].append(key)
    for name, keys in by_tensor.items():
        fams = {plan.families[k].expert: k for k in keys}
        router = plan.families[keys[0]].router
        gone = set(cuts[router].remove) if router in cuts else set()
        total = tensor(model, name).shape[0]
        if len(fams) < total:  # a Plan without some of these experts: their neurons cannot be cut
            for k in keys:
                cuts[k].remove, cuts[k].note = [], "not every expert of the fused tensor is in the Plan"
            continue
        live = [len(cuts[k].kept) for e, k in fams.items() if e not in gone]
        step = width_step(model, name)
        width = min(-(-max([1] + live) // step) * step, plan.families[keys[0]].width)
        for e, k in fams.items():
            cut = cuts[k]
            if e in gone:
                cut.remove, cut.note = list(range(cut.granules - width)), "expert removed whole"
            elif len(cut.kept) < width:
                pad = cut.remove[:width - len(cut.kept)]
                cut.remove = cut.remove[len(pad):]
                cut.note = f"{len(pad)} removable neurons kept: every expert of {name} keeps {width}"


def width_step(model: nn.Module, name: str) -> int:
    """Neurons per 16 bytes of the fused tensor ``name`` (grouped_mm: row strides of 16 bytes): strip keeps
    routed experts' widths at multiples of it (or whole)."""
    return max(1, 16 // tensor(model, name).element_size())


def renumber(slim: Plan, plan: Plan, cuts: dict[str, Cut]) -> None:
    """The stripped Plan without the removed experts' families, its routed slices renumbered."""
    for key, fam in plan.families.items():
        if fam.kind != EXPERTS or not cuts[key].remove:
            continue
        gone = set(cuts[key].remove)
        new = {e: i for i, e in enumerate(e for e in range(fam.num_experts) if e not in gone)}
        kept = []
        for k in fam.experts:
            routed = slim.families.pop(k, None)
            if routed is None or routed.expert not in new:
                continue
            slices = {s.role: dataclasses.replace(s, expert=new[s.expert]) for s in routed.slices}
            slim.families[k] = dataclasses.replace(routed, **slices)
            kept.append(k)
        width = slim.families[kept[0]].width if kept else fam.width
        slim.families[key] = dataclasses.replace(slim.families[key], experts=tuple(kept), width=width)


def update_config(model: nn.Module, plan: Plan, cuts: dict[str, Cut]) -> str:
    """Set the HF config's expert count when every mixture-of-experts layer keeps the same number; a note."""
    layers = {k: f for k, f in plan.families.items() if f.kind == EXPERTS}
    config = getattr(model, "config", None)
    if not layers or config is None:
        return ""
    before = {f.num_experts for f in layers.values()}
    after = {f.num_experts - len(cuts[k].remove) for k, f in layers.items()}
    if len(before) != 1 or before == after:
        return ""
    if len(after) != 1:
        return f"config expert count left at {before.pop()}: layers keep {sorted(after)} experts (per module)"
    old, new = before.pop(), after.pop()
    names = [n for n in COUNTS if isinstance(getattr(config, n, None), int) and getattr(config, n) == old]
    for n in names:
        setattr(config, n, new)
    return f"config {'/'.join(names)} {old} -> {new}" if names else ""


def removed_experts(model: nn.Module, plan: Plan, atol: float = 0.0) -> dict[str, list[int]]:
    """ExpertsFamily key -> the experts strip removes (``Experts.decide``), for its self-check's reference."""
    return {k: Experts.decide(model, f, atol).remove for k, f in plan.families.items() if f.kind == EXPERTS}
