"""A task's outputs on a whole split, in row order: from a torch model (``torch_outputs``) or an ONNX file
in onnxruntime (``onnx_outputs``), as numpy arrays under the output names the task exports.

Batches are trimmed to their longest row (``data.batches.trim``) for torch; per-token outputs are padded
back to the split's full width (zeros past each row's length), so both sides return the same shapes.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from leap_fx.data.batches import model_inputs, trim

__all__ = ["torch_outputs", "onnx_outputs", "session", "OutputFn"]

OutputFn = Callable[[object], Mapping[str, torch.Tensor]]  # model output -> {name: tensor}


def _pad(arr: np.ndarray, width: int) -> np.ndarray:
    if arr.ndim < 2 or arr.shape[1] == width:
        return arr
    pad = [(0, 0)] * arr.ndim
    pad[1] = (0, width - arr.shape[1])
    return np.pad(arr, pad)


def _width(tensors: Mapping[str, torch.Tensor]) -> int:
    mask = tensors.get("attention_mask")
    return int(mask.shape[1]) if mask is not None and mask.dim() == 2 else 0


@torch.no_grad()
def torch_outputs(model, tensors: Mapping[str, torch.Tensor], outputs: OutputFn, per_token: bool,
                  batch_size: int = 64) -> dict[str, np.ndarray]:
    """``outputs(model(**batch))`` over every row of ``tensors`` (eval mode, restored after)."""
    was = model.training
    model.eval()
    width, n = _width(tensors), int(next(iter(tensors.values())).shape[0])
    device = next(model.parameters()).device
    parts: dict[str, list[np.ndarray]] = {}
    try:
        for start in range(0, n, batch_size):
            batch = {k: v[start:start + batch_size] for k, v in tensors.items()}
            batch = trim(batch)  # per-token outputs are padded back below
            got = outputs(model(**{k: v.to(device) for k, v in model_inputs(batch).items()}))
            for name, t in got.items():
                arr = t.detach().float().cpu().numpy()
                parts.setdefault(name, []).append(_pad(arr, width) if per_token and width else arr)
    finally:
        model.train(was)
    return {k: np.concatenate(v) for k, v in parts.items()}


def session(path: str):
    """A CPU onnxruntime session with torch's thread count, threads sleeping while they wait."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_outputs(model, tensors: Mapping[str, torch.Tensor], names: Sequence[str],
                 batch_size: int = 64) -> dict[str, np.ndarray]:
    """The outputs ``names`` of an ONNX file (path or session) on every row of ``tensors``."""
    sess = session(model) if isinstance(model, str) else model
    inputs = [i.name for i in sess.get_inputs()]
    missing = [i for i in inputs if i not in tensors]
    if missing:
        raise ValueError(f"the ONNX model needs inputs {missing} that the data does not have (it has "
                         f"{sorted(tensors)})")
    n = int(next(iter(tensors.values())).shape[0])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for start in range(0, n, batch_size):
        feed = {i: tensors[i][start:start + batch_size].numpy() for i in inputs}
        for name, arr in zip(names, sess.run(list(names), feed)):
            parts[name].append(arr)
    return {k: np.concatenate(v) for k, v in parts.items()}
