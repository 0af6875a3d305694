"""Labels that silently change the task: normalised spellings, and label columns that cannot be classes.

- ``normalise_label(s)``: Unicode NFC, invisible format characters (zero-width space / joiners, word
  joiner, BOM, soft hyphen: category ``Cf``) removed, surrounding whitespace stripped and inner runs
  of whitespace made one space. ``"neg\\u200b"`` and ``"neg"`` are one class.
- ``spelling_warnings``: the warnings for labels that were merged because they differed only by
  invisible characters, and for labels that still differ only in case (kept apart: say so).
- ``check_classification``: refuses a training label column that cannot be a classification task:
  continuous numbers (regression targets), nearly one class per row (the text column read as labels),
  more classes than a tenth of the rows. ``allow_many_classes=True`` (``--allow-many-classes``) overrides.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Optional

MIN_ROWS_PER_CLASS = 10   # more classes than rows / 10 cannot be learnt from these rows
CONTINUOUS_VALUES = 5     # at least this many distinct non-integer numbers: regression targets
OVERRIDE = "--allow-many-classes (allow_many_classes=True)"
_SPACE = re.compile(r"\s+")


def normalise_label(s: str) -> str:
    """NFC, no invisible format characters, whitespace stripped and collapsed (module doc)."""
    s = "".join(c for c in unicodedata.normalize("NFC", s) if unicodedata.category(c) != "Cf")
    return _SPACE.sub(" ", s).strip()


def spelling_warnings(path: str, spellings: dict[str, set[str]]) -> list[str]:
    """``spellings``: normalised label -> raw strings read. Warnings naming invisible and case variants."""
    out = []
    for name in sorted(spellings):
        raw = sorted({r.strip() for r in spellings[name]})  # plain surrounding spaces are not worth a word
        if len(raw) > 1:
            out.append(f"{path}: labels {', '.join(repr(r) for r in raw)} differ only by invisible characters or "
                       f"spacing: read as one label {name!r}")
    by_case: dict[str, list[str]] = {}
    for name in sorted(spellings):
        by_case.setdefault(name.casefold(), []).append(name)
    for names in by_case.values():
        if len(names) > 1:
            out.append(f"{path}: labels {', '.join(repr(n) for n in names)} differ only in case and are kept as "
                       f"{len(names)} classes; if they are one, write them alike in the file")
    return out


def _number(s: str) -> Optional[float]:
    try:
        return float(s)
    except ValueError:
        return None


def why_not_classes(names: list[str], counts: list[int]) -> Optional[str]:
    """Why labels ``names`` (with ``counts`` rows each) cannot be a classification task, or None."""
    n, k = sum(counts), len(names)
    numbers = [_number(x) for x in names]
    if all(v is not None for v in numbers):
        fractional = [v for v in numbers if not float(v).is_integer()]
        if len(fractional) >= CONTINUOUS_VALUES:
            return (f"they look like continuous values ({len(fractional)} distinct non-integer numbers, e.g. "
                    f"{', '.join(names[i] for i in range(min(3, k)))}): regression targets, not classes")
    if k > 2 and k > n / 2:
        return f"nearly every row is its own class ({k} labels for {n} rows): is it a text column?"
    if k > 2 and k > n / MIN_ROWS_PER_CLASS:
        return (f"{k} classes for {n} rows is more than one class per {MIN_ROWS_PER_CLASS} rows: too few rows to "
                f"learn each class")
    return None


def check_classification(split, where: str, label_column: str, text_columns: tuple = (),
                         allow_many_classes: bool = False) -> None:
    """Refuse training labels that cannot be a classification task (module doc), naming the override."""
    if label_column in text_columns:
        raise ValueError(f"{where}: the label column {label_column!r} is also the text column: every text would "
                         f"be its own class; pass the column holding the labels with --label-column")
    if allow_many_classes:
        return
    counts = [0] * len(split.label_names)
    for y in split.labels:
        counts[y] += 1
    why = why_not_classes(list(split.label_names), counts)
    if why is not None:
        raise ValueError(f"{where}: column {label_column!r} cannot be the labels of a classifier: {why}. Check "
                         f"--label-column, or pass {OVERRIDE} if it really is a {len(counts)}-class task")
