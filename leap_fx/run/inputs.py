"""Everything a run needs, checked before ``--out`` is touched: the data (``load_run_data``), the model
loads (float32), the tokenizer fits it, the data is tokenised at a ``max_length`` the model can take and
the model accepts the tokenizer's inputs, a ``--teacher-model`` loads and fits the labels, and the
teacher cache is writable when a teacher will be cached. A run that would fail on any of these fails
here, with ``--out`` untouched. ``announce`` prints what the user should know before the run starts:
the length chosen, what loading the model changed, and the data's warnings and notes (labels merged,
text columns not read).
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field, replace
from typing import Optional

from torch import nn

from leap_fx.data import DataWarning, example_inputs, load_data
from leap_fx.data.lengths import choose_max_length, describe, model_limit
from leap_fx.hf.models import (
    check_model_dir,
    default_model_dir,
    load_classifier,
    load_finetuned,
    load_notes,
    load_tokenizer,
)
from leap_fx.train.checks import check_forward_inputs
from leap_fx.train.teacher import cache_root, check_cache_writable


@dataclass
class RunInputs:
    """The checked inputs: ``model`` is the injected model or, from a folder, its pretrained classifier."""

    opts: object                      # the resolved options with ``max_length`` filled in
    model: Optional[nn.Module]
    tokenizer: object
    model_dir: Optional[str]
    length: dict                      # choose_max_length(): chosen, p95, longest, limit, truncated_fraction
    notes: list[str] = field(default_factory=list)
    data_notes: dict = field(default_factory=dict)  # data_notes(): {"warnings": [...], "notes": [...]}


def load_run_data(opts):
    """The run's data (``load_data`` with ``--allow-many-classes``); its warnings and notes are not issued as
    Python warnings here: ``announce`` prints them and the summary repeats them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_data(opts, allow_many_classes=opts.allow_many_classes)


def data_notes(data) -> dict:
    """``{"warnings": [...], "notes": [...]}`` of the data files behind ``data``, each message once."""
    found: dict[str, list[str]] = {"warnings": [], "notes": []}
    for _, split in data.items():
        for kind, msgs in found.items():
            msgs += [m for m in (split.source or {}).get(kind, []) if m not in msgs]
    return found


def check_float32(model: Optional[nn.Module], what: str) -> None:
    """Refuse an injected model that is not float32 (or sits on the meta device) up front."""
    if model is None:
        return
    params = list(model.parameters())
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise ValueError(f"the {what} has parameters on the meta device ({meta[0]}, ...): it holds no weights; "
                         f"load it with real weights (e.g. from_pretrained without device_map='meta')")
    odd = sorted({str(p.dtype).replace("torch.", "") for p in params if p.is_floating_point()} - {"float32"})
    if odd:
        raise ValueError(f"the {what}'s parameters are {', '.join(odd)}: leap-fx trains and exports in float32; "
                         f"pass {what}.float()")


def check_out_path(out: str, model_dir: Optional[str]) -> None:
    """``--out`` may not be (or be inside) the model folder: a run would write among the model's files."""
    if model_dir is None:
        return
    out, model_dir = os.path.realpath(out), os.path.realpath(model_dir)
    if out == model_dir or out.startswith(model_dir + os.sep):
        raise ValueError(f"--out {out} is inside the model directory {model_dir}: choose another --out")


def with_max_length(opts, data, tokenizer, model_config=None) -> tuple[object, dict]:
    """``(opts with max_length, length info)``; the data is tokenised at that length."""
    info = choose_max_length(data.train, tokenizer, model_limit(model_config, tokenizer), opts.max_length)
    data.tokenize(tokenizer, info["max_length"])
    return replace(opts, max_length=info["max_length"]), info


def check_inputs(opts, data, model=None, tokenizer=None, teacher=None) -> RunInputs:
    """Load and check the model and tokenizer; choose ``max_length`` and tokenise the data (module doc)."""
    model_dir, notes = None, []
    if model is None:
        model_dir = opts.model or default_model_dir()
        check_out_path(opts.out, model_dir)
        check_model_dir(model_dir)
        tokenizer = tokenizer or _tokenizer(load_tokenizer, model_dir)
        model, _ = load_classifier(model_dir, num_labels=len(data.label_names), seed=opts.seed,
                                   label_names=list(data.label_names))
        notes = load_notes(model_dir, len(data.label_names))
    elif tokenizer is None:
        raise ValueError("run_prune(model=...) also needs tokenizer=... (the model's tokenizer)")
    check_float32(model, "model")
    check_float32(teacher, "teacher")
    check_num_labels(model, data)
    check_num_labels(teacher, data)
    opts, length = with_max_length(opts, data, tokenizer, getattr(model, "config", None))
    check_forward_inputs(model, example_inputs(data.train, 2), "the tokenizer's output")  # names the accepted
    if teacher is None and opts.teacher_model is not None:  # loaded again by the job: a bad one fails here
        load_finetuned(opts.teacher_model, data.label_names, tokenizer)
    if teacher is None and opts.teacher_model is None and model_dir is not None and opts.use_cache:
        check_cache_writable(cache_root(opts.cache_dir))  # the teacher is cached: refused before it is trained
    return RunInputs(opts, model, tokenizer, model_dir, length, notes, data_notes(data))


def _tokenizer(load, model_dir: str):
    """The folder's tokenizer; what ``load_tokenizer`` refuses (no vocabulary, custom code) keeps its own
    message, any other failure is named with the folder."""
    try:
        return load(model_dir)
    except ValueError:
        raise
    except (OSError, TypeError) as err:
        raise ValueError(f"no usable tokenizer in {model_dir} ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}); save the model's tokenizer there "
                         f"(tokenizer.save_pretrained(dir))") from err


def check_num_labels(model, data) -> None:
    n = getattr(getattr(model, "config", None), "num_labels", None)
    if model is not None and n is not None and n != len(data.label_names):
        raise ValueError(f"the model has num_labels={n} but the data has {len(data.label_names)} labels "
                         f"{data.label_names}: build the classifier with num_labels={len(data.label_names)}")


def announce(inputs: RunInputs, verbose: bool) -> None:
    """Print the chosen length (verbose), the load notes and the data's notes (always, to the log; the report
    keeps them) and the data's warnings (always, to stderr)."""
    if verbose:
        print(f"[leap-fx] max_length {describe(inputs.length)}", flush=True)
    for note in inputs.notes + inputs.data_notes.get("notes", []):
        print(f"[leap-fx] note: {note}", flush=True)
    for warning in inputs.data_notes.get("warnings", []):
        print(f"[leap-fx] WARNING: {warning}", file=sys.stderr, flush=True)

