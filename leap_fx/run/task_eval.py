"""``leap-fx eval`` for a task run (token classification, QA, image classification): the run's settings
come from its ``report.json`` (resolved options, label names, max length, stride, image preprocessing) and
its ``tokenizer/``; the model is its ``model.onnx`` (onnxruntime) or its ``slim/`` folder (PyTorch).

Rows, as the classifier's eval (``leap_fx.run.commands.eval``) picks them:

- the run's own data (no ``--data``, or the same file / named dataset) is scored on the run's split
  (``--split test`` by default), made by the job's rule (``SupervisedTask.read``: 80/10/10 by
  ``--split-seed``, default the run's, or the run's held-out files) and capped as the job capped it, which
  gives the report's figure; ``--all-rows`` scores every row of the split, ``--limit N`` a random N of it
  (the job's sampling, with the job's seeds);
- another file is scored whole (``--split all``), or on the part of it the job's split rule makes
  (``--split train|validation|test``, ``--split-seed``); ``--limit N`` scores a random N of those rows
  (seeded by the split seed). ``--split all`` of the run's own data is that file whole.

Every row must carry labels the model was trained on (the report's label names). The other options:
``--drop-invalid`` skips malformed rows; ``--tokenizer`` and ``--max-length`` (text tasks) replace the run's;
``--text-column`` / ``--label-column`` name the words / tags columns of a token-classification ``.jsonl``,
``--label-column`` the label column of an image ``.jsonl``; ``--trust-edited`` loads an edited ``slim/``.
A flag that means nothing for the run's task (or for the file given) is refused by name (``NOT_FOR``),
never ignored.
"""
from __future__ import annotations

import os
from typing import Optional

from leap_fx.hf.models import load_tokenizer
from leap_fx.methods.request import task_config
from leap_fx.spec.options import PruneOptions
from leap_fx.tasks import JOB_TASKS
from leap_fx.tasks.image_classification.preprocess import ImagePrep, image_prep
from leap_fx.tasks.registry import build_task
from leap_fx.tasks.rows import Rows, split_rows, subsample
from leap_fx.tasks.supervised import SPLITS, TaskData
from leap_fx.tasks.token_classification.encode import check_fast
from passes.export import load_slim
from passes.export.metadata import read_metadata
from passes.export.slim_io import MANIFEST
from passes.io import read_json

__all__ = ["task_run", "task_eval", "task_eval_rows", "NOT_FOR"]

TOKEN, QA, IMAGE = "token-classification", "question-answering", "image-classification"
OPTIONS = {TOKEN: "--data, --split, --split-seed, --limit, --all-rows, --drop-invalid, --tokenizer, --max-length, "
                  "--text-column and --label-column (.jsonl words / tags columns), --trust-edited (slim/)",
           QA: "--data, --split, --split-seed, --limit, --all-rows, --drop-invalid, --tokenizer, --max-length, "
               "--trust-edited (slim/)",
           IMAGE: "--data, --split, --split-seed, --limit, --all-rows, --drop-invalid, --label-column (.jsonl "
                  "label column), --trust-edited (slim/)"}
_SETTINGS = "the settings are the run's report.json"
_LABELS = "the label set is the run's (report.json)"
# task -> eval flag (argparse dest) that means nothing for it -> (flag, why)
NOT_FOR = {
    TOKEN: {"text_pair_column": ("--text-pair-column", "a row is one list of words"),
            "tsv_quotes": ("--tsv-quotes", "a .tsv file is read as CoNLL-style text, not as a quoted table"),
            "allow_many_classes": ("--allow-many-classes", _LABELS),
            "settings_from": ("--settings-from", _SETTINGS)},
    QA: {"text_column": ("--text-column", "questions are read from their SQuAD fields"),
         "text_pair_column": ("--text-pair-column", "the question and its context are the SQuAD fields"),
         "label_column": ("--label-column", "the answers are the SQuAD 'answers' field"),
         "tsv_quotes": ("--tsv-quotes", "QA files are SQuAD .json or .jsonl"),
         "allow_many_classes": ("--allow-many-classes", "QA has no classes"),
         "settings_from": ("--settings-from", _SETTINGS)},
    IMAGE: {"text_column": ("--text-column", "images have no text; the image column is the run's"),
            "text_pair_column": ("--text-pair-column", "images have no text"),
            "tokenizer": ("--tokenizer", "an image run has no tokenizer: its preprocessing is the run's"),
            "max_length": ("--max-length", "images are resized to the run's image size"),
            "tsv_quotes": ("--tsv-quotes", "image data is a folder or a .jsonl"),
            "allow_many_classes": ("--allow-many-classes", _LABELS),
            "settings_from": ("--settings-from", _SETTINGS)},
}


def task_run(path: str) -> Optional[tuple[str, dict]]:
    """``(run folder, report)`` when ``path`` (a run folder, its ``model.onnx`` or ``slim/``) is a task run."""
    path = os.path.abspath(path.rstrip("/"))
    folder = path if os.path.isdir(path) and not os.path.isfile(os.path.join(path, MANIFEST)) else os.path.dirname(path)
    report = os.path.join(folder, "report.json")
    if path.endswith(".onnx") and read_metadata(path).get("task") not in JOB_TASKS:
        return None
    if not os.path.isfile(report):
        return None
    rep = read_json(report, "run report")
    return (folder, rep) if isinstance(rep, dict) and rep.get("task") in JOB_TASKS else None


