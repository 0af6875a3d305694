"""``leap-fx eval`` of a language-model run (``leap_fx.run.lm_job``): perplexity of its ``model.onnx``
(the KV-cache graph, in onnxruntime; ``model.int8.onnx`` likewise) or of its ``slim/`` folder (PyTorch),
measured by the code the report uses (``leap_fx.tasks.causal_lm.metrics``) on blocks read, packed and
split as the job does (``leap_fx.tasks.causal_lm.data``). Block size, data options, split seed, caps and
threads come from the run's ``report.json``; the tokenizer is the run's ``tokenizer/`` (or ``--tokenizer``).

Blocks: the run's own data (no ``--data``, or the same file) is scored on the run's split (``--split test``
by default) capped as the job capped it (quick mode: a random subset of the blocks), so the figure is the
report's ``perplexity.slim``; ``--all-rows`` scores every block of the split, ``--limit N`` a random N of
them. Any other file is scored whole (``--split all``: its documents in file order, each followed by EOS,
cut into blocks of the run's block size, the last partial block dropped), or split by document as the
job splits (``--split train|validation|test``, ``--split-seed``) when asked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from leap_fx.hf.models import load_tokenizer
from leap_fx.methods.request import task_config
from leap_fx.spec.options import PruneOptions
from leap_fx.tasks.causal_lm.data import DEFAULT_CORPUS, FRACTIONS, RT_CORPUS, SPLITS, capped, load_lm_data
from leap_fx.tasks.causal_lm.metrics import perplexity_onnx, perplexity_torch
from leap_fx.tasks.causal_lm.onnx_lm import OnnxLM
from leap_fx.tasks.registry import build_task
from passes.export import load_slim
from passes.export.metadata import read_metadata
from passes.export.slim_io import MANIFEST
from passes.io import read_json, sha256_file

__all__ = ["LmRun", "lm_run", "lm_eval", "lm_perplexity"]

TASK = "causal-lm"
CORPORA = (DEFAULT_CORPUS, RT_CORPUS)  # named corpora of the task (no file)
WHOLE = tuple(1.0 if s == "test" else 0.0 for s in SPLITS)  # every document in one split, in file order
# flags of the classifier eval that mean nothing for a language model: refused, not silently ignored
NOT_FOR_LM = {"text_pair_column": "--text-pair-column", "label_column": "--label-column",
              "max_length": "--max-length (the block size is the run's)", "tsv_quotes": "--tsv-quotes",
              "allow_many_classes": "--allow-many-classes", "settings_from": "--settings-from (the settings are "
                                                                              "the run's report.json)"}
REPORT_KEYS = {("model.onnx", "test"): "slim", ("model.onnx", "validation"): "slim_validation",
               ("model.int8.onnx", "test"): "int8", ("slim", "test"): "slim_torch"}


@dataclass
class LmRun:
    """A language-model run folder and what of it is scored."""

    folder: str
    report: dict
    model: str   # an .onnx file, or the slim folder
    kind: str    # "onnxruntime" or "pytorch"

    @property
    def report_path(self) -> str:
        return os.path.join(self.folder, "report.json")

    def options(self) -> PruneOptions:
        """The run's resolved options (report.json), as the job used them."""
        stored = self.report.get("resolved_options")
        if not isinstance(stored, dict):
            raise ValueError(f"{self.report_path} has no resolved_options (edited, or not written by leap-fx): "
                             f"eval cannot know the run's block size and data")
        known = set(PruneOptions.__dataclass_fields__)
        return PruneOptions.from_dict({k: v for k, v in stored.items() if k in known})


def lm_run(path: str) -> Optional[LmRun]:
    """The language-model run behind ``path`` (its folder, its ``model.onnx`` / ``model.int8.onnx`` or its
    ``slim/``), or None when ``path`` is not one. A KV-cache graph without its run's ``report.json`` is refused:
    the block size and the data are the run's."""
    path = os.path.abspath(path.rstrip("/") or "/")
    slim = os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST))
    if os.path.isdir(path) and not slim:
        folder, model = path, os.path.join(path, "model.onnx")
    elif slim or path.endswith(".onnx"):
        folder, model = os.path.dirname(path), path
    else:
        return None
    report_path = os.path.join(folder, "report.json")
    if not os.path.isfile(report_path):
        if model.endswith(".onnx") and os.path.isfile(model) and "eos_token_ids" in read_metadata(model):
            raise ValueError(f"{model} is a language model (a KV-cache graph) without its run's report.json beside "
                             f"it: eval needs the run folder (the block size and data options are the run's); "
                             f"evaluate the folder the run wrote with --out")
        return None
    report = read_json(report_path, "run report")
    if not isinstance(report, dict) or report.get("task") != TASK:
        return None
    if not os.path.exists(model):
        raise ValueError(f"{folder} is a language-model run without {os.path.basename(model)} (deleted, or the run "
                         f"did not finish): nothing to evaluate")
    return LmRun(folder, report, model, "pytorch" if slim else "onnxruntime")


