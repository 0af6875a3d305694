"""Rows of a task's data files: read (JSONL / JSON), checked one by one, split and subsampled.

Every task reads its files through ``checked_rows``: a row that breaks the task's rules is an error
naming the file and the line (``path:line: why; fix ...``), or, with ``drop_invalid``, skipped and
counted (``Rows.source``: rows read and skipped, the first skipped lines), as for text classification
(``leap_fx.data.files``). ``split_rows`` is the seeded 80/10/10 split of one file; ``subsample`` the
mode's budget.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from leap_fx.data.files import jsonl_rows, text_of  # noqa: F401 (jsonl_rows re-exported for the tasks)

__all__ = ["Rows", "checked_rows", "jsonl_rows", "split_rows", "subsample", "require_file", "SHOWN_SKIPS"]

SHOWN_SKIPS = 10


@dataclass
class Rows:
    """Valid rows of one file (task-specific dicts) and what reading it found."""

    rows: list
    source: dict = field(default_factory=dict)  # path, rows_read, rows_skipped, skipped (first lines)

    def __len__(self) -> int:
        return len(self.rows)


def require_file(path: str, kinds: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"data path {path!r} is a directory; pass {kinds}")



def checked_rows(path: str, raw: Iterable[tuple[int, object]], parse: Callable[[dict], tuple],
                 drop_invalid: bool = False) -> Rows:
    """``parse(row) -> (value, None)`` or ``(None, why)`` on every raw ``(line, row)``; see the module doc."""
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
    return Rows(kept, {"path": path, "rows_read": read, "rows_skipped": len(skipped),
                       "skipped": skipped[:SHOWN_SKIPS]})


def split_rows(rows: Rows, seed: int, fractions=(0.8, 0.1, 0.1)) -> list[Rows]:
    """Seeded 80/10/10 split of one file's rows (file order kept within each part)."""
    n = len(rows)
    if n < 10:
        raise ValueError(f"{rows.source.get('path', 'the data')} has only {n} valid rows; need at least 10 to "
                         f"split 80/10/10 (or pass --validation-data and --test-data)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    return [Rows([rows.rows[i] for i in sorted(idx)], rows.source) for idx in (order[:a], order[a:b], order[b:])]


def subsample(rows: Rows, n: Optional[int], seed: int) -> Rows:
    """A seeded random subset of ``n`` rows (file order kept), or ``rows`` itself."""
    if n is None or len(rows) <= n:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), int(n)))
    return Rows([rows.rows[i] for i in keep], rows.source)
