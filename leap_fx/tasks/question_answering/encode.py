"""Questions and contexts -> windows: each question is tokenised with its context (``question [SEP]
context``, the context truncated), a context longer than the window is cut into windows of
``max_length`` tokens that overlap by ``doc_stride`` tokens (a fast tokenizer's overflowing tokens), and
every window keeps the character offsets of its context tokens (None elsewhere) to map a span back to text.

``labels [windows, 2]``: the token positions of the first answer's start and end in the window, or
``(0, 0)`` (the first token) when the answer is not wholly inside it (HF's SQuAD preprocessing).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["encode_questions", "window_length", "answer_positions"]


def window_length(given: Optional[int], default: int, limit: Optional[int]) -> int:
    if given is not None:
        if limit is not None and given > limit:
            raise ValueError(f"--max-length {given} exceeds the model's position limit {limit}; pass at most {limit}")
        return int(given)
    return int(min(default, limit or default))


def answer_positions(offsets: list, start_char: int, end_char: int) -> tuple[int, int]:
    """Token positions of the character span ``[start_char, end_char)`` in one window, else (0, 0).

    >>> answer_positions([None, None, (0, 5), (6, 9), (10, 14), None], 6, 14)
    (3, 4)
    >>> answer_positions([None, (0, 5), (6, 9), None], 6, 14)
    (0, 0)
    """
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in ctx if offsets[i][1] > start_char)
    end = next(i for i in reversed(ctx) if offsets[i][0] < end_char)
    return start, end


def encode_questions(tokenizer, rows: list, max_length: int, stride: int) -> tuple[dict, dict]:
    """``(tensors, meta)``: windows of every question (module doc); ``meta``: each window's question and
    context offsets, every question's context and gold answer texts."""
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ValueError("question answering expects a tokenizer that pads on the right (question first)")
    if stride >= max_length - 8:
        raise ValueError(f"doc_stride {stride} must be well below the window length {max_length} (e.g. a quarter)")
    try:
        enc = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding="max_length")
    except Exception as err:  # a question longer than the window leaves no room for context
        raise ValueError(f"cannot cut the contexts into {max_length}-token windows with stride {stride} "
                         f"({' '.join(str(err).split())[:200]}); raise --max-length or lower --doc-stride") from err
    questions = list(enc.pop("overflow_to_sample_mapping"))
    raw_offsets = enc.pop("offset_mapping")
    offsets, labels = [], []
    for w, q in enumerate(questions):
        seq = enc.sequence_ids(w)
        offs = [tuple(o) if s == 1 else None for o, s in zip(raw_offsets[w], seq)]
        first = rows[q]["answers"][0]
        labels.append(answer_positions(offs, first["answer_start"], first["answer_start"] + len(first["text"])))
        offsets.append(offs)
    tensors = {k: torch.tensor(v, dtype=torch.long) for k, v in enc.items()
               if k in ("input_ids", "attention_mask", "token_type_ids")}
    tensors["labels"] = torch.tensor(labels, dtype=torch.long)
    meta = {"window_question": questions, "offsets": offsets, "contexts": [r["context"] for r in rows],
            "answers": {r["id"]: [a["text"] for a in r["answers"]] for r in rows}, "ids": [r["id"] for r in rows]}
    return tensors, meta
