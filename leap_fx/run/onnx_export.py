"""The job's ONNX file: a classifier exported with a ``logits [batch, num_labels]`` output, carrying its
run's metadata (``passes.export.metadata``). Export warnings known to be harmless (the TorchScript
trace's shape-check and ``aten::index`` notices) are dropped by ``export_onnx`` itself
(``passes/export/fallback.py`` ``HARMLESS``) once parity at several shapes passed.
"""
from __future__ import annotations

import os
from typing import Optional

from leap_fx.run.evaluate import onnx_metadata
from leap_fx.tasks.registry import build_task
from leap_fx.tasks.sequence_classification.config import SequenceClassificationConfig
from passes.export.metadata import write_metadata
from passes.io import read_json


def export_classifier(model, example: dict, path: str, atol: float = 1e-4):
    """``export_onnx`` of a sequence classifier (its task handler's ``export``): output ``logits``
    [batch, num_labels], quiet on noise."""
    return build_task(SequenceClassificationConfig()).export(model, example, path, atol)


def write_run_metadata(onnx_path: str, report: dict, tokenizer_dir: Optional[str] = None) -> dict:
    """Store the run's ``onnx_metadata`` in ``onnx_path``; the tokenizer is referenced relative to the
    ONNX file when it lies under the same folder, else by absolute path. Returns what was stored."""
    folder = os.path.dirname(os.path.abspath(onnx_path))
    tok = os.path.abspath(tokenizer_dir or os.path.join(folder, "tokenizer"))
    ref = os.path.relpath(tok, folder) if tok.startswith(folder + os.sep) else tok
    return write_metadata(onnx_path, onnx_metadata(report, ref, _tokenizer_class(tok)))


def _tokenizer_class(folder: str) -> Optional[str]:
    path = os.path.join(folder, "tokenizer_config.json")
    return read_json(path, "tokenizer config").get("tokenizer_class") if os.path.isfile(path) else None
