"""The run directory: what a run writes to ``--out``, and the rules for reusing it.

A new run refuses a directory that holds a run unless ``--overwrite`` (replace it) or ``--resume``
(continue it with the same options: ``options.json`` is compared, ``RESUME_FREE`` fields may differ).
A resumed run whose ``report.json`` exists is complete: its report is returned, nothing re-run.
"""
from __future__ import annotations

import os
import shutil
from typing import Optional

from leap_fx.run.fingerprint import KEY as CONTENT, check_same_content, run_content
from passes.io import atomic_dir, read_json, write_json

ARTIFACTS = ("report.json", "options.json", "model.onnx", "density.png", "curves.png", "structure.png",
             "slim",              "tokenizer", "train", "teacher", "model.failed.onnx")
# options that may differ between a run and its --resume (they do not change results)
RESUME_FREE = ("out", "overwrite", "resume", "verbose", "threads", "cache_dir", "use_cache",
               "keep_checkpoints")


def prepare_out_dir(out: str, opts) -> Optional[dict]:
    """Create ``out`` for a new run; refuse to mix runs. Returns the report of a finished run on resume."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a directory: choose a directory path")
    existing = [a for a in ARTIFACTS if os.path.exists(os.path.join(out, a))]
    if existing and opts.resume:
        previous = os.path.join(out, "options.json")
        if not os.path.isfile(previous):
            raise ValueError(f"{out} has no options.json, so it cannot be resumed: pass --overwrite "
                             f"to start over there, or choose another --out")
        recorded = read_json(previous, "options file")
        before = type(opts).from_dict(recorded).to_dict()
        now = opts.to_dict()
        diff = sorted(k for k in now if k not in RESUME_FREE and before.get(k) != now[k])
        if diff:
            raise ValueError(f"{out} holds a run with different options ({', '.join(diff)}): resume with "
                             f"the same options, or pass --overwrite / another --out")
        check_same_content(recorded.get(CONTENT), run_content(opts), out)  # data / model files unchanged
        report = os.path.join(out, "report.json")
        if os.path.isfile(report):
            return read_json(report, "report")
    elif existing and not opts.overwrite:
        raise ValueError(f"output directory {out} already holds a leap-fx run ({', '.join(existing)}): "
                         f"pass --overwrite to replace it, --resume to continue it, or choose another --out")
    elif existing:
        for name in existing:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "options.json"), {**opts.to_dict(), CONTENT: run_content(opts)})
    return None


def save_tokenizer(tokenizer, path: str) -> str:
    with atomic_dir(path) as tmp:
        tokenizer.save_pretrained(tmp)
    return path
