"""onnxruntime parity: run the exported graph and PyTorch on the same inputs, compare the outputs.

``ort_session`` opens a CPU session (1 thread; optimizations off unless asked, so the check sees the
graph as written); ``parity`` compares at several (batch, sequence) shapes made by
``inputs.make_inputs``; ``first_tensor`` picks the output that was exported.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from passes.export.inputs import InputSpec, make_inputs


class ParityError(RuntimeError):
    """onnxruntime and PyTorch disagree by more than ``atol`` (``side``: "parity"), or one of them
    failed at a parity shape (``side``: "pytorch" or "onnxruntime")."""

    def __init__(self, message: str, max_abs_diff: float, failed_path: Optional[str] = None, side: str = "parity"):
        super().__init__(message)
        self.max_abs_diff, self.failed_path, self.side = max_abs_diff, failed_path, side


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
    so.log_severity_level = 4  # a failing run raises and is reported by the caller; no stray log lines
    if optimize_to is not None:
        level = level or "ORT_ENABLE_EXTENDED"
        so.optimized_model_filepath = optimize_to
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level or "ORT_DISABLE_ALL")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_outputs(session, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """First output of an onnxruntime session (a seam tests patch to simulate a bad export)."""
    return session.run(None, feeds)[0]


def _alternatives(spec: InputSpec, batch: int, seq) -> list:
    """``seq`` first; for a size derived from the example (a float factor), rounder sizes after it
    (a model may accept only multiples of its patch or window size)."""
    if not isinstance(seq, float) or spec.key(batch, seq).endswith("-"):
        return [seq]
    n, example = int(spec.key(batch, seq).split("x")[1]), int(spec.key(batch, None).split("x")[1])
    out = [seq]
    for k in (2, 4, 8, 16, 32):
        m = max(k, round(n / k) * k)
        if m not in out and m not in (n, example):  # the example's own size would prove nothing
            out.append(m)
    return out


def _reference(model: nn.Module, spec: InputSpec, batch: int, seq):
    """``(inputs, PyTorch output, key)`` at the first size the model accepts (see _alternatives). Each
    run uses a fresh copy: some forwards store what they saw (Swin shrinks its window after a small
    image), and every shape is compared with the model as it was given."""
    for i, size in enumerate(_alternatives(spec, batch, seq)):
        args = make_inputs(spec, batch, size)
        try:
            with torch.no_grad():
                ref = first_tensor(spec.call(copy.deepcopy(model), args)).float().numpy()
            return args, ref, spec.key(batch, size)
        except Exception as exc:  # the model itself rejects this shape: the axes are wrong, not the ONNX
            if i + 1 == len(_alternatives(spec, batch, seq)):
                shown = {n: tuple(t.shape) for n, t in zip(spec.names, args)}
                raise ParityError(f"PyTorch failed on inputs {shown} ({type(exc).__name__}: {_first_line(exc)}): "
                                  f"the model does not accept this shape, so its axes are not all dynamic; pass "
                                  f"dynamic_axes= (or shapes=) for what the model allows", float("inf"),
                                  side="pytorch") from exc
    raise AssertionError("unreachable")


def parity(model: nn.Module, spec: InputSpec, session, shapes) -> dict[str, float]:
    """Max |ORT - PyTorch| per parity shape; ParityError says which side failed where."""
    diffs = {}
    for batch, seq in shapes:
        args, ref, key = _reference(model, spec, batch, seq)
        shown = {n: tuple(t.shape) for n, t in zip(spec.names, args)}
        try:
            got = ort_outputs(session, {n: t.numpy() for n, t in zip(spec.names, args)})
        except Exception as exc:
            raise ParityError(f"onnxruntime failed on inputs {shown} ({type(exc).__name__}: {_first_line(exc)})",
                              float("inf"), side="onnxruntime") from exc
        if got.shape != ref.shape:
            raise ParityError(f"onnxruntime output shape {got.shape} != PyTorch {ref.shape} on inputs {shown}",
                              float("inf"), None)
        diffs[key] = float(np.abs(got - ref).max()) if ref.size else 0.0
    return diffs


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:400]
