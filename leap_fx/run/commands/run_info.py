"""What ``leap-fx eval`` knows about the run behind a model: label names, max length, columns, tokenizer.

Three sources, checked before anything is scored:

- the ONNX file's metadata (``passes.export.metadata``), for an ``.onnx`` file;
- the ``report.json`` of the run folder the model sits in (or of its parent, for ``OUT/slim``);
- a plain Hugging Face folder's ``config.json`` ``id2label``.

When the ONNX metadata and the ``report.json`` beside it disagree on what changes the score (label names,
max length, columns), one of them was edited since the run: eval refuses and names both values, unless
``--settings-from onnx|report`` says which to use (then the output says which one was used and why).
Values are checked as the flags would be: a ``max_length`` that is not a whole number >= 2 is refused,
naming where it came from and ``--max-length``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from leap_fx.run.evaluate import DATA_OPTIONS
from passes.export.metadata import read_metadata
from passes.io import read_json

__all__ = ["RunInfo", "run_info", "checked_max_length", "SETTINGS_FROM"]

SETTINGS_FROM = ("onnx", "report")
COMPARED = ("label_names", "max_length", "text_column", "text_pair_column", "label_column")


@dataclass
class RunInfo:
    """What eval knows about the run behind a model (``None``: unknown)."""

    source: str = "nothing (no metadata, report.json or label map found)"
    label_names: Optional[list] = None
    max_length: object = None
    tokenizer: Optional[str] = None
    data: dict = field(default_factory=dict)  # evaluate.DATA_OPTIONS of the run
    why: str = ""                               # why this source was used when another one disagreed

    def compared(self) -> dict:
        return {"label_names": self.label_names, "max_length": self.max_length,
                **{k: self.data.get(k) for k in COMPARED[2:]}}


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


def _choose(onnx: RunInfo, report: RunInfo, settings_from: Optional[str]) -> RunInfo:
    """``onnx`` when it agrees with ``report``; else the one ``settings_from`` names, or a refusal."""
    a, b = onnx.compared(), report.compared()
    keys = COMPARED if onnx.data else COMPARED[:2]  # an older file's metadata has no data options
    diff = [k for k in keys if a[k] != b[k]]
    if not diff:
        return onnx
    shown = "; ".join(f"{k} {a[k]!r} in the metadata, {b[k]!r} in report.json" for k in diff)
    if settings_from is None:
        raise ValueError(f"{onnx.source} and {report.source} disagree ({shown}): one of them was edited since the "
                         f"run. Pass --settings-from report (the run's record) or --settings-from onnx (the file's "
                         f"metadata) to choose; `leap-fx export` of the run's slim folder writes the report's "
                         f"settings into a new ONNX file")
    chosen = onnx if settings_from == "onnx" else report
    chosen.why = f"--settings-from {settings_from}; they disagree: {shown}"
    return chosen


def run_info(path: str, settings_from: Optional[str] = None) -> RunInfo:
    """The run behind ``path`` (an ``.onnx`` file, a slim folder or a Hugging Face folder); see the module doc."""
    if settings_from is not None and settings_from not in SETTINGS_FROM:
        raise ValueError(f"--settings-from {settings_from!r}: use one of {SETTINGS_FROM}")
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    onnx = _from_onnx(path) if path.endswith(".onnx") else None
    report = None
    for candidate in (os.path.join(folder, "report.json"), os.path.join(os.path.dirname(folder), "report.json")):
        report = report or _from_report(candidate)
    found = _choose(onnx, report, settings_from) if onnx and report else onnx or report
    if found is None and os.path.isfile(os.path.join(folder, "config.json")):
        found = _from_hf(folder)
    return found or RunInfo()


def checked_max_length(value, source: str) -> int:
    """``value`` (a max length read from ``source``) if it is a whole number >= 2, else one line naming both."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"max_length {value!r} in {source} is not a whole number >= 2 (was the file edited?); "
                         f"pass --max-length N (the length the model was trained at)")
    return value
