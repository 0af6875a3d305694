"""``leap-fx analyze``: print the Plan of any model directory transformers can load."""
from __future__ import annotations

from leap_fx.cli.command import Command
from leap_fx.hf.tasks import TASKS

__all__ = ["Analyze"]


class Analyze(Command):
    name = "analyze"
    help = "print the attention / feed-forward families (the Plan) of a model"
    description = ("Trace any model directory transformers can load and print its Plan: the attention and "
                   "feed-forward families (per layer, the projection slices of every head and neuron group that "
                   "pruning masks and strip removes), and the sites it could not match. Use it to check that a "
                   "model of your own is understood before pruning it.")

    @classmethod
    def add_arguments(cls, p) -> None:
        p.add_argument("--model", help="any Hugging Face model directory (default: MiniLM-L6)")
        p.add_argument("--task", choices=sorted(TASKS), help="Auto class to load with (default: from "
                                                             "config.architectures)")
        p.add_argument("--text", default="leap-fx finds heads and neurons.",
                       help="example input text (models reading token ids, when the directory has a tokenizer)")
        p.add_argument("--input-shape", action="append", default=[], metavar="NAME=B,S,...",
                       help="an example input of this shape (repeatable), e.g. pixel_values=1,3,224,224")
        p.add_argument("--strict", action="store_true", help="fail if any attention / MLP site is not matched")
        p.add_argument("--json", action="store_true", help="print the Plan as JSON instead of a table")

    @classmethod
    def run(cls, args) -> int:
        from leap_fx.run.commands import analyze  # import weight: torch, transformers
        return analyze.run(args)
