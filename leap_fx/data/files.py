"""User data: a CSV, TSV or JSONL file with a text column (optionally a text-pair column) and a label column.

The rules (nothing changes the dataset silently):

- every row needs its text (not missing, null or blank) and its label (not missing, null, blank, or
  the ``nan`` / ``none`` / ``null`` a Python or pandas writer leaves for a missing value); a row that
  breaks them is an error naming the file and line, unless ``drop_invalid`` (``--drop-invalid``)
  skips it and counts it (``TextSplit.source``: rows read and skipped, the first skipped lines);
- a CSV/TSV row with more fields than the header (a delimiter inside an unquoted text) is invalid;
- numeric labels are normalised: ``1``, ``1.0``, ``"1"`` and ``"1.0"`` are one class ``"1"``;
- text labels are normalised (``labels.normalise_label``: NFC, invisible characters removed, spacing
  collapsed), with a warning naming labels that differed only by invisible characters or case;
- a column of text the user did not name (a forgotten ``--text-pair-column``) is named in a note;
- a CSV field may hold up to ``FIELD_LIMIT`` characters; a longer one is an error naming its line;
- TSV is read *without* quote interpretation (a ``"`` is a character of the text) unless
  ``tsv_quotes=True`` (``--tsv-quotes``); CSV follows the usual quoting rules;
- the file must be UTF-8 (a byte-order mark is allowed); a bad byte is named with its line.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from typing import Callable, Iterable, Iterator, Optional, Sequence

from .batches import TextSplit
from .labels import normalise_label, spelling_warnings

MISSING = ("", "nan", "none", "null")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
SHOWN_SKIPS = 10  # skipped lines listed in the report
READERS = {}
FIELD_LIMIT = 10_000_000  # characters in one CSV field (the csv module's default, 131072, cuts long documents)
TEXT_LIKE_WORDS = 3       # a column whose values average this many words or more is text


class DataWarning(UserWarning):
    """A data file was read, but something in it may not be what the user meant (also in ``TextSplit.source``)."""


def _reader(*exts):
    def register(fn):
        for e in exts:
            READERS[e] = fn
        return fn
    return register


def text_of(path: str) -> str:
    """The file decoded as UTF-8 (a BOM dropped); a bad byte raises naming its line."""
    if os.path.isdir(path):
        raise ValueError(f"data path {path!r} is a directory; pass a .csv, .tsv or .jsonl file")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: byte 0x{raw[err.start]:02x} is not UTF-8; re-save the file as "
                         f"UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


@_reader(".csv", ".tsv")
def _read_delimited(path: str, tsv_quotes: bool = False) -> Iterator[tuple[int, object]]:
    """``(line, dict or error text)`` per non-blank row; the header is checked for duplicates."""
    tsv = path.lower().endswith(".tsv")
    kw = dict(delimiter="\t", quoting=csv.QUOTE_MINIMAL if tsv_quotes else csv.QUOTE_NONE) if tsv else {}
    reader = csv.reader(io.StringIO(text_of(path), newline=""), **kw)
    limit = csv.field_size_limit(FIELD_LIMIT)  # the module's limit is process-wide: restored below
    try:
        yield from _delimited_rows(path, reader, tsv)
    finally:
        csv.field_size_limit(limit)


def _next_row(path: str, reader, start: int) -> Optional[list]:
    """The reader's next row (None at the end); a csv error names the line where the row starts."""
    try:
        return next(reader, None)
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            raise ValueError(f"{path}:{start}: a field longer than {FIELD_LIMIT:,} characters starts in this row "
                             f"(an unbalanced quote that swallows the rows after it?); fix its quoting") from None
        raise ValueError(f"{path}:{start}: {err}; fix the row") from None


def _delimited_rows(path: str, reader, tsv: bool) -> Iterator[tuple[int, object]]:
    header = _next_row(path, reader, 1)
    if header is None:
        return
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise ValueError(f"{path}:1: column(s) {dup} appear more than once in the header; rename them")
    line = reader.line_num
    while (fields := _next_row(path, reader, line + 1)) is not None:
        start, line = line + 1, reader.line_num
        if not fields or fields == [""]:
            continue
        if len(fields) > len(header):
            yield start, (f"{len(fields)} fields but the header has {len(header)} (a "
                          f"{'tab' if tsv else 'comma'} inside an unquoted text?)")
            continue
        yield start, dict(zip(header, fields))


