"""``leap-fx export SLIM_DIR --out FILE``: a saved slim model to ONNX, parity checked, metadata carried over."""
from __future__ import annotations

import os
from typing import Optional

from leap_fx.run.commands.eval import tokenizer_for
from leap_fx.run.onnx_export import export_classifier, write_run_metadata
from passes.export import load_slim
from passes.export.slim_io import MANIFEST
from passes.io import read_json


def export_command(model_dir: str, out: str, tokenizer: Optional[str], text: str, atol: float,
                   trust_edited: bool = False) -> str:
    """``leap-fx export``: a slim directory to ONNX. The file is written beside ``out`` and replaces it only
    once its parity is verified; the run's metadata travels with it when the slim folder's run has a
    report. A slim folder changed since ``save_slim`` wrote it is refused unless ``trust_edited``.
    Returns the line to print."""
    import math

    if not os.path.isfile(os.path.join(model_dir, MANIFEST)):
        raise ValueError(f"{model_dir!r} is not a slim model directory (no {MANIFEST}); pass a run's OUT/slim "
                         f"directory")
    if not (math.isfinite(atol) and atol > 0):
        raise ValueError(f"--atol {atol} must be a positive number (default: 1e-4)")
    target = os.path.abspath(out)
    if os.path.isdir(target):
        raise ValueError(f"--out {out} is a directory; give the ONNX file to write (e.g. {out}/model.onnx)")
    if not target.endswith(".onnx"):
        raise ValueError(f"--out {out} must end in .onnx")
    model = load_slim(model_dir, trust_edited=trust_edited)
    tok, _ = tokenizer_for(model_dir, tokenizer)
    example = dict(tok([text, text + " again"], padding=True, return_tensors="pt"))
    staging = os.path.join(os.path.dirname(target), f".{os.path.basename(target)[:-5]}.new.onnx")
    try:
        rep = export_classifier(model, example, staging, atol=atol)  # verified before it is at `staging`
    except Exception as err:
        failed, rejected = staging[:-5] + ".failed.onnx", target[:-5] + ".failed.onnx"
        if os.path.exists(failed):
            os.replace(failed, rejected)
        kept = f"{out} was left as it was" if os.path.exists(target) else f"{out} was not written"
        err.add_note(f"({kept}" + (f"; the rejected graph is {rejected})" if os.path.exists(rejected) else ")"))
        raise
    run = os.path.join(os.path.dirname(os.path.abspath(model_dir.rstrip("/"))), "report.json")
    if os.path.isfile(run):  # the run's label names, max length, tokenizer... travel with the file
        report = read_json(run, "run report")
        report["onnx"] = {**report.get("onnx", {}), "parity_max_abs_diff": max(rep.max_abs_diff.values())}
        write_run_metadata(staging, report, tokenizer or os.path.join(os.path.dirname(run), "tokenizer"))
    os.replace(staging, target)
    return (f"wrote {target} ({os.path.getsize(target)} bytes), onnxruntime parity max |diff| "
            f"{max(rep.max_abs_diff.values()):.2e} over shapes {sorted(rep.max_abs_diff)}")
