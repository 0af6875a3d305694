"""``leap-fx eval``: score a model with the settings of the run that made it, on the rows the user means.

The run's settings (label names, max length, text / pair / label columns, data options, tokenizer)
come from the ONNX file's metadata, else from the ``report.json`` of the run folder the model sits in,
else (a plain Hugging Face folder) from its config's ``id2label`` (``run_info.py``: metadata and report
that disagree are refused unless ``--settings-from`` chooses). Every setting given on the command line
wins. Labels are indexed by the *run's* label map, and a file holding a label the model has never seen
is refused (its rows could only be scored wrong).

Rows: the run's own data reproduces the run's split (``--split test`` by default: the report's test
figure, on the run's random subset in quick mode; ``--all-rows`` scores the whole split); any other file
is scored whole (``--split all``) unless a split is asked for. The tokenizer is the run's (or
``--tokenizer``), never another model's, and must know the words of the rows; the max length must fit
the model. The output names the majority-class rate of the rows scored, and warns when the accuracy is
not clearly above it.

That is a sequence-classification run. A language-model run (``report.json`` task ``causal-lm``) is
scored by ``leap_fx.run.lm_eval`` (perplexity), a token-classification, QA or image-classification run
by ``leap_fx.run.task_eval`` (its task's metric); ``leap-fx eval --help`` (``leap_fx.cli.eval``) lists
what each task measures and reads.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Optional

from leap_fx.data import (
    DataWarning,
    check_tokenizer,
    load_data,
    load_rotten_tomatoes,
    load_text_file,
    split_file,
    subset,
)
from leap_fx.data.batches import TextSplit
from leap_fx.data.lengths import model_limit
from leap_fx.data.splits import RT_NAMES
from leap_fx.hf.models import check_no_custom_code, has_tokenizer_files, load_tokenizer, quiet_from_pretrained
from leap_fx.run.commands.run_info import RunInfo, checked_max_length, run_info
from leap_fx.run.evaluate import onnx_accuracy
from leap_fx.run.lm_eval import lm_eval
from leap_fx.run.measure import clear_margin, majority_rate
from leap_fx.run.task_eval import task_eval
from leap_fx.spec.options import PruneOptions
from leap_fx.train import accuracy
from passes.export import load_slim
from passes.export.parity import ort_session
from passes.export.slim_io import MANIFEST

DEFAULT_MAX_LENGTH = 64
FILE_FLAGS = ("drop_invalid", "tsv_quotes")  # how a data file is read: flags of eval, else the run's


# -- which rows ---------------------------------------------------------------------------------
def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    if not a or not b:
        return False
    if a in RT_NAMES or b in RT_NAMES:
        return a in RT_NAMES and b in RT_NAMES
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _whole(splits) -> TextSplit:
    parts = [s for _, s in splits.items()]
    pairs = None if parts[0].text_pairs is None else [p for s in parts for p in s.text_pairs]
    return TextSplit(texts=[t for s in parts for t in s.texts], labels=[x for s in parts for x in s.labels],
                     label_names=list(splits.label_names), text_pairs=pairs)


def relabel(split: TextSplit, names: Optional[list], where: str, source: str) -> TextSplit:
    """``split`` indexed by the model's label map ``names``; labels the model never saw are refused."""
    if names is None:
        return split
    names = [str(n) for n in names]
    unseen = sorted(set(split.label_names) - set(names))
    if unseen:
        raise ValueError(f"{where} has label(s) {unseen[:10]} the model has never seen: it was trained on "
                         f"{names} (label map from {source}); drop those rows, or pass --label-column if "
                         f"the labels are in another column")
    old = [names.index(n) for n in split.label_names]
    return replace(split, labels=[old[i] for i in split.labels], label_names=names, features=None)


def _read_flags(args, run: dict) -> dict:
    """How data files are read (``--drop-invalid``, ``--tsv-quotes``): given here, else as the run read them."""
    return {k: bool(getattr(args, k, False) or run.get(k, False)) for k in FILE_FLAGS}