@_reader(".jsonl", ".json")
def _read_jsonl(path: str, tsv_quotes: bool = False) -> Iterator[tuple[int, object]]:
    return jsonl_rows(path)


def jsonl_rows(path: str) -> Iterator[tuple[int, object]]:
    """``(line, dict or why it is not one)`` for every non-blank line of a JSONL file."""
    for n, line in enumerate(text_of(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield n, f"not valid JSON ({err.msg}); expected one JSON object per line (JSONL)"
            continue
        yield n, row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"


def label_value(v) -> Optional[str]:
    """The class name of a raw label (numbers normalised: ``1`` == ``1.0`` == ``"1"``), None if missing."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            return None
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    if not isinstance(v, str):
        return None
    s = normalise_label(v)
    if s.lower() in MISSING:
        return None
    return label_value(float(s)) if _NUMBER.match(s) else s


def _text_value(v) -> Optional[str]:
    if isinstance(v, bool) or v is None or isinstance(v, (list, dict)):
        return None
    s = str(v)
    return s if s.strip() else None


def _parse_row(row: dict, columns: dict) -> tuple[Optional[tuple], Optional[str]]:
    """``((text, pair, label, raw label), None)`` or ``(None, why the row is invalid)``."""
    missing = [c for c in columns.values() if c is not None and c not in row]
    if missing:
        return None, f"no {', '.join(repr(c) for c in missing)} value"
    text, pair = _text_value(row[columns["text"]]), None
    if text is None:
        return None, f"empty or null text in column {columns['text']!r}"
    if columns["pair"] is not None:
        pair = _text_value(row[columns["pair"]])
        if pair is None:
            return None, f"empty or null text in column {columns['pair']!r}"
    label = label_value(row[columns["label"]])
    if label is None:
        return None, f"missing, empty or null label in column {columns['label']!r} ({row[columns['label']]!r})"
    return (text, pair, label, row[columns["label"]]), None


def _check_header(path: str, rows: list, columns: dict) -> None:
    """A column missing from every row is a wrong column name, not bad rows: say which exist."""
    needed = [c for c in columns.values() if c is not None]
    dicts = [r for _, r in rows if isinstance(r, dict)]
    absent = [c for c in needed if dicts and all(c not in r for r in dicts)]
    if absent:
        where = "the header" if path.lower().endswith((".csv", ".tsv")) else "any row"
        avail = sorted({k for r in dicts for k in r})
        raise ValueError(f"{path!r}: column(s) {absent} not found in {where}; available: {avail}. "
                         f"Choose others with --text-column / --text-pair-column / --label-column")



def require_file(path: str, kinds: str) -> None:
    """``path`` is an existing file, else an error naming it (``kinds``: what to pass instead of a folder)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"data path {path!r} is a directory; pass {kinds}")


def check_rows(path: str, raw: Iterable[tuple[int, object]], parse: Callable[[dict], tuple],
               drop_invalid: bool = False) -> tuple[list, list[dict], int]:
    """``(kept, skipped, read)`` of ``parse(row) -> (value, None) | (None, why)`` on every raw ``(line, row)``
    (a row that is no dict is the reader's reason): an invalid row is an error naming ``path:line``, or with
    ``drop_invalid`` skipped and listed; no rows, or no valid row, is an error too. Every data reader (text
    classification here, the tasks' ``checked_rows``) goes through it."""
    kept, skipped, read = [], [], 0
    for line, row in raw:
        read += 1
        value, why = parse(row) if isinstance(row, dict) else (None, row)
        if value is not None:
            kept.append(value)
        elif drop_invalid:
            skipped.append({"line": line, "reason": why})
        else:
            raise ValueError(f"{path}:{line}: {why}; fix the row, or pass --drop-invalid (drop_invalid=True) to "
                             f"skip such rows (they are counted in the report)")
    if not read:
        raise ValueError(f"data file {path!r} has no rows")
    if not kept:
        raise ValueError(f"data file {path!r}: none of its {read} rows is valid (line {skipped[0]['line']}: "
                         f"{skipped[0]['reason']})")
    return kept, skipped, read

def load_text_file(path: str, text_column: str = "text", text_pair_column: Optional[str] = None,
                   label_column: str = "label", labels: Optional[Sequence[str]] = None,
                   drop_invalid: bool = False, tsv_quotes: bool = False) -> TextSplit:
    """Read a labelled text file (``.csv``/``.tsv``/``.jsonl``) into a :class:`TextSplit` (rules: module doc).

    ``labels`` fixes the label names and their order (label ``i`` = ``labels[i]``); a value not in it
    is an error naming its line. Without it, the sorted distinct values become the label names.
    ``TextSplit.source`` records the file, rows read and skipped and the first skipped lines, and
    (when there are any) ``warnings`` about label spellings and ``notes`` about unused text columns,
    which are also issued as :class:`DataWarning`.
    """
    require_file(path, "a .csv, .tsv or .jsonl file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in READERS:
        raise ValueError(f"unsupported data file type {ext!r} for {path!r}; use one of {sorted(READERS)}")
    rows = list(READERS[ext](path, tsv_quotes))
    if not rows:
        raise ValueError(f"data file {path!r} has no rows")
    columns = {"text": text_column, "pair": text_pair_column, "label": label_column}
    _check_header(path, rows, columns)
    known = None if labels is None else [label_value(x) or str(x) for x in labels]

    def parse(row: dict) -> tuple:
        parsed, why = _parse_row(row, columns)
        if parsed is not None and known is not None and parsed[2] not in known:
            return None, f"label value(s) [{parsed[2]!r}] not in labels={known} (the training labels)"
        return parsed, why
    kept, skipped, _ = check_rows(path, rows, parse, drop_invalid)
    names = known if known is not None else sorted({r[2] for r in kept})
    index = {n: i for i, n in enumerate(names)}
    source = {"path": path, "rows_read": len(rows), "rows_skipped": len(skipped),
              "skipped": skipped[:SHOWN_SKIPS], **_notes(path, rows, kept, columns)}
    return TextSplit(texts=[r[0] for r in kept], labels=[index[r[2]] for r in kept], label_names=names,
                     text_pairs=None if text_pair_column is None else [r[1] for r in kept], source=source)


def _notes(path: str, rows: list, kept: list, columns: dict) -> dict:
    """``{"warnings": [...], "notes": [...]}`` (only the non-empty ones), each also a DataWarning."""
    spellings: dict[str, set[str]] = {}
    for r in kept:
        if isinstance(r[3], str):
            spellings.setdefault(r[2], set()).add(r[3])
    found = {"warnings": spelling_warnings(path, spellings), "notes": _unused_text_columns(path, rows, columns)}
    for msg in found["warnings"] + found["notes"]:
        warnings.warn(msg, DataWarning, stacklevel=3)
    return {k: v for k, v in found.items() if v}


def _unused_text_columns(path: str, rows: list, columns: dict, sample: int = 200) -> list[str]:
    """Notes naming columns that hold text (several words a value, mostly distinct) the user did not name."""
    dicts = [r for _, r in rows[:sample] if isinstance(r, dict)]
    used = {c for c in columns.values() if c is not None}
    names = [c for c in dict.fromkeys(k for r in dicts for k in r) if c not in used]
    out = []
    for c in names:
        vals = [r.get(c) for r in dicts]
        strs = [v for v in vals if isinstance(v, str) and v.strip() and not _NUMBER.match(v.strip())]
        if len(strs) < 0.8 * len(vals) or len(set(strs)) < 0.5 * len(strs):
            continue
        if sum(len(v.split()) for v in strs) / len(strs) >= TEXT_LIKE_WORDS:
            out.append(f"{path}: column {c!r} also holds text (e.g. {strs[0][:40]!r}) and is not read; if the model "
                       f"should read it with {columns['text']!r}, pass --text-pair-column {c} "
                       f"(text_pair_column={c!r})")
    return out
