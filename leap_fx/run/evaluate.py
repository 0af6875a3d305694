"""Accuracy of an exported ONNX model on a split, through onnxruntime (what the report and ``eval`` score),
and the metadata the job stores in ``model.onnx`` so a consumer needs nothing else (``onnx_metadata``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from leap_fx.data.batches import as_tensors, batches_per_epoch, iterate_batches
from leap_fx.env.progress import Progress
from leap_fx.tasks.registry import build_task
from leap_fx.tasks.sequence_classification.config import SequenceClassificationConfig
from leap_fx.tasks.sequence_classification.handler import DATA_OPTIONS, FILE_OPTIONS  # noqa: F401 (re-exported)


def _fit(arr: np.ndarray, shape, fill: int = 0) -> np.ndarray:
    """Pad/trim ``arr`` along dims the ONNX input declares static (ints); symbolic dims are kept."""
    for axis, dim in enumerate(shape[:arr.ndim]):
        if not isinstance(dim, int) or dim == arr.shape[axis]:
            continue
        if dim < arr.shape[axis]:
            arr = np.take(arr, range(dim), axis=axis)
        else:
            pad = [(0, 0)] * arr.ndim
            pad[axis] = (0, dim - arr.shape[axis])
            arr = np.pad(arr, pad, constant_values=fill)
    return arr


def scoring_session(path: str):
    """A CPU session with torch's thread count whose threads sleep while they wait (onnxruntime's spin
    waiting collapses on a busy machine like OpenMP's, ``leap_fx/run/threads.py``)."""
    import onnxruntime as ort
    import torch
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def onnx_predict_logits(model, data, batch_size: int = 64, output: Optional[str] = None,
                        desc: Optional[str] = None) -> np.ndarray:
    """Logits of an ONNX model (path or ``onnxruntime.InferenceSession``) on every example of ``data``;
    ``desc``: show progress (a bar on a terminal, else a line every 30 s) under that name."""
    import onnxruntime as ort
    sess = model if isinstance(model, ort.InferenceSession) else scoring_session(str(model))
    inputs = sess.get_inputs()
    tensors = as_tensors(data)
    missing = [i.name for i in inputs if i.name not in tensors]
    if missing:
        raise ValueError(f"ONNX model needs inputs {missing} that the data does not have "
                         f"(data has {sorted(tensors)})")
    out_name = output or sess.get_outputs()[0].name
    static_batch = inputs[0].shape[0] if inputs and inputs[0].shape else None
    if isinstance(static_batch, int):
        batch_size = static_batch  # graph exported with a fixed batch: feed exactly that many rows
    results = []
    progress = Progress(batches_per_epoch(tensors, batch_size), desc=desc or "", disable=desc is None,
                        end_line=False)
    for batch in iterate_batches(tensors, batch_size):
        n = int(batch["labels"].shape[0])
        feed = {i.name: _fit(batch[i.name].numpy(), i.shape) for i in inputs}
        logits = sess.run([out_name], feed)[0]
        results.append(logits[:n])
        progress.update(1)
    progress.close()
    return np.concatenate(results)


def onnx_accuracy(model, data, batch_size: int = 64, output: Optional[str] = None,
                  desc: Optional[str] = None) -> float:
    """Accuracy of an ONNX model (path or session) on ``data``; input names come from the session."""
    labels = as_tensors(data)["labels"].numpy()
    logits = onnx_predict_logits(model, data, batch_size, output, desc)
    return float((logits.argmax(-1) == labels).mean())


def onnx_metadata(report: dict, tokenizer: str = "tokenizer", tokenizer_class: Optional[str] = None) -> dict:
    """What ``model.onnx`` carries: the sequence-classification task's metadata (its handler's ``metadata``)."""
    return build_task(SequenceClassificationConfig()).metadata(report, tokenizer, tokenizer_class)
