"""Rows of a task's data files: read (JSONL / JSON), checked one by one, split and subsampled.

Every task reads its files through ``checked_rows``: a row that breaks the task's rules is an error
naming the file and the line (``path:line: why; fix ...``), or, with ``drop_invalid``, skipped and
counted (``Rows.source``: rows read and skipped, the first skipped lines), as for text classification
(``leap_fx.data.files``). ``split_rows`` is the seeded 80/10/10 split of one file; ``subsample`` the
mode's budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from leap_fx.data.files import (  # noqa: F401 (jsonl_rows, require_file re-exported for the tasks)
    check_rows,
    jsonl_rows,
    require_file,
    text_of,
)
from leap_fx.data.splits import sample_positions, split_positions

__all__ = ["Rows", "checked_rows", "jsonl_rows", "split_rows", "subsample", "require_file", "SHOWN_SKIPS"]

SHOWN_SKIPS = 10


@dataclass
class Rows:
    """Valid rows of one file (task-specific dicts) and what reading it found."""

    rows: list
    source: dict = field(default_factory=dict)  # path, rows_read, rows_skipped, skipped (first lines)

    def __len__(self) -> int:
        return len(self.rows)


def checked_rows(path: str, raw: Iterable[tuple[int, object]], parse: Callable[[dict], tuple],
                 drop_invalid: bool = False) -> Rows:
    """``parse(row) -> (value, None)`` or ``(None, why)`` on every raw ``(line, row)``; see the module doc."""
    kept, skipped, read = check_rows(path, raw, parse, drop_invalid)
    return Rows(kept, {"path": path, "rows_read": read, "rows_skipped": len(skipped),
                       "skipped": skipped[:SHOWN_SKIPS]})


def split_rows(rows: Rows, seed: int, fractions=(0.8, 0.1, 0.1)) -> list[Rows]:
    """Seeded 80/10/10 split of one file's rows (file order kept within each part)."""
    where = f"{rows.source.get('path', 'the data')} has only {len(rows)} valid rows"
    parts = split_positions(len(rows), seed, where, fractions)
    return [Rows([rows.rows[i] for i in idx], rows.source) for idx in parts]


def subsample(rows: Rows, n: Optional[int], seed: int) -> Rows:
    """A seeded random subset of ``n`` rows (file order kept), or ``rows`` itself."""
    keep = sample_positions(len(rows), n, seed)
    return rows if keep is None else Rows([rows.rows[i] for i in keep], rows.source)
