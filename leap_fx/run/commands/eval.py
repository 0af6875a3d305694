"""``leap-fx eval``: score a model with the settings of the run that made it, on the rows the user means.

The run's settings (label names, max length, text / pair / label columns, data options, tokenizer)
come from the ONNX file's metadata (``onnx_eval.onnx_metadata``), else from the ``report.json`` of the
run folder the model sits in, else (a plain Hugging Face folder) from its config's ``id2label``. Every
setting given on the command line wins. Labels are indexed by the *run's* label map, and a file
holding a label the model has never seen is refused (its rows could only be scored wrong).

Rows: the run's own data reproduces the run's split (``--split test`` by default: the report's test
figure); any other file is scored whole (``--split all``) unless a split is asked for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Optional

from leap_fx.data import (
    load_data,
    load_rotten_tomatoes,
    load_text_file,
    split_file,
    subset,
)
from leap_fx.data.batches import TextSplit
from leap_fx.data.splits import RT_NAMES
from leap_fx.hf.models import load_tokenizer
from leap_fx.run.evaluate import DATA_OPTIONS, onnx_accuracy
from leap_fx.run.task_eval import task_eval
from leap_fx.spec.options import PruneOptions
from leap_fx.train import accuracy
from passes.export import load_slim
from passes.export.metadata import read_metadata
from passes.export.parity import ort_session
from passes.export.slim_io import MANIFEST
from passes.io import read_json

DEFAULT_MAX_LENGTH = 64


@dataclass
class RunInfo:
    """What eval knows about the run behind a model (``None``: unknown)."""

    source: str = "nothing (no metadata, report.json or label map found)"
    label_names: Optional[list] = None
    max_length: Optional[int] = None
    tokenizer: Optional[str] = None
    data: dict = field(default_factory=dict)  # onnx_eval.DATA_OPTIONS of the run


def _from_report(report_path: str) -> Optional[RunInfo]:
    if not os.path.isfile(report_path):
        return None
    rep = read_json(report_path, "run report")
    opts = rep.get("resolved_options") or rep.get("options") or {}
    folder = os.path.dirname(os.path.abspath(report_path))
    tok = os.path.join(folder, "tokenizer")
    return RunInfo(source=report_path, label_names=rep.get("data", {}).get("label_names"),
                   max_length=opts.get("max_length"), tokenizer=tok if os.path.isdir(tok) else None,
                   data={k: opts.get(k) for k in DATA_OPTIONS if k in opts})


def _from_onnx(path: str) -> Optional[RunInfo]:
    meta = read_metadata(path)
    if "label_names" not in meta:
        return None
    tok = meta.get("tokenizer")
    tok = os.path.join(os.path.dirname(os.path.abspath(path)), tok) if isinstance(tok, str) else None
    return RunInfo(source=f"{path} metadata", label_names=meta["label_names"], max_length=meta.get("max_length"),
                   tokenizer=tok if tok and os.path.isdir(tok) else None, data=dict(meta.get("data_options") or {}))


def _from_hf(folder: str) -> Optional[RunInfo]:
    cfg = read_json(os.path.join(folder, "config.json"), "model config")
    id2label = cfg.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
    if names and all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        names = None  # transformers' placeholders: not a label map
    return RunInfo(source=f"{folder}/config.json id2label", label_names=names) if names else None


def run_info(path: str) -> RunInfo:
    """The run behind ``path`` (an ``.onnx`` file, a slim folder or a Hugging Face folder)."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    found = _from_onnx(path) if path.endswith(".onnx") else None
    for report in (os.path.join(folder, "report.json"), os.path.join(os.path.dirname(folder), "report.json")):
        found = found or _from_report(report)
    if found is None and os.path.isfile(os.path.join(folder, "config.json")):
        found = _from_hf(folder)
    return found or RunInfo()


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


