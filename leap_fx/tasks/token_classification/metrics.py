"""Entity-level precision, recall and F1 as seqeval scores them by default (conlleval's chunking), written
here from its rules: an entity is a maximal chunk ``(type, first word, last word)`` of a tag sequence.

Tags are ``B-X`` / ``I-X`` / ``E-X`` / ``S-X`` / ``O`` (IOB1, IOB2 and IOBES all read by one rule set). A
chunk ends before the current tag when the previous tag was ``E`` or ``S``; or ``B`` / ``I`` followed by
``B``, ``S`` or ``O``; or any entity tag followed by a tag of another type. A chunk starts at ``B`` or
``S``; at ``I`` / ``E`` after ``O``, ``E`` or ``S`` (``E`` after ``E`` too); or at any entity tag of a
new type (so ``I-PER`` after ``O`` starts a PER entity, as conlleval reads IOB1). Micro-averaged over
all sentences: ``precision = correct / predicted``, ``recall = correct / gold``,
``F1 = 2 P R / (P + R)`` (0 when a denominator is 0), an entity correct when type and both ends agree.

>>> sorted(entities(["B-PER", "I-PER", "O", "B-LOC"]))
[('LOC', 3, 3), ('PER', 0, 1)]
>>> sorted(entities(["I-ORG", "I-ORG", "B-ORG", "O"]))
[('ORG', 0, 1), ('ORG', 2, 2)]
>>> r = entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]])
>>> round(r["precision"], 3), round(r["recall"], 3), round(r["f1"], 3)
(1.0, 0.5, 0.667)
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["entities", "entity_scores"]


def _split(tag: str) -> tuple[str, str]:
    """``(prefix, type)``: ``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "_")``."""
    return tag[0], (tag[1:].split("-", maxsplit=1)[-1] or "_")


def _ends(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev not in ("O", ".") and prev_type != type_


def _starts(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and prev in ("E", "S", "O"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The chunks ``(type, first, last)`` of one tag sequence (module doc)."""
    found, prev, prev_type, begin = set(), "O", "", 0
    for i, tag in enumerate(list(tags) + ["O"]):
        cur, type_ = _split(tag)
        if _ends(prev, cur, prev_type, type_):
            found.add((prev_type, begin, i - 1))
        if _starts(prev, cur, prev_type, type_):
            begin = i
        prev, prev_type = cur, type_
    return found


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Micro precision / recall / F1 over every sentence's entities, and the tag accuracy (module doc)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    correct = n_gold = n_pred = tags_right = tags = 0
    for g, p in zip(gold, pred):
        if len(g) != len(p):
            raise ValueError(f"a sentence has {len(g)} gold tags but {len(p)} predicted")
        eg, ep = entities(g), entities(p)
        correct, n_gold, n_pred = correct + len(eg & ep), n_gold + len(eg), n_pred + len(ep)
        tags_right += sum(a == b for a, b in zip(g, p))
        tags += len(g)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": tags_right / tags if tags else 0.0,
            "entities": n_gold}