def _refuse_other_flags(args) -> None:
    given = [flag for name, flag in NOT_FOR_LM.items() if getattr(args, name, None) not in (None, False)]
    if given:
        raise ValueError(f"{', '.join(given)}: not an option of a causal-lm run's eval (its options: --data, "
                         f"--split, --text-column, --drop-invalid, --tokenizer, --limit, --all-rows, --split-seed, "
                         f"--trust-edited)")


def _recorded_data(folder: str) -> dict:
    """``{"path", "sha256"}`` of the run's data file as ``options.json`` recorded it when the run started."""
    path = os.path.join(folder, "options.json")
    if not os.path.isfile(path):
        return {}
    try:
        stored = read_json(path, "run options")
    except ValueError:  # a damaged options.json: the report's path alone
        return {}
    content = stored.get("content") if isinstance(stored, dict) else None
    data = content.get("data") if isinstance(content, dict) else None
    return data if isinstance(data, dict) else {}


def _run_data(run: LmRun, opts: PruneOptions) -> tuple[Optional[str], list[str]]:
    """``(the run's data: a file path or a corpus name, warnings)``; a file found under the absolute path the
    run recorded (options.json) wins over the options' (maybe relative) path; a file changed since is named."""
    data = opts.data
    if data is None or data in CORPORA:
        return data, []
    recorded = _recorded_data(run.folder)
    path = recorded.get("path") if isinstance(recorded.get("path"), str) and os.path.isfile(recorded["path"]) else data
    if not os.path.isfile(path):
        raise ValueError(f"the run's data {data!r} (resolved_options.data in {run.report_path}) is not found from "
                         f"{os.getcwd()} (moved, or relative to where the run started): pass --data FILE")
    sha = recorded.get("sha256")
    if isinstance(sha, str) and sha256_file(path) != sha:
        return path, [f"{path} changed since the run (its SHA-256 differs from the one in options.json): these "
                      f"blocks are not the report's"]
    return path, []


def _own(given: str, run: LmRun, opts: PruneOptions) -> tuple[bool, Optional[str], list[str]]:
    """``(is --data the run's own data, the run's data, warnings)``."""
    if given in CORPORA or opts.data in (None, *CORPORA):
        return given in CORPORA and opts.data in (None, *CORPORA), opts.data, []
    try:
        path, warns = _run_data(run, opts)
    except ValueError:  # the run's file is gone: --data cannot be it
        return False, None, []
    return os.path.samefile(given, path), path, warns


def _data_arg(data: str) -> str:
    if data in CORPORA:
        return data
    if os.path.isdir(data):
        raise ValueError(f"--data {data!r} is a folder: give a text file (.txt, .jsonl, .csv or .tsv)")
    if not os.path.isfile(data):
        raise ValueError(f"--data {data!r}: data file not found")
    return data


@dataclass
class Blocks:
    blocks: torch.Tensor
    split: str
    how: str
    as_report: bool        # the report's own blocks (the run's split, cap and reading)
    source: dict
    dropped: int           # tokens of the last partial block, not scored
    warnings: list


def lm_blocks(args, run: LmRun, opts: PruneOptions, tokenizer) -> Blocks:
    """The blocks ``leap-fx eval`` scores (module doc)."""
    task = build_task(task_config(opts))
    if args.data is None:
        (data, warns), own = _run_data(run, opts), True
    else:
        data = _data_arg(args.data)
        own, run_data, warns = _own(data, run, opts)
        data = run_data if own else data
    seed = args.split_seed if args.split_seed is not None else opts.split_seed
    reading = {"text_column": args.text_column or opts.text_column,
               "drop_invalid": bool(args.drop_invalid or opts.drop_invalid)}
    name = args.split or ("test" if own else "all")
    shown = data or DEFAULT_CORPUS
    if own and name != "all":
        mine = opts.replace(data=data, split_seed=seed, **reading)
        if args.all_rows or args.limit is not None:
            mine = mine.replace(max_train_examples=args.limit, max_eval_examples=args.limit)
        lm = task.load_data(mine, tokenizer)  # the job's reading, split and cap
        as_report = mine == opts.replace(data=data)
        cap = opts.max_train_examples if name == "train" else opts.max_eval_examples
        how = f"the run's {name} split ({shown}, by document, seed {seed}), " + (
            "every block" if args.all_rows else f"a random {args.limit} of its blocks" if args.limit is not None
            else "as its report scored it" if as_report else "capped as the run's")
        how += f" (at most {cap} blocks)" if cap and not args.all_rows and args.limit is None else ""
        return Blocks(lm.blocks[name], name, how, as_report, lm.source, lm.dropped_tokens[name], warns)
    size = task.config.block_size
    part = "test" if name == "all" else name
    try:
        lm = load_lm_data(tokenizer, data, size, seed, WHOLE if name == "all" else FRACTIONS, **reading)
    except ValueError as err:
        if name == "all" and "hold fewer than" in str(err):
            raise ValueError(f"{shown} holds fewer than block_size={size} tokens (the run's block size): give more "
                             f"text") from err
        raise
    blocks = capped(lm.blocks[part], args.limit, seed)
    how = (f"all of {shown} ({len(lm.documents[part])} documents in file order, packed)" if name == "all"
           else f"the {name} split of {shown} (by document, seed {seed})")
    how += f", a random {args.limit} of its blocks" if blocks.shape[0] < lm.blocks[part].shape[0] else ""
    return Blocks(blocks, name, how, False, lm.source, lm.dropped_tokens[part], warns)


