"""onnxruntime parity: run the exported graph and PyTorch on the same inputs, compare the outputs.

``ort_session`` opens a CPU session (1 thread; optimizations off unless asked, so the check sees the
graph as written); ``parity`` compares at several (batch, sequence) shapes made by
``inputs.make_inputs``; ``first_tensor`` picks the output that was exported.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from passes.export.inputs import InputSpec, make_inputs


class ParityError(RuntimeError):
    """onnxruntime and PyTorch disagree by more than ``atol``."""

    def __init__(self, message: str, max_abs_diff: float, failed_path: Optional[str] = None):
        super().__init__(message)
        self.max_abs_diff, self.failed_path = max_abs_diff, failed_path


def first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):  # HF ModelOutput is an OrderedDict of its non-None fields
        return first_tensor(next(iter(out.values())))
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    raise TypeError(f"cannot find an output tensor in {type(out).__name__}")


def ort_session(path: str, optimize_to: Optional[str] = None, threads: int = 1, level: Optional[str] = None):
    """A CPU onnxruntime session: ``threads`` intra-op threads, sequential; graph optimizations off
    (``level`` None: the parity check sees the graph as written), or ``level`` = ``"ORT_ENABLE_ALL"`` /
    ``"ORT_ENABLE_EXTENDED"`` / ``"ORT_ENABLE_BASIC"``; ``optimize_to`` writes the optimized graph."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if optimize_to is not None:
        level = level or "ORT_ENABLE_EXTENDED"
        so.optimized_model_filepath = optimize_to
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level or "ORT_DISABLE_ALL")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_outputs(session, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """First output of an onnxruntime session (a seam tests patch to simulate a bad export)."""
    return session.run(None, feeds)[0]


def parity(model: nn.Module, spec: InputSpec, session, shapes) -> dict[str, float]:
    diffs = {}
    for batch, seq in shapes:
        args = make_inputs(spec, batch, seq)
        with torch.no_grad():
            ref = first_tensor(spec.call(model, args)).float().numpy()
        feeds = {n: t.numpy() for n, t in zip(spec.names, args)}
        got = ort_outputs(session, feeds)
        if got.shape != ref.shape:
            raise ParityError(f"shape {got.shape} != PyTorch {ref.shape} at batch={batch} seq={seq}",
                              float("inf"), None)
        key = f"{batch}x{seq if seq is not None else spec.seq}" if spec.seq is not None else f"{batch}x-"
        diffs[key] = float(np.abs(got - ref).max()) if ref.size else 0.0
    return diffs
