"""``leap-fx eval``: score a model with its run's settings; what is scored follows the run's task (the
description below is the one place that says so, per task)."""
from __future__ import annotations

import argparse

from leap_fx.cli.command import Command

__all__ = ["Eval"]

SEQ, LM = "sequence classification", "causal-lm"
TOK, QA, IMG = "token-classification", "question-answering", "image-classification"


class Eval(Command):
    name = "eval"
    help = "score a run's model with its task's metric (accuracy, F1, EM, top-1, perplexity)"
    description = """\
Score a model with the settings of the run that made it: they come from the run's report.json
(and model.onnx's metadata); options given here win. MODEL is a run folder (its model.onnx, run
in onnxruntime), a model.onnx, a run's slim/ folder (PyTorch) or a Hugging Face classifier folder.
The metric, and what --data reads, follow the run's task:

  sequence-classification  accuracy, and the majority-class rate of the rows scored.
                           --data: 'rotten_tomatoes', or a .csv / .tsv / .jsonl file with a
                           text column (and a pair column) and a label column.
  token-classification     entity-level F1. --data: .jsonl (words + tags) or CoNLL-style text.
  question-answering       exact match and F1, as SQuAD scores them. --data: SQuAD .json, .jsonl.
  image-classification     top-1 accuracy. --data: a folder of class sub-folders, or a .jsonl.
  causal-lm                perplexity (model.onnx with its KV cache, or slim/) on blocks of the
                           run's block size, read, packed and split as the job does. --data: .txt
                           (documents separated by blank lines), .jsonl / .csv / .tsv
                           (--text-column).

Rows: without --data, the run's own data is scored on the run's test split, capped as the run
capped it (quick mode: its random subset), which gives the report's figure (causal-lm: its
perplexity.slim); --all-rows scores every row of that split, --limit N a random N of it. Any other
file is scored whole (--split all; causal-lm: its documents in file order, cut into blocks), or on
the part of it the job's split rule makes (--split train|validation|test, --split-seed); --limit N
scores a random N of those rows. Options marked [task, ...] apply to those tasks only: a
token-classification, question-answering or image-classification run refuses, by name, a flag that
does not apply to it."""

    @classmethod
    def add_arguments(cls, p) -> None:
        p.formatter_class = argparse.RawDescriptionHelpFormatter  # the task list above keeps its lines
        p.add_argument("model", help="a run folder (uses its model.onnx), a model.onnx, a run's slim/ folder or a "
                                     "Hugging Face classifier folder")
        p.add_argument("--data", help="the data to score, in the run's task's format (see above; default: the "
                                      "run's data)")
        p.add_argument("--split", choices=("all", "train", "validation", "test"),
                       help="what to score: all (default for a file other than the run's data), or a split: the "
                            "run's own (default test for the run's data), else the job's split of the file "
                            "with --split-seed")
        p.add_argument("--text-column", help=f"text column of a data file (default: the run's, else text; {TOK}: the "
                                             f"words column of a .jsonl) [{SEQ}, {LM}, {TOK}]")
        p.add_argument("--text-pair-column", help=f"second text column for sentence pairs (default: the run's) "
                                                  f"[{SEQ}]")
        p.add_argument("--label-column", help=f"label column of a data file (default: the run's, else label; {TOK}: "
                                              f"the tags column of a .jsonl; {IMG}: of a .jsonl) [{SEQ}, {TOK}, {IMG}]")
        p.add_argument("--tokenizer", help="tokenizer directory (default: the model folder's, else the run's "
                                           f"tokenizer/; never another model's) [{SEQ}, {LM}, {TOK}, {QA}]")
        p.add_argument("--max-length", type=int, help=f"max tokens per example (default: the run's, else 64) [{SEQ}, "
                                                      f"{TOK}, {QA}; causal-lm uses the run's block size]")
        p.add_argument("--limit", type=int, help="score only a random subset of this size (causal-lm: of blocks)")
        p.add_argument("--split-seed", type=int, help="seed of the split / subset (default: the run's, else 0)")
        p.add_argument("--all-rows", action="store_true", help="score every row (causal-lm: block) of the run's "
                                                               "split (a --quick run scored a random subset of it)")
        p.add_argument("--drop-invalid", action="store_true", help="skip invalid data rows (e.g. without text or "
                                                                   "label; counted) instead of refusing the file "
                                                                   "(default: the run's)")
        p.add_argument("--tsv-quotes", action="store_true", help="read quotes in .tsv files as CSV quoting "
                                                                 f"(default: the run's) [{SEQ}]")
        p.add_argument("--allow-many-classes", action="store_true",
                       help="accept a label column that does not look like classes when reproducing the run's split "
                            f"(default: the run's) [{SEQ}]")
        p.add_argument("--settings-from", choices=("onnx", "report"),
                       help=f"when model.onnx's metadata and the run's report.json disagree: use this one [{SEQ}]")
        p.add_argument("--trust-edited", action="store_true",
                       help="load a slim folder whose files changed since save_slim wrote them (edited on purpose) "
                            "(a slim/ folder; every task)")

    @classmethod
    def run(cls, args) -> int:
        from leap_fx.run.commands.eval import (
            evaluate_command,  # import weight: torch, onnxruntime
        )
        for line in evaluate_command(args):
            print(line)
        return 0
