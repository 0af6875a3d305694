"""Everything a run needs, checked before ``--out`` is touched: the model loads (float32), the
tokenizer fits it, the data is tokenised at a ``max_length`` the model can take and the model accepts
the tokenizer's inputs. A run that would fail on any of these fails here, with ``--out`` untouched.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Optional

from torch import nn

from leap_fx.data import example_inputs
from leap_fx.data.lengths import choose_max_length, describe, model_limit
from leap_fx.hf.models import (
    default_model_dir,
    load_classifier,
    load_notes,
    load_tokenizer,
)
from leap_fx.train.checks import check_forward_inputs


@dataclass
class RunInputs:
    """The checked inputs: ``model`` is the injected model or, from a folder, its pretrained classifier."""

    opts: object                      # the resolved options with ``max_length`` filled in
    model: Optional[nn.Module]
    tokenizer: object
    model_dir: Optional[str]
    length: dict                      # choose_max_length(): chosen, p95, longest, limit, truncated_fraction
    notes: list[str] = field(default_factory=list)


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
    return RunInputs(opts, model, tokenizer, model_dir, length, notes)


def _tokenizer(load, model_dir: str):
    try:
        return load(model_dir)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"no usable tokenizer in {model_dir} ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}); save the model's tokenizer there "
                         f"(tokenizer.save_pretrained(dir))") from err


def check_num_labels(model, data) -> None:
    n = getattr(getattr(model, "config", None), "num_labels", None)
    if model is not None and n is not None and n != len(data.label_names):
        raise ValueError(f"the model has num_labels={n} but the data has {len(data.label_names)} labels "
                         f"{data.label_names}: build the classifier with num_labels={len(data.label_names)}")


def announce(inputs: RunInputs, verbose: bool) -> None:
    """Print the chosen length and the load notes (always to the log, and to the report)."""
    if verbose:
        print(f"[leap-fx] max_length {describe(inputs.length)}", flush=True)
    for note in inputs.notes:
        print(f"[leap-fx] note: {note}", flush=True)

