"""The job's ONNX file: a classifier exported with a ``logits [batch, num_labels]`` output, without the
export warnings known to be harmless here, carrying its run's metadata (``passes.export.metadata``).

Known-harmless warnings (``KNOWN_HARMLESS``): the TorchScript trace of a Hugging Face encoder warns
about shape checks it turns into constants and about ``aten::index``; for these classifiers they do not
change the graph's result at other shapes, which the parity check then proves at several
(batch, sequence) shapes. They are dropped only after that check passed; every other warning is
re-emitted as it came, and if the export fails every warning is re-emitted (it may explain why).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Optional

# (category, file the warning is attributed to (suffix), message prefix, why it is harmless here)
KNOWN_HARMLESS = (
    ("TracerWarning", "transformers/masking_utils.py", "Converting a tensor to a Python boolean",
     "padding check kv_length > mask length: always false for encoder inputs"),
    ("TracerWarning", "transformers/integrations/sdpa_attention.py", "Converting a tensor to a Python boolean",
     "is_causal = q_length > 1 and mask is None: an encoder passes its attention mask"),
    ("UserWarning", "", "Exporting aten::index operator of advanced indexing",
     "indices come from arange/masks (never negative)"),
)


def known_harmless(w: warnings.WarningMessage) -> bool:
    name, path, text = type(w.message).__name__, w.filename.replace(os.sep, "/"), str(w.message)
    return any(name == c and path.endswith(f) and text.startswith(m) for c, f, m, _ in KNOWN_HARMLESS)


@contextlib.contextmanager
def quiet_known_warnings(dropped: list):
    """Record warnings; re-emit them afterwards, except (on success) the known-harmless ones, which are
    appended to ``dropped``."""
    seen: list = []
    ok = False
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield
        ok = True
    finally:
        for w in seen:
            if ok and known_harmless(w):
                dropped.append(f"{type(w.message).__name__}: {str(w.message)[:60]}")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def export_classifier(model, example: dict, path: str, atol: float = 1e-4):
    """``export_onnx`` of a sequence classifier: output ``logits`` [batch, num_labels], quiet on noise."""
    from passes.export import export_onnx
    dropped: list = []
    with quiet_known_warnings(dropped):
        report = export_onnx(model, example, path, atol=atol, output_name="logits", output_axes={0: "batch"})
    if dropped:
        report.notes.append(f"{len(dropped)} known-harmless export warning(s) not shown "
                            f"(leap_fx/run/onnx_export.py KNOWN_HARMLESS), parity verified")
    return report


def write_run_metadata(onnx_path: str, report: dict, tokenizer_dir: Optional[str] = None) -> dict:
    """Store the run's ``onnx_metadata`` in ``onnx_path``; the tokenizer is referenced relative to the
    ONNX file when it lies under the same folder, else by absolute path. Returns what was stored."""
    from leap_fx.run.onnx_eval import onnx_metadata
    from passes.export.metadata import write_metadata
    folder = os.path.dirname(os.path.abspath(onnx_path))
    tok = os.path.abspath(tokenizer_dir or os.path.join(folder, "tokenizer"))
    ref = os.path.relpath(tok, folder) if tok.startswith(folder + os.sep) else tok
    return write_metadata(onnx_path, onnx_metadata(report, ref, _tokenizer_class(tok)))


def _tokenizer_class(folder: str) -> Optional[str]:
    from passes.io import read_json
    path = os.path.join(folder, "tokenizer_config.json")
    return read_json(path, "tokenizer config").get("tokenizer_class") if os.path.isfile(path) else None


def export_command(model_dir: str, out: str, tokenizer: Optional[str], text: str, atol: float) -> str:
    """``leap-fx export``: a slim directory to ONNX. The file is written beside ``out`` and replaces it only
    once its parity is verified; the run's metadata travels with it when the slim folder's run has a
    report. Returns the line to print."""
    import math

    from leap_fx.run.score import tokenizer_for
    from passes.export import load_slim
    from passes.export.slim_io import MANIFEST
    from passes.io import read_json
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
    model = load_slim(model_dir)
    tok = tokenizer_for(model_dir, tokenizer)
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
