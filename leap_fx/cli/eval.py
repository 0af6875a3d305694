"""``leap-fx eval``: score a model with its run's settings."""
from __future__ import annotations

from leap_fx.cli.command import Command

__all__ = ["Eval"]


class Eval(Command):
    name = "eval"
    help = "accuracy of an ONNX file, a run directory, a slim or an HF model dir"
    description = ("Score a model with its run's settings: label names, max length, text / pair / label columns "
                   "and tokenizer come from the ONNX metadata or the run's report.json; options given here win. "
                   "The run's own data is scored on the run's split (the report's figure); any other file is "
                   "scored whole.")

    @classmethod
    def add_arguments(cls, p) -> None:
        p.add_argument("model", help="model.onnx, a run directory (uses its model.onnx), a slim directory "
                                     "or a Hugging Face classifier directory")
        p.add_argument("--data", help="'rotten_tomatoes' or a .csv/.tsv/.jsonl file (default: the run's data)")
        p.add_argument("--split", choices=("all", "train", "validation", "test"),
                       help="rows to score: all (default for a file other than the run's data), or a split: "
                            "the run's own (default test for the run's data), else 80/10/10 with --split-seed")
        p.add_argument("--text-column", help="text column of a data file (default: the run's, else text)")
        p.add_argument("--text-pair-column", help="second text column for sentence pairs (default: the run's)")
        p.add_argument("--label-column", help="label column of a data file (default: the run's, else label)")
        p.add_argument("--tokenizer", help="tokenizer directory (default: the model folder's, else the run's "
                                           "tokenizer/; never another model's)")
        p.add_argument("--max-length", type=int, help="max tokens per example (default: the run's, else 64)")
        p.add_argument("--limit", type=int, help="score only a random subset of this size")
        p.add_argument("--split-seed", type=int, help="seed of the split / subset (default: the run's, else 0)")
        p.add_argument("--all-rows", action="store_true", help="score every row of the run's split (a --quick run "
                                                               "scored a random subset of it)")
        p.add_argument("--drop-invalid", action="store_true", help="skip data rows without text or label (counted) "
                                                                   "instead of refusing the file (default: the run's)")
        p.add_argument("--tsv-quotes", action="store_true", help="read quotes in .tsv files as CSV quoting "
                                                                 "(default: the run's)")
        p.add_argument("--allow-many-classes", action="store_true",
                       help="accept a label column that does not look like classes when reproducing the run's split "
                            "(default: the run's)")
        p.add_argument("--settings-from", choices=("onnx", "report"),
                       help="when model.onnx's metadata and the run's report.json disagree: use this one")
        p.add_argument("--trust-edited", action="store_true",
                       help="load a slim folder whose files changed since save_slim wrote them (edited on purpose)")

    @classmethod
    def run(cls, args) -> int:
        from leap_fx.run.commands.eval import (
            evaluate_command,  # import weight: torch, onnxruntime
        )
        for line in evaluate_command(args):
            print(line)
        return 0
