"""Words and tags -> the loop's tensors: the words are tokenised as pre-split words (a fast tokenizer's
``word_ids``), the first sub-word of each word carries the word's tag index and every other position
(special tokens, later sub-words, padding) is -100, so loss and metric count each word once.

Words past ``max_length`` (truncated) and words the tokenizer turns into nothing are not scored; their
count is kept (``meta["words_not_scored"]``) and reported.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from leap_fx.tasks.token_classification.loss import IGNORE

__all__ = ["align", "encode_rows", "choose_length", "word_predictions", "check_fast"]

PERCENTILE, FLOOR = 95, 8


def check_fast(tokenizer, where: str) -> None:
    if not getattr(tokenizer, "is_fast", False):  # HF tokenizers declare it; word alignment needs it
        raise ValueError(f"the tokenizer of {where} ({type(tokenizer).__name__}) is not a fast tokenizer: aligning "
                         f"tags to sub-words needs word_ids(); save the model's fast tokenizer (tokenizer.json)")


def choose_length(tokenizer, rows: list, limit: Optional[int], given: Optional[int] = None) -> int:
    """``given``, else the 95th percentile of the tokenised training rows (capped by ``limit``)."""
    if given is not None:
        if limit is not None and given > limit:
            raise ValueError(f"--max-length {given} exceeds the model's position limit {limit}; pass at most {limit}")
        return int(given)
    sample = rows[:4000]
    lens = sorted(len(ids) for ids in tokenizer([r["tokens"] for r in sample], is_split_into_words=True,
                                                truncation=False)["input_ids"])
    p95 = lens[min(len(lens) - 1, max(0, math.ceil(PERCENTILE / 100 * len(lens)) - 1))]
    return int(max(FLOOR, min(p95, limit or p95)))


def align(word_ids: list, tags: list[int]) -> list[int]:
    """Per position: the tag of the word it starts, -100 elsewhere.

    >>> align([None, 0, 0, 1, None], [3, 5])
    [-100, 3, -100, 5, -100]
    """
    out, prev = [], None
    for w in word_ids:
        out.append(tags[w] if w is not None and w != prev else IGNORE)
        prev = w
    return out


def encode_rows(tokenizer, rows: list, label_index: dict, max_length: int) -> tuple[dict, dict]:
    """``(tensors, meta)`` of one split: ``input_ids``, ``attention_mask`` (``token_type_ids``), ``labels``;
    ``meta``: each row's scored word indices and how many words were not scored."""
    enc = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True, max_length=max_length,
                    padding="max_length", return_tensors="pt")
    labels, scored, lost = [], [], 0
    for i, r in enumerate(rows):
        ids = enc.word_ids(i)
        labels.append(align(ids, [label_index[t] for t in r["tags"]]))
        words = sorted({w for w in ids if w is not None})
        scored.append(words)
        lost += len(r["tokens"]) - len(words)
    tensors = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    tensors["labels"] = torch.tensor(labels, dtype=torch.long)
    return tensors, {"scored_words": scored, "words_not_scored": lost}


def word_predictions(logits, labels) -> list[list[int]]:
    """Per row, the argmax tag index at each labelled position (first sub-words), in word order."""
    pred = logits.argmax(-1)
    return [[int(p) for p, y in zip(pr, lab) if y != IGNORE] for pr, lab in zip(pred, labels)]
