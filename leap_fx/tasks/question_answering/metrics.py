"""Exact match and F1 as the official SQuAD v1.1 evaluation script scores them, written here from its rules.

An answer is normalised (lower case; punctuation removed; the articles ``a``, ``an``, ``the`` removed as
words; whitespace collapsed). Per question: exact match is 1 if the normalised prediction equals any
normalised gold answer; F1 is the best over gold answers of the token-level F1 (the bag of normalised
tokens shared by prediction and answer: ``P = shared / predicted``, ``R = shared / gold``, ``2PR/(P+R)``,
0 when nothing is shared). Both are averaged over the questions and reported in percent, as the script does.

>>> normalize_answer("The  Eiffel-Tower!")
'eiffeltower'
>>> exact_match("the cat", ["A cat", "dog"]), round(f1_score("black cat sat", ["the cat"]), 3)
(1.0, 0.5)
>>> squad_scores({"q1": "Paris", "q2": "in 1990"}, {"q1": ["paris"], "q2": ["1990", "in 1991"]})
{'exact_match': 50.0, 'f1': 83.33333333333333, 'questions': 2}
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Mapping, Sequence

__all__ = ["normalize_answer", "exact_match", "f1_score", "squad_scores"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    shared = sum((Counter(pred) & Counter(gold)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return float(max(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def f1_score(prediction: str, answers: Sequence[str]) -> float:
    return max(_f1(prediction, a) for a in answers)


def squad_scores(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]]) -> dict:
    """``{"exact_match", "f1", "questions"}`` over every question of ``answers`` (a missing prediction
    scores 0, as in the script)."""
    if not answers:
        raise ValueError("no questions to score")
    em = f1 = 0.0
    for qid, gold in answers.items():
        if not gold:
            raise ValueError(f"question {qid!r} has no gold answer")
        pred = predictions.get(qid)
        if pred is not None:
            em += exact_match(pred, gold)
            f1 += f1_score(pred, gold)
    n = len(answers)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "questions": n}
