"""Does the tokenizer fit the data? Tokenise a sample of the rows and refuse when most tokens come out as
the unknown token: a model folder with weights but no vocabulary (transformers then builds a 5-entry
vocabulary and every word becomes ``[UNK]``), or another model's tokenizer, trains on nothing and
ends at the majority-class rate with exit 0.
"""
from __future__ import annotations

import random

SAMPLE = 256          # rows tokenised for the check
MOST = 0.5            # refused when more than this fraction of the tokens is the unknown token


def unknown_fraction(tokenizer, split, sample: int = SAMPLE, seed: int = 0) -> tuple[float, int]:
    """``(fraction of tokens that are the unknown token, tokens counted)`` on up to ``sample`` rows
    (texts and pairs, special tokens not counted); ``(0.0, 0)`` for a tokenizer without an unknown token."""
    unk = tokenizer.unk_token_id
    if unk is None:  # byte-level vocabularies (GPT-2, ...): nothing is unknown
        return 0.0, 0
    idx = list(range(len(split)))
    if len(idx) > sample:
        idx = sorted(random.Random(seed).sample(idx, sample))
    texts = [split.texts[i] for i in idx] + ([split.text_pairs[i] for i in idx] if split.text_pairs else [])
    ids = [t for row in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in row]
    return (sum(t == unk for t in ids) / len(ids) if ids else 0.0), len(ids)


def check_tokenizer(tokenizer, split, where: str) -> float:
    """Refuse ``tokenizer`` (loaded from ``where``) when most tokens of ``split`` are unknown to it;
    returns the unknown fraction."""
    frac, count = unknown_fraction(tokenizer, split)
    if count and frac > MOST:
        source = (split.source or {}).get("path", "the data")
        raise ValueError(f"the tokenizer of {where} ({type(tokenizer).__name__}, {len(tokenizer)} entries) turns "
                         f"{frac:.0%} of the tokens of {source} into its unknown token {tokenizer.unk_token!r}: it is "
                         f"not this model's tokenizer, or the folder lacks its vocabulary. Save the model's own "
                         f"tokenizer there (tokenizer.save_pretrained(dir))")
    return frac