def _given(args, name: str):
    value = getattr(args, name, None)
    return None if value is False else value


def _is_jsonl(data: str) -> bool:
    return not os.path.isdir(data) and os.path.splitext(data)[1].lower() in (".jsonl", ".json")


def check_flags(args, task: str, data: Optional[str], slim: bool) -> None:
    """One ``ValueError`` line naming every flag given that means nothing for ``task`` (``NOT_FOR``), for the
    data scored (``data``: a column flag needs a ``.jsonl``) or for the model kind (``--trust-edited``)."""
    bad = [f"{flag} ({why})" for name, (flag, why) in NOT_FOR[task].items() if _given(args, name) is not None]
    columns = {"text_column": "--text-column", "label_column": "--label-column"}
    for name, flag in columns.items():
        if name in NOT_FOR[task] or _given(args, name) is None or data is None or _is_jsonl(data):
            continue
        shape = "CoNLL-style text (a word and its tag per line)" if task == TOKEN else \
            "a folder of class sub-folders (the label is the sub-folder's name)" if os.path.isdir(data) else \
            "a named dataset" if not os.path.exists(data) else "not a .jsonl file"
        bad.append(f"{flag} ({data} is {shape}: it has no named columns; {flag} names a .jsonl column)")
    if _given(args, "trust_edited") and not slim:
        bad.append("--trust-edited (it loads an edited slim/ folder; a .onnx model is run in onnxruntime: "
                   "evaluate the run's slim/ folder)")
    if bad:
        raise ValueError(f"{'; '.join(bad)}: not for a {task} run's eval (its options: {OPTIONS[task]})")


def _same_data(a: Optional[str], b: Optional[str]) -> bool:
    """Is ``a`` the data ``b`` (the same file or folder, or the same named dataset)?"""
    if not a or not b:
        return False
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return not os.path.exists(a) and not os.path.exists(b) and a.lower() == b.lower()


def _joined(parts: list[Rows]) -> Rows:
    return Rows([r for p in parts for r in p.rows], parts[0].source)


def task_eval_rows(task, opts: PruneOptions, args, labels: Optional[list]) -> tuple[Rows, str, str]:
    """``(rows, split name, how they were chosen)`` for ``leap-fx eval`` (module doc); ``opts``: the run's
    resolved options (with ``--drop-invalid`` applied), ``labels``: the run's label names (None: QA)."""
    run_data = opts.data
    data = args.data or run_data
    own = args.data is None or _same_data(args.data, run_data)
    held_out = opts.validation_data is not None
    name = args.split or ("test" if own and (args.data is None or not held_out) else "all")
    seed = args.split_seed if args.split_seed is not None else opts.split_seed
    if name == "all" and args.split_seed is not None and args.limit is None:
        raise ValueError(f"--split-seed {args.split_seed}: nothing to seed, {data} is scored whole (--split all); "
                         f"add --split train|validation|test or --limit N, or leave --split-seed out")
    limit = f", a random {args.limit} of its rows (--limit)" if args.limit is not None else ""
    if own and name != "all":
        mine = opts.replace(split_seed=seed)
        if args.limit is not None or args.all_rows:  # the job's sampling, with --limit as the cap (or none)
            mine = mine.replace(max_train_examples=args.limit, max_eval_examples=args.limit)
        rows = task.read(mine)[name]
        source = {"train": run_data, "validation": opts.validation_data, "test": opts.test_data}[name] \
            if held_out else f"{run_data}, seed {seed}"
        cap = opts.max_train_examples if name == "train" else opts.max_eval_examples
        how = f"the run's {name} split ({source})" + (
            ", every row (--all-rows)" if args.all_rows else limit or (
                (f", capped at {cap} rows as the run capped it" if cap else "") +
                ("" if seed != opts.split_seed else ", as its report scored it" if args.max_length is None
                 and args.tokenizer is None else ", the rows its report scored")))
    else:
        parts = task.named_data(data, seed)  # a named dataset comes split by the seed
        if name == "all":
            rows = _joined(parts) if parts is not None else task.read_file(data, opts)
            how = f"all rows of {data}"
        else:
            parts = parts if parts is not None else split_rows(task.read_file(data, opts), seed)
            rows, how = parts[SPLITS.index(name)], f"the {name} split (seed {seed}) of {data}"
        whole = len(rows)
        rows = subsample(rows, args.limit, seed)
        how += limit if len(rows) < whole else ""
    if labels is not None:
        task.check_known(rows, labels)
    return rows, name, how


