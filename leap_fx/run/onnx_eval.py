"""Accuracy of an exported ONNX model on a split, through onnxruntime (what the report and ``eval`` score)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from leap_fx.data.batches import as_tensors, iterate_batches


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


def onnx_predict_logits(model, data, batch_size: int = 64, output: Optional[str] = None) -> np.ndarray:
    """Logits of an ONNX model (path or ``onnxruntime.InferenceSession``) on every example of ``data``."""
    import onnxruntime as ort
    sess = model if isinstance(model, ort.InferenceSession) else ort.InferenceSession(
        str(model), providers=["CPUExecutionProvider"])
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
    for batch in iterate_batches(tensors, batch_size):
        n = int(batch["labels"].shape[0])
        feed = {i.name: _fit(batch[i.name].numpy(), i.shape) for i in inputs}
        logits = sess.run([out_name], feed)[0]
        results.append(logits[:n])
    return np.concatenate(results)


def onnx_accuracy(model, data, batch_size: int = 64, output: Optional[str] = None) -> float:
    """Accuracy of an ONNX model (path or session) on ``data``; input names come from the session."""
    labels = as_tensors(data)["labels"].numpy()
    logits = onnx_predict_logits(model, data, batch_size, output)
    return float((logits.argmax(-1) == labels).mean())
