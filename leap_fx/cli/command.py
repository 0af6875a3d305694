"""A CLI command is a class whose help is written once (as optimum's commands): ``name``, ``help``
(one line, shown in ``leap-fx --help``), ``description`` (``leap-fx NAME --help``), ``add_arguments``
and ``run``. The work itself is in ``leap_fx.run.commands`` (imported only when the command runs)."""
from __future__ import annotations

import argparse
from typing import ClassVar

__all__ = ["Command"]


class Command:
    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    @classmethod
    def run(cls, args: argparse.Namespace) -> int:
        raise NotImplementedError