def _processor(task, folder: str, report: dict, tokenizer_dir: Optional[str]):
    settings = report["data"]["settings"]
    if task.name != IMAGE:
        where = tokenizer_dir or os.path.join(folder, "tokenizer")
        if tokenizer_dir is not None and not os.path.isdir(tokenizer_dir):
            raise ValueError(f"--tokenizer {tokenizer_dir!r} is not a directory")
        tokenizer = load_tokenizer(where)
        check_fast(tokenizer, where)
        return tokenizer, where
    source = report["model"]["source"]
    if settings.get("preprocessing") == "preprocessor_config.json" and os.path.isdir(source):
        from transformers import AutoConfig  # import weight: transformers
        return image_prep(source, AutoConfig.from_pretrained(source, trust_remote_code=False)), None
    return ImagePrep(tuple(settings["image_size"]), int(settings["num_channels"]), list(settings["image_mean"]),
                     list(settings["image_std"]), float(settings["rescale_factor"])), None


def _onnx_sizes(path: str) -> tuple[Optional[int], Optional[int]]:
    """``(position-table rows, vocabulary rows)`` of an ONNX text model's embedding initializers (None: none)."""
    import onnx  # import weight: onnx
    graph = onnx.load(path, load_external_data=False).graph
    tables = [(i.name, int(i.dims[0])) for i in graph.initializer if len(i.dims) == 2]
    pos = [n for name, n in tables if "position_embeddings" in name]
    vocab = [n for name, n in tables if "word_embeddings" in name]
    return (min(pos) if pos else None), (min(vocab) if vocab else None)


def _check_text_model(model, onnx: Optional[str], tokenizer, tok_dir: str, max_length: Optional[int],
                      input_ids) -> None:
    """``--max-length`` within the model's position table; every token id inside its vocabulary."""
    from leap_fx.data.lengths import model_limit  # import weight: lazy (text runs only)
    config = getattr(model, "config", None)
    pos, vocab = _onnx_sizes(onnx) if onnx else (None, getattr(config, "vocab_size", None))
    limits = [x for x in (model_limit(config, tokenizer), pos) if x is not None]
    if max_length is not None and limits and max_length > min(limits):
        raise ValueError(f"--max-length {max_length} exceeds the model's limit {min(limits)}: pass at most "
                         f"{min(limits)} (or leave it out: the run's)")
    top = int(input_ids.max()) if input_ids.numel() else 0
    if vocab is not None and top >= vocab:
        raise ValueError(f"the tokenizer {tok_dir} gives token id {top}, outside the model's vocabulary of {vocab}: "
                         f"use the run's tokenizer (its tokenizer/ folder)")


def task_eval(args, path: str) -> Optional[list[str]]:
    """``leap-fx eval`` of a task run (module doc): the lines to print, or None when ``path`` is no task run."""
    found = task_run(path)
    if found is None:
        return None
    folder, report = found
    known = set(PruneOptions.__dataclass_fields__)
    opts = PruneOptions.from_dict({k: v for k, v in report["resolved_options"].items() if k in known})
    slim = os.path.isfile(os.path.join(path, MANIFEST))
    check_flags(args, report["task"], args.data or opts.data, slim)
    opts = opts.replace(drop_invalid=bool(args.drop_invalid or opts.drop_invalid))
    if args.max_length is not None:
        if args.max_length < 1:
            raise ValueError(f"--max-length {args.max_length}: must be at least 1 (or left out: the run's)")
        opts = opts.replace(max_length=args.max_length)
    if report["task"] == TOKEN:
        columns = {"tokens_column": args.text_column, "tags_column": args.label_column}
        opts = opts.replace(task_options={**opts.task_options, **{k: v for k, v in columns.items() if v}})
    elif args.label_column is not None:
        opts = opts.replace(label_column=args.label_column)
    task = build_task(task_config(opts))
    labels = report["data"].get("label_names")
    rows, name, how = task_eval_rows(task, opts, args, labels)
    processor, tok_dir = _processor(task, folder, report, args.tokenizer)
    model = load_slim(path, trust_edited=bool(args.trust_edited)) if slim else None
    onnx = None if slim else path if path.endswith(".onnx") else os.path.join(folder, "model.onnx")
    split = task.encode(TaskData({name: rows}, labels, args.data or opts.data), processor, opts,
                        getattr(model, "config", None))[0][name]
    if tok_dir is not None:
        _check_text_model(model, onnx, processor, tok_dir, args.max_length, split.tensors["input_ids"])
    if slim:
        scores, kind, shown = task.score(model, split), "pytorch", path
    else:
        scores, kind, shown = task.score_onnx(onnx, split), "onnxruntime", onnx
    metric = task.config.metric
    rest = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items() if k != metric)
    lines = [f"{name} {metric} {scores[metric]:.4f} on {len(split)} rows: {how} ({kind}, {shown})",
             f"  {rest}; task {task.name}; run settings from {os.path.join(folder, 'report.json')}"
             + (f"; tokenizer {tok_dir}" if args.tokenizer else "")
             + (f"; max length {args.max_length} (--max-length)" if args.max_length is not None else "")]
    src = rows.source or {}
    if src.get("rows_skipped"):
        lines.append(f"  {src['path']}: read {src['rows_read']} rows, skipped {src['rows_skipped']} (--drop-invalid), "
                     f"e.g. line {src['skipped'][0]['line']}: {src['skipped'][0]['reason']}")
    return lines
