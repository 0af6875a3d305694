"""The best answer span of each question from its windows' start and end logits (numpy; torch and
onnxruntime outputs go through the same code).

Per window: the ``n_best`` highest start and end logits, pairs with both ends inside the context (an
offset), ``end >= start`` and at most ``max_answer_length`` tokens, scored ``start + end`` logit; the best
pair over all of a question's windows gives the answer text ``context[offset[start][0]:offset[end][1]]``
("" when no window has a valid pair).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["best_spans"]


def _window_best(start: np.ndarray, end: np.ndarray, offsets: Sequence[Optional[tuple]], n_best: int,
                 max_len: int) -> Optional[tuple[float, int, int]]:
    best = None
    starts = np.argsort(start)[::-1][:n_best]
    ends = np.argsort(end)[::-1][:n_best]
    for s in starts:
        if s >= len(offsets) or offsets[s] is None:
            continue
        for e in ends:
            if e < s or e - s + 1 > max_len or e >= len(offsets) or offsets[e] is None:
                continue
            score = float(start[s] + end[e])
            if best is None or score > best[0]:
                best = (score, int(s), int(e))
    return best


def best_spans(start_logits: np.ndarray, end_logits: np.ndarray, window_question: Sequence[int],
               offsets: Sequence[Sequence[Optional[tuple]]], contexts: Sequence[str], n_best: int = 20,
               max_answer_length: int = 30) -> list[str]:
    """The answer text of every question (index into ``contexts``) from its windows (module doc)."""
    best: dict[int, tuple[float, str]] = {}
    for w, q in enumerate(window_question):
        found = _window_best(start_logits[w], end_logits[w], offsets[w], n_best, max_answer_length)
        if found is None:
            continue
        score, s, e = found
        if q not in best or score > best[q][0]:
            best[q] = (score, contexts[q][offsets[w][s][0]:offsets[w][e][1]])
    return [best[q][1] if q in best else "" for q in range(len(contexts))]
