"""``leap-fx analyze``: the Plan of any model directory transformers can load.

The model is loaded with the Auto class of its task (``config.architectures``, or ``--task``); the
example inputs are the tokenized ``--text`` when the model reads token ids and the directory has a
tokenizer, else built from the config (``leap_fx.hf.inputs.example_inputs``: ids, pixel values, audio
features or samples), or given as ``--input-shape NAME=B,S,...``. Sites analyze could not match are
printed as warnings on stderr (``--strict``: they are an error).
"""
from __future__ import annotations

import sys
from typing import Optional

from leap_fx.hf.inputs import _accepts, example_inputs, load_any, parse_shapes
from leap_fx.hf.models import default_model_dir, has_tokenizer_files, load_tokenizer
from passes.analyze import analyze


def _tokenized(path: str, model, text: str) -> Optional[dict]:
    """``--text`` through the directory's tokenizer (only the inputs the forward takes), else None."""
    if getattr(model, "main_input_name", "input_ids") != "input_ids" or not has_tokenizer_files(path):
        return None
    try:
        enc = load_tokenizer(path)([text], return_tensors="pt")
    except Exception as exc:  # a tokenizer that does not load: fall back to ids from the config
        print(f"leap-fx analyze: note: tokenizer in {path} not usable ({type(exc).__name__}); using random ids",
              file=sys.stderr)
        return None
    return {k: v for k, v in enc.items() if _accepts(model, k)}


def run(args) -> int:
    path = args.model or default_model_dir()
    model = load_any(path, args.task)
    shapes = parse_shapes(args.input_shape)
    example = (None if shapes else _tokenized(path, model, args.text)) or example_inputs(model, shapes=shapes)
    plan = analyze(model, example, strict=args.strict)
    print(plan.to_json() if args.json else plan.table())
    for u in plan.unmatched:
        print(f"leap-fx analyze: warning: {u} (left dense; --strict makes this an error)", file=sys.stderr)
    return 0
