"""Accuracy of a torch model or of an exported ONNX model (through onnxruntime) on a split."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..data.batches import as_tensors, iterate_batches, lengths, trim

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")


def model_inputs(batch: dict) -> dict:
    """The batch without ``labels`` (what the model's forward takes)."""
    return {k: v for k, v in batch.items() if k != "labels"}


def logits_of(output) -> torch.Tensor:
    """Logits from an HF ModelOutput, a tuple or a plain tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot find logits in model output of type {type(output).__name__}")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, data, batch_size: int = 128) -> torch.Tensor:
    """Logits of ``model`` on every example of ``data`` (in data order), in eval mode.

    Examples are run sorted by length (less padding after trimming) and put back in order.
    """
    tensors = as_tensors(data)
    lens = lengths(tensors)
    order = torch.argsort(lens, descending=True, stable=True) if lens is not None \
        else torch.arange(int(tensors["labels"].shape[0]))
    was_training = model.training
    model.eval()
    try:
        out = [logits_of(model(**model_inputs(trim({k: v[idx] for k, v in tensors.items()})))).float()
               for idx in order.split(batch_size)]
    finally:
        model.train(was_training)
    logits = torch.cat(out)
    result = torch.empty_like(logits)
    result[order] = logits
    return result


def accuracy(model: torch.nn.Module, data, batch_size: int = 128) -> float:
    """Fraction of examples whose argmax logit equals the label."""
    labels = as_tensors(data)["labels"]
    return float((predict_logits(model, data, batch_size).argmax(-1) == labels).float().mean())


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