def eval_rows(args, info: RunInfo) -> tuple[TextSplit, str, str]:
    """``(rows, split name, description)`` for ``leap-fx eval`` from its arguments and the run."""
    run = info.data
    data = args.data or run.get("data") or "rotten_tomatoes"
    cols = {k: getattr(args, k) if getattr(args, k) is not None else run.get(k, default)
            for k, default in (("text_column", "text"), ("text_pair_column", None), ("label_column", "label"))}
    read = _read_flags(args, run)
    seed = args.split_seed if args.split_seed is not None else run.get("split_seed", 0)
    own = _same_file(data, run.get("data"))  # the run's data: its split, as the report scored it
    split_by_run = own and (args.data is None or data in RT_NAMES or run.get("validation_data") is None)
    name = args.split or ("test" if split_by_run or data in RT_NAMES else "all")
    if own and name != "all":
        fields = PruneOptions.__dataclass_fields__
        opts = PruneOptions(**{**{k: v for k, v in run.items() if k in fields}, **cols, **read, "split_seed": seed,
                               "allow_many_classes": bool(args.allow_many_classes or run.get("allow_many_classes"))})
        if args.limit is not None or args.all_rows:
            opts = replace(opts, max_eval_examples=args.limit, max_train_examples=args.limit)
        rows = dict(load_data(opts, allow_many_classes=opts.allow_many_classes).items())[name]
        source = run.get(f"{name}_data") if name in ("validation", "test") else None
        how = f"the run's {name} split ({source or f'{data}, seed {seed}'})" + (
            ", every row" if args.all_rows else "" if args.limit else ", as its report scored it")
    else:
        splits = load_rotten_tomatoes(seed=seed) if data in RT_NAMES else None
        whole = _whole(splits) if splits else load_text_file(data, **cols, **read)
        if name == "all":
            rows, how = whole, f"all rows of {data}"
        else:
            parts = dict(splits.items()) if splits else dict(zip(("train", "validation", "test"),
                                                                  split_file(whole, seed)))
            rows, how = parts[name], f"the {name} split (seed {seed}) of {data}"
        rows = subset(rows, args.limit, seed)
    return relabel(rows, info.label_names, data, info.source), name, how


def tokenizer_for(path: str, explicit: Optional[str]) -> tuple[object, str]:
    """``(tokenizer, its folder)``: ``explicit``, else the model folder's own, else the run's ``tokenizer/``
    next to (or inside) ``path``. Never another model's: none found is an error asking for ``--tokenizer``."""
    if explicit:
        if not os.path.isdir(explicit):
            raise ValueError(f"--tokenizer {explicit!r} is not a directory")
        return load_tokenizer(explicit), explicit
    path = os.path.abspath(path.rstrip("/"))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    for cand in (folder, os.path.join(folder, "tokenizer"), os.path.join(os.path.dirname(folder), "tokenizer")):
        if os.path.isdir(cand) and (has_tokenizer_files(cand) or os.path.isfile(os.path.join(cand,
                                                                                           "tokenizer_config.json"))):
            return load_tokenizer(cand), cand
    raise ValueError(f"no tokenizer found for {path} (no tokenizer files in {folder}, no tokenizer/ folder beside "
                     f"it): pass --tokenizer DIR, the tokenizer the model was trained with (a run's OUT/tokenizer)")


def _max_length(args, info: RunInfo) -> tuple[int, str]:
    """``(max length, where it came from)``: ``--max-length``, else the run's, else the default."""
    if args.max_length is not None:
        return checked_max_length(args.max_length, "--max-length"), "--max-length"
    if info.max_length is not None:
        return checked_max_length(info.max_length, info.source), info.source
    return DEFAULT_MAX_LENGTH, "the default"


def position_limit(path: str) -> Optional[int]:
    """Rows of the ONNX graph's position-embedding table (a 2-D initializer named ``*position_embeddings*``),
    else None (rotary / ALiBi models have none)."""
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    sizes = [int(i.dims[0]) for i in graph.initializer if "position_embeddings" in i.name and len(i.dims) == 2]
    return min(sizes) if sizes else None


LENGTH_FIX = "pass --max-length N with N the length the model was trained at"


def check_length(model, path: str, tokenizer, max_length: int, source: str) -> None:
    """``max_length`` (from ``source``) within the model's known limit (config, tokenizer, ONNX position table),
    else one line naming the length, where it came from and ``--max-length``."""
    limits = [model_limit(getattr(model, "config", None), tokenizer),
              position_limit(path) if path.endswith(".onnx") else None]
    limit = min([x for x in limits if x is not None], default=None)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length {max_length} (from {source}) exceeds the model's limit {limit}; {LENGTH_FIX} "
                         f"(at most {limit})")


