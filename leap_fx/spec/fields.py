"""Help text and CLI spelling as dataclass field metadata: written once, read by the CLI and the docs.

``option(default, "help", flag="--no-cache", action=True)`` is ``dataclasses.field`` with metadata:

- ``help``: one line for ``--help`` (the CLI adds the method names that own a method option);
- ``flag``: a boolean field's command-line switch, and the value it sets (``("--no-cache", False)``);
- ``action``: the field says what to *do* (``overwrite``, ``resume``, ``out``), not how to prune; an
  options file never sets it (``PruneOptions.from_file``), only the command line does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

__all__ = ["option", "help_of", "flag_of", "is_action"]


def option(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
           flag: Optional[tuple[str, bool]] = None, action: bool = False) -> Any:
    """A dataclass field carrying its help text (and CLI flag / action marker) as metadata."""
    meta = {"help": help, "flag": flag, "action": action}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def help_of(f: dataclasses.Field) -> str:
    return str(f.metadata.get("help", ""))


def flag_of(f: dataclasses.Field) -> Optional[tuple[str, bool]]:
    return f.metadata.get("flag")


def is_action(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("action", False))
