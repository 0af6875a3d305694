"""leap-fx's version, read once from the installed package's metadata (``pyproject.toml``)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION = version("leap-fx")
except PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0+unknown"
