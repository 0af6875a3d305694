"""Where leap-fx caches what it can re-use (teachers, latency tables, converted models): one root.

``cache_root(cache_dir)``: ``cache_dir`` if given, else ``$LEAP_FX_CACHE``, else ``~/.cache/leap-fx``;
``cache_path(kind, cache_dir)`` is the sub-folder of one kind (``teachers``, ``latency``, ``models``).
``entry_problem(path, meta, what, belongs)``: why a content-keyed entry must not be used (its metadata file
records the SHA-256 of every file in it; the teacher and GGUF caches check their entries with it).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from passes.io import read_json, sha256_file

__all__ = ["cache_root", "cache_path", "entry_problem", "ENV"]

ENV = "LEAP_FX_CACHE"


def cache_root(cache_dir: Optional[str] = None) -> str:
    return cache_dir or os.environ.get(ENV) or os.path.join(os.path.expanduser("~"), ".cache", "leap-fx")


def cache_path(kind: str, cache_dir: Optional[str] = None) -> str:
    return os.path.join(cache_root(cache_dir), kind)


def entry_problem(path: str, meta: str, what: str, belongs: Callable[[dict], Optional[str]]) -> Optional[str]:
    """Why the cache entry ``path`` must not be used (None: complete, every file matches the SHA-256 its
    metadata ``meta`` recorded). ``belongs(metadata)``: why the entry is not the one asked for (None: it is);
    ``what`` names the metadata in errors."""
    meta_file = os.path.join(path, meta)
    if not os.path.isfile(meta_file):
        return "missing"
    try:
        rec = read_json(meta_file, what)
    except ValueError as err:
        return str(err)
    files = rec.get("files") if isinstance(rec, dict) else None
    if not isinstance(files, dict):
        return f"{meta_file} records no checksums (written by another leap-fx version?)"
    other = belongs(rec)
    if other:
        return f"{meta_file} {other}"
    present = sorted(f for f in os.listdir(path) if f != meta)
    if present != sorted(files):
        return f"it holds the files {present}, its checksums name {sorted(files)}"
    bad = [f for f in sorted(files) if sha256_file(os.path.join(path, f)) != files[f]]
    return f"{', '.join(bad)} in it fail{'s' if len(bad) == 1 else ''} the recorded checksum" if bad else None