def evaluate_command(args) -> list[str]:
    """``leap-fx eval``: score the model at ``args.model`` on the rows ``eval_rows`` picks; the lines to print."""
    path = args.model
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.onnx")):
        path = os.path.join(path, "model.onnx")
    if not os.path.exists(path):
        raise ValueError(f"model {args.model!r} not found")
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, f)) for f in (MANIFEST, "config.json")):
        why = "a report.json but no model.onnx" if os.path.isfile(os.path.join(path, "report.json")) else "no model.onnx"
        raise ValueError(f"{args.model!r} is not a run folder ({why}), a slim folder or a Hugging Face model folder: "
                         f"give the folder `leap-fx prune --out` wrote, its model.onnx or its slim/")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be at least 1 (or left out to score every row)")
    if args.limit is not None and args.all_rows:
        raise ValueError("--limit and --all-rows exclude each other: pick one")
    lm_lines = lm_eval(args, path)  # a language-model run: perplexity (run/lm_eval.py)
    if lm_lines is not None:
        return lm_lines
    task_lines = task_eval(args, path)  # a token-classification / QA / image run: its task's metric
    if task_lines is not None:
        return task_lines
    info = run_info(path, args.settings_from)
    with warnings.catch_warnings():  # the data's warnings and notes are printed below, with the result
        warnings.simplefilter("ignore", DataWarning)
        rows, split, how = eval_rows(args, info)
    tokenizer, tokenizer_dir = tokenizer_for(path, args.tokenizer or info.tokenizer)
    check_tokenizer(tokenizer, rows, tokenizer_dir)
    max_length, length_from = _max_length(args, info)
    model = ort_session(path) if path.endswith(".onnx") else load_torch(path, args.trust_edited)
    check_length(model, path, tokenizer, max_length, length_from)
    rows.tokenize(tokenizer, max_length)
    try:
        acc, kind = score(model, rows, info)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - onnxruntime's own error types, on one line with the settings used
        raise ValueError(f"{path} failed in {'onnxruntime' if path.endswith('.onnx') else 'PyTorch'} at max_length "
                         f"{max_length} (from {length_from}): {' '.join(str(err).split())[:200]}; {LENGTH_FIX}, "
                         f"or check --tokenizer") from err
    lines = [f"{split} accuracy {acc:.4f} on {len(rows)} rows: {how} ({kind}, {path})",
             f"  max length {max_length}, labels {rows.label_names}; run settings from {info.source}"
             + (f" ({info.why})" if info.why else ""), *guessing_lines(acc, rows)]
    src = rows.source or {}
    if src.get("rows_skipped"):
        lines.append(f"  {src['path']}: read {src['rows_read']} rows, skipped {src['rows_skipped']} (--drop-invalid), "
                     f"e.g. line {src['skipped'][0]['line']}: {src['skipped'][0]['reason']}")
    return lines + [f"  WARNING: {w}" for w in src.get("warnings", [])] + [f"  note: {n}" for n in src.get("notes", [])]


def guessing_lines(acc: float, rows: TextSplit) -> list[str]:
    """The majority-class rate of ``rows``, and a warning when ``acc`` is not clearly above it."""
    labels = list(rows.labels)
    if not labels:
        return []
    m, top = majority_rate(labels), rows.label_names[max(set(labels), key=labels.count)]
    need = m + clear_margin(m, len(labels))
    lines = [f"  majority-class rate {m:.4f} (the share of the most frequent label, {top!r})"]
    if acc < need:
        lines.append(f"  WARNING: {acc:.4f} is not clearly above the majority-class rate (needed > {need:.4f} on "
                     f"{len(labels)} rows): on these rows the model is no better than guessing")
    return lines


def score(model, rows: TextSplit, info: RunInfo) -> tuple[float, str]:
    """Accuracy of an onnxruntime session or a PyTorch model on tokenised ``rows``."""
    if not hasattr(model, "parameters"):
        dims = model.get_outputs()[0].shape
        check_num_labels(dims[-1] if len(dims) == 2 else None, rows.label_names, info.source)
        return onnx_accuracy(model, rows, desc="eval (onnxruntime)"), "onnxruntime"
    check_num_labels(getattr(getattr(model, "config", None), "num_labels", None), rows.label_names, info.source)
    return accuracy(model, rows), "pytorch"


def load_torch(path: str, trust_edited: bool = False):
    """A slim folder (``load_slim``: its checksums verified unless ``trust_edited``) or a Hugging Face folder."""
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return load_slim(path, trust_edited=trust_edited)
    if os.path.isfile(os.path.join(path, "config.json")):
        from transformers import AutoModelForSequenceClassification
        check_no_custom_code(path)  # a folder that names its own code is refused by name, never run
        return quiet_from_pretrained(AutoModelForSequenceClassification, path).eval()
    raise ValueError(f"{path!r} is neither an .onnx file, a run directory, a slim directory nor a "
                     f"Hugging Face model directory")


def check_num_labels(n_outputs: Optional[int], names: list, source: str) -> None:
    if isinstance(n_outputs, int) and n_outputs != len(names):
        raise ValueError(f"the model has {n_outputs} outputs but {len(names)} labels {names} (from {source}): "
                         f"evaluate it with the data it was trained on")