def _check_vocab(blocks: torch.Tensor, vocab: Optional[int], tokenizer_dir: str) -> None:
    top = int(blocks.max()) if blocks.numel() else 0
    if vocab is not None and top >= vocab:
        raise ValueError(f"the tokenizer {tokenizer_dir} gives token id {top}, outside the model's vocabulary of "
                         f"{vocab}: use the run's tokenizer (its tokenizer/ folder)")


def lm_perplexity(args, run: LmRun) -> tuple[dict, Blocks, dict]:
    """``(result of perplexity_onnx / perplexity_torch, the blocks, settings used)`` for ``leap-fx eval``."""
    _refuse_other_flags(args)
    opts = run.options()
    tok_dir = args.tokenizer or os.path.join(run.folder, "tokenizer")
    if not os.path.isdir(tok_dir):
        raise ValueError(f"{'--tokenizer ' + repr(tok_dir) if args.tokenizer else run.folder} has no tokenizer "
                         f"folder: pass --tokenizer DIR, the tokenizer the run used")
    tokenizer = load_tokenizer(tok_dir)
    blocks = lm_blocks(args, run, opts, tokenizer)
    threads = int(opts.threads) if opts.threads else 2  # as the report measured (run/lm_report.py)
    if run.kind == "onnxruntime":
        lm = OnnxLM(run.model, threads=threads)
        _check_vocab(blocks.blocks, lm.vocab_size, tok_dir)
        result = perplexity_onnx(lm, blocks.blocks)
    else:
        model = load_slim(run.model, trust_edited=bool(getattr(args, "trust_edited", False)))
        _check_vocab(blocks.blocks, getattr(model.config, "vocab_size", None), tok_dir)
        result = perplexity_torch(model, blocks.blocks)
    return result, blocks, {"tokenizer": tok_dir, "threads": threads, "block_size": int(blocks.blocks.shape[1])}


def _report_line(run: LmRun, blocks: Blocks, value: float) -> list[str]:
    key = REPORT_KEYS.get((os.path.basename(run.model), blocks.split))
    ppl = run.report.get("perplexity") or {}
    if not blocks.as_report or key is None or not isinstance(ppl.get(key), (int, float)):
        return []
    ref = float(ppl[key])
    same = abs(value - ref) <= 1e-6 * abs(ref)
    return [f"  report.json perplexity.{key} {ref:.4f}: " + (
        "the same" if same else "DIFFERENT: the model, its tokenizer or the data changed since the run")]


def lm_eval(args, path: str) -> Optional[list[str]]:
    """``leap-fx eval`` of a language-model run (module doc): the lines to print, or None when ``path`` is none."""
    run = lm_run(path)
    if run is None:
        return None
    result, blocks, used = lm_perplexity(args, run)
    lines = [f"{blocks.split} perplexity {result['perplexity']:.4f} on {result['blocks']} blocks of "
             f"{used['block_size']} tokens ({result['tokens']} next tokens): {blocks.how} ({run.kind}, {run.model})",
             f"  mean nll {result['nll']:.6f} per token; tokenizer {used['tokenizer']}; run settings from "
             f"{run.report_path}", *_report_line(run, blocks, result["perplexity"])]
    src = blocks.source or {}
    if src.get("rows_skipped"):
        lines.append(f"  {src['path']}: skipped {src['rows_skipped']} rows (--drop-invalid), e.g. line "
                     f"{src['skipped'][0]['line']}: {src['skipped'][0]['reason']}")
    if blocks.split == "all" and blocks.dropped:
        lines.append(f"  note: the last {blocks.dropped} tokens (less than a block) are not scored")
    return lines + [f"  WARNING: {w}" for w in blocks.warnings]
