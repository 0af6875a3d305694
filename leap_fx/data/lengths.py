"""``max_length`` from the data: the 95th percentile of tokenised training lengths (pairs included),
capped by the model's position limit, unless the user sets it.

A fixed short length silently cuts sentence pairs (evidence + claim) and leaves a model at the
majority-class rate; a length taken from the data keeps 95% of the examples whole.
"""
from __future__ import annotations

import math
import random
from typing import Optional

PERCENTILE = 95
SAMPLE = 4000      # training rows tokenised to measure lengths (seeded sample of larger splits)
FLOOR = 8          # never below this (CLS + SEP + a few tokens)
NO_LIMIT = 10 ** 6  # tokenizers without a limit report ~1e30


def model_limit(model_config=None, tokenizer=None) -> Optional[int]:
    """The longest input the model takes: its position embeddings and the tokenizer's declared limit."""
    limits = [getattr(model_config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    if getattr(model_config, "model_type", None) in ("roberta", "xlm-roberta", "camembert") and limits[0]:
        limits[0] -= 2  # RoBERTa's positions start after padding_idx
    limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < NO_LIMIT]
    return min(limits) if limits else None


def token_lengths(split, tokenizer, seed: int = 0) -> list[int]:
    """Tokenised lengths (special tokens and the pair included) of up to ``SAMPLE`` rows of ``split``."""
    idx = list(range(len(split)))
    if len(idx) > SAMPLE:
        idx = sorted(random.Random(seed).sample(idx, SAMPLE))
    texts = [split.texts[i] for i in idx]
    pairs = None if split.text_pairs is None else [split.text_pairs[i] for i in idx]
    enc = tokenizer(texts, pairs, truncation=False, padding=False)
    return [len(ids) for ids in enc["input_ids"]]


def choose_max_length(split, tokenizer, limit: Optional[int], given: Optional[int] = None) -> dict:
    """``{"max_length", "chosen_from_data", "p95", "longest", "limit", "truncated_fraction", ...}``.

    ``given`` (the user's ``--max-length``) is kept, but refused above ``limit``.
    """
    if given is not None and limit is not None and given > limit:
        raise ValueError(f"--max-length {given} exceeds the model's position limit {limit}; pass at most {limit}")
    lens = sorted(token_lengths(split, tokenizer))
    p95 = lens[min(len(lens) - 1, max(0, math.ceil(PERCENTILE / 100 * len(lens)) - 1))]
    chosen = given if given is not None else max(FLOOR, min(p95, limit or p95))
    cut = sum(n > chosen for n in lens) / len(lens)
    return {"max_length": int(chosen), "chosen_from_data": given is None, "percentile": PERCENTILE,
            "p95": int(p95), "longest": int(lens[-1]), "limit": limit, "rows_measured": len(lens),
            "truncated_fraction": round(cut, 4), "pairs": split.text_pairs is not None}


def describe(info: dict) -> str:
    """One line for the log and the summary."""
    why = (f"{info['percentile']}th percentile of {info['rows_measured']} tokenised training examples"
           f"{', pairs included' if info['pairs'] else ''}" if info["chosen_from_data"] else "set by --max-length")
    limit = f"model limit {info['limit']}" if info["limit"] else "no model limit known"
    return (f"{info['max_length']} ({why}; longest {info['longest']}, {limit}; "
            f"{100 * info['truncated_fraction']:.1f}% of examples cut)")