def eval_rows(args, info: RunInfo) -> tuple[TextSplit, str, str]:
    """``(rows, split name, description)`` for ``leap-fx eval`` from its arguments and the run."""
    run = info.data
    data = args.data or run.get("data") or "rotten_tomatoes"
    cols = {k: getattr(args, k) if getattr(args, k) is not None else run.get(k, default)
            for k, default in (("text_column", "text"), ("text_pair_column", None), ("label_column", "label"))}
    seed = args.split_seed if args.split_seed is not None else run.get("split_seed", 0)
    own = _same_file(data, run.get("data"))  # the run's data: its split, as the report scored it
    split_by_run = own and (args.data is None or data in RT_NAMES or run.get("validation_data") is None)
    name = args.split or ("test" if split_by_run or data in RT_NAMES else "all")
    if own and name != "all":
        fields = PruneOptions.__dataclass_fields__
        opts = PruneOptions(**{**{k: v for k, v in run.items() if k in fields}, **cols, "split_seed": seed})
        if args.limit is not None:
            opts = replace(opts, max_eval_examples=args.limit, max_train_examples=args.limit)
        rows = dict(load_data(opts).items())[name]
        source = run.get(f"{name}_data") if name in ("validation", "test") else None
        how = f"the run's {name} split ({source or f'{data}, seed {seed}'}), as its report scored it"
    else:
        splits = load_rotten_tomatoes(seed=seed) if data in RT_NAMES else None
        whole = _whole(splits) if splits else load_text_file(data, **cols)
        if name == "all":
            rows, how = whole, f"all rows of {data}"
        else:
            parts = dict(splits.items()) if splits else dict(zip(("train", "validation", "test"),
                                                                  split_file(whole, seed)))
            rows, how = parts[name], f"the {name} split (seed {seed}) of {data}"
        rows = subset(rows, args.limit, seed)
    return relabel(rows, info.label_names, data, info.source), name, how


def tokenizer_for(path: str, explicit: Optional[str]):
    """``explicit``, else the run's ``tokenizer/`` next to (or inside) ``path``, else MiniLM's."""
    if explicit:
        if not os.path.isdir(explicit):
            raise ValueError(f"--tokenizer {explicit!r} is not a directory")
        return load_tokenizer(explicit)
    path = os.path.abspath(path.rstrip("/"))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        return load_tokenizer(folder)
    for cand in (os.path.join(folder, "tokenizer"), os.path.join(os.path.dirname(folder), "tokenizer")):
        if os.path.isdir(cand):
            return load_tokenizer(cand)
    return load_tokenizer(None)


def evaluate_command(args) -> list[str]:
    """``leap-fx eval``: score the model at ``args.model`` on the rows ``eval_rows`` picks; the lines to print."""
    path = args.model
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.onnx")):
        path = os.path.join(path, "model.onnx")
    if not os.path.exists(path):
        raise ValueError(f"model {args.model!r} not found")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be at least 1 (or left out to score every row)")
    task_lines = task_eval(args, path)  # a token-classification / QA / image run: its task's metric
    if task_lines is not None:
        return task_lines
    info = run_info(path)
    rows, split, how = eval_rows(args, info)
    max_length = args.max_length or info.max_length or DEFAULT_MAX_LENGTH
    rows.tokenize(tokenizer_for(path, args.tokenizer or info.tokenizer), max_length)
    acc, kind = score(path, rows, info)
    return [f"{split} accuracy {acc:.4f} on {len(rows)} rows: {how} ({kind}, {path})",
            f"  max length {max_length}, labels {rows.label_names}; run settings from {info.source}"]


def score(path: str, rows: TextSplit, info: RunInfo) -> tuple[float, str]:
    """Accuracy of an ``.onnx`` file (onnxruntime) or a slim / HF folder (PyTorch) on tokenised ``rows``."""
    if path.endswith(".onnx"):
        sess = ort_session(path)
        dims = sess.get_outputs()[0].shape
        check_num_labels(dims[-1] if len(dims) == 2 else None, rows.label_names, info.source)
        return onnx_accuracy(sess, rows, desc="eval (onnxruntime)"), "onnxruntime"
    model = load_torch(path)
    check_num_labels(getattr(getattr(model, "config", None), "num_labels", None), rows.label_names, info.source)
    return accuracy(model, rows), "pytorch"


def load_torch(path: str):
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return load_slim(path)
    if os.path.isfile(os.path.join(path, "config.json")):
        from transformers import AutoModelForSequenceClassification
        return AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=False).eval()
    raise ValueError(f"{path!r} is neither an .onnx file, a run directory, a slim directory nor a "
                     f"Hugging Face model directory")


def check_num_labels(n_outputs: Optional[int], names: list, source: str) -> None:
    if isinstance(n_outputs, int) and n_outputs != len(names):
        raise ValueError(f"the model has {n_outputs} outputs but {len(names)} labels {names} (from {source}): "
                         f"evaluate it with the data it was trained on")
