"""Where leap-fx caches what it can re-use (teachers, latency tables, converted models): one root.

``cache_root(cache_dir)``: ``cache_dir`` if given, else ``$LEAP_FX_CACHE``, else ``~/.cache/leap-fx``;
``cache_path(kind, cache_dir)`` is the sub-folder of one kind (``teachers``, ``latency``, ``models``).
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["cache_root", "cache_path", "ENV"]

ENV = "LEAP_FX_CACHE"


def cache_root(cache_dir: Optional[str] = None) -> str:
    return cache_dir or os.environ.get(ENV) or os.path.join(os.path.expanduser("~"), ".cache", "leap-fx")


def cache_path(kind: str, cache_dir: Optional[str] = None) -> str:
    return os.path.join(cache_root(cache_dir), kind)
