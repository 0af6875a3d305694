"""``leap-fx``: prune | analyze | export | eval | generate. Bad input -> one line on stderr, exit code 2.

Each command is a class (``command.py``) whose help is written once; the parser of the command being
run is built in full, the others only by name. Nothing here imports torch before the arguments are
parsed: ``--help`` reads the plain-data configs (``leap_fx.spec``, ``leap_fx.methods``' configs).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Optional

from leap_fx.cli.analyze import Analyze
from leap_fx.cli.eval import Eval
from leap_fx.cli.export import Export
from leap_fx.cli.generate import Generate
from leap_fx.cli.prune import Prune
from leap_fx.env.threads import prefer_passive_waiting
from leap_fx.spec.options import PruneOptions

__all__ = ["main", "build_parser", "cli_words", "COMMANDS"]

COMMANDS = {c.name: c for c in (Prune, Analyze, Export, Eval, Generate)}
BAD_INPUT = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
             PermissionError, ModuleNotFoundError, json.JSONDecodeError)
FAILED = (RuntimeError, ArithmeticError)  # ParityError, NaN in training: not bad input


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage)
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def build_parser(command: Optional[str] = "all") -> argparse.ArgumentParser:
    """The parser; ``command``: build only that sub-command in full (the others by name and help, enough
    to list or reject them), ``"all"``: every one."""
    parser = _Parser(prog="leap-fx", description="Learned pruning -> fold -> strip -> slim ONNX.")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=_Parser)
    sub.required = True
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description)
        if command in ("all", name):
            cmd.add_arguments(p)
            p.set_defaults(func=cmd.run)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="print the full traceback of an error")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run a command; any error is one line on stderr (exit 2: bad input, 1: failed), ``--debug``
    (or ``LEAP_FX_DEBUG=1``) adds the traceback. Nothing else reaches the user as a raw traceback."""
    prefer_passive_waiting()  # before torch loads: OpenMP threads sleep, not spin (bench/threads.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(next((a for a in argv if a in COMMANDS), None)).parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("LEAP_FX_DEBUG") == "1"
    try:
        return args.func(args)
    except KeyboardInterrupt as err:  # what was kept of --out (the run's note), never a traceback
        notes = " ".join(getattr(err, "__notes__", []))
        print(f"leap-fx {args.command}: interrupted{' ' + notes if notes else ''}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place every error becomes one line
        if debug:
            import traceback
            traceback.print_exc()
        code, word = (2, "error") if isinstance(err, BAD_INPUT) else (1, "failed")
        known = isinstance(err, BAD_INPUT + FAILED)
        text = _one_line(err) if known else f"{type(err).__name__}: {_one_line(err)}"
        hint = "" if known or debug else " (--debug shows the traceback)"
        print(f"leap-fx {args.command}: {word}: {text}{hint}", file=sys.stderr)
        return code


def _one_line(err: BaseException) -> str:
    """The message (and notes) of ``err`` on one line, options spelled as CLI flags; an OSError names its file."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.strerror}: {err.filename}"
    else:
        text = str(err)
    text = " ".join([text, *getattr(err, "__notes__", [])])
    return cli_words(" ".join(text.split())) or type(err).__name__


CLI_NAMES = tuple(f for f in PruneOptions.__dataclass_fields__) + ("atol", "limit", "split", "tokenizer")


def cli_words(text: str) -> str:
    """Python spellings of options in a message -> the flags a CLI user types (``text_column=`` ->
    ``--text-column``), for the option names of the commands."""
    names = "|".join(sorted(CLI_NAMES, key=len, reverse=True))
    text = re.sub(rf"(?<![\w.-])({names})=(?=[\w'\"\[.-])", lambda m: "--" + m[1].replace("_", "-") + " ", text)
    return re.sub(rf"(?<![\w.-])({names})=", lambda m: "--" + m[1].replace("_", "-"), text)
