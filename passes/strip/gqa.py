"""Grouped-query attention: which sets of query heads a layer can keep.

q head ``h`` reads kv head ``h // group`` (``group = num_heads // num_kv_heads``: the Plan's layout).
HF's attention repeats each kv head ``num_key_value_groups`` times, so inside one layer every kept kv
head must keep the *same* number ``r`` of q heads; layers may differ. A keep set is realisable when
it is ``r`` q heads in each of ``g`` kv groups (the other groups removed with their kv head). Kept q
heads stay in their original, group-major order, so after removal head ``h`` reads kv ``h // r``.

``gqa_keep(scores, num_kv_heads, budget)`` picks the realisable set of at most ``budget`` heads with
the largest total score (every ``r`` and ``g`` tried: ``g`` groups by the sum of their ``r`` best
heads); methods call it per layer. ``realise(removable, num_heads, num_kv_heads)`` is what strip can
remove of a given set: whole groups all of whose heads are removable, then, from each remaining
group, the same number of heads (the smallest number removable in any remaining group).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["GqaKeep", "gqa_keep", "realise"]


@dataclass(frozen=True)
class GqaKeep:
    """A realisable keep set: q heads and kv heads (original indices, sorted), ``r`` q heads per kv head."""

    q: tuple[int, ...]
    kv: tuple[int, ...]
    per_group: int


def _groups(num_heads: int, num_kv_heads: int) -> int:
    if num_kv_heads <= 0 or num_heads <= 0 or num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a positive multiple of num_kv_heads {num_kv_heads}")
    return num_heads // num_kv_heads


def gqa_keep(scores: Sequence[float], num_kv_heads: int, budget: int) -> GqaKeep:
    """The realisable keep set of at most ``budget`` q heads with the largest summed score (ties: more
    heads, then more heads per group, then lower indices). ``budget`` < 1 keeps nothing."""
    scores = [float(s) for s in scores]
    group = _groups(len(scores), num_kv_heads)
    if budget < 1:
        return GqaKeep((), (), 0)
    best, best_key = GqaKeep((), (), 0), None
    for r in range(1, group + 1):
        tops = []
        for j in range(num_kv_heads):
            heads = range(j * group, (j + 1) * group)
            top = sorted(heads, key=lambda h: (-scores[h], h))[:r]
            tops.append((sum(scores[h] for h in top), j, top))
        tops.sort(key=lambda t: (-t[0], t[1]))
        for g in range(1, min(num_kv_heads, budget // r) + 1):
            chosen = tops[:g]
            key = (sum(t[0] for t in chosen), g * r, r)
            if best_key is None or key > best_key:
                best_key = key
                best = GqaKeep(tuple(sorted(h for t in chosen for h in t[2])), tuple(sorted(t[1] for t in chosen)), r)
    return best


def realise(removable: Iterable[int], num_heads: int, num_kv_heads: int) -> tuple[list[int], list[int], list[int]]:
    """``(q heads removed, kv heads removed, removable q heads kept)`` for a set of removable q heads.

    Removable heads kept are the ones a GQA layer cannot drop: a kept group keeps ``group - m`` heads,
    ``m`` the fewest removable in any kept group; the lowest-index removable heads of each group go."""
    group = _groups(num_heads, num_kv_heads)
    dead = set(int(h) for h in removable)
    per = [[h for h in range(j * group, (j + 1) * group) if h in dead] for j in range(num_kv_heads)]
    kv_gone = [j for j in range(num_kv_heads) if len(per[j]) == group]
    live = [j for j in range(num_kv_heads) if len(per[j]) < group]
    m = min((len(per[j]) for j in live), default=0)
    q_gone = [h for j in kv_gone for h in per[j]] + [h for j in live for h in per[j][:m]]
    kept_dead = [h for j in live for h in per[j][m:]]
    return sorted(q_gone), kv_gone, sorted(kept_dead)
