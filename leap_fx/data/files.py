"""User data: a CSV or JSONL file with a text column (optionally a text-pair column) and a label column."""
from __future__ import annotations

import csv
import json
import os
from typing import Optional, Sequence

from .batches import TextSplit

_READERS = {}


def _reader(*exts):
    def register(fn):
        for e in exts:
            _READERS[e] = fn
        return fn
    return register


@_reader(".csv", ".tsv")
def _read_csv(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t" if path.endswith(".tsv") else ","))


@_reader(".jsonl", ".json")
def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON ({err.msg}); expected one JSON object "
                                 f"per line (JSONL)") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
    return rows


def load_text_file(path: str, text_column: str = "text", text_pair_column: Optional[str] = None,
                   label_column: str = "label", labels: Optional[Sequence[str]] = None) -> TextSplit:
    """Read a labelled text file (``.csv``/``.tsv``/``.jsonl``) into a :class:`TextSplit`.

    ``labels`` fixes the label names and their order (label ``i`` = ``labels[i]``); values not in
    it are an error. Without it, the sorted distinct values become the label names. Integer labels
    in JSON are matched by their string form.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in _READERS:
        raise ValueError(f"unsupported data file type {ext!r} for {path!r}; use one of "
                         f"{sorted(_READERS)}")
    rows = _READERS[ext](path)
    if not rows:
        raise ValueError(f"data file {path!r} has no rows")
    needed = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    for i, row in enumerate(rows):
        missing = [c for c in needed if c not in row]
        if missing:
            where = "header" if ext in (".csv", ".tsv") else f"row {i + 1}"
            raise ValueError(f"{path!r}: column(s) {missing} not found in {where}; available: "
                             f"{sorted(row)}. Pass text_column=/label_column= to choose others.")
    values = [str(r[label_column]).strip() for r in rows]
    if labels is None:
        names = sorted(set(values))
    else:
        names = [str(x) for x in labels]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{path!r}: label value(s) {unknown[:10]} not in labels={names}; "
                             f"add them to labels or fix the file")
    index = {n: i for i, n in enumerate(names)}
    return TextSplit(texts=[str(r[text_column]) for r in rows], labels=[index[v] for v in values],
                     label_names=names,
                     text_pairs=None if text_pair_column is None else [str(r[text_pair_column]) for r in rows])
