"""Which input axes may vary, read from the model itself: ``torch.export`` with ``Dim.AUTO`` on every axis.

An axis that the traced program keeps symbolic may vary; one it specialises (Whisper's fixed number
of frames, mel bins, a checked width) may not. Inputs of rank 4 and more (images, video) are probed
on their batch axis only: symbolic image sizes through windowed attention take torch.export minutes
(Swin: ~6 min for a 2-layer toy), and an ONNX graph traced at one image size rarely holds at others. Axes sharing a symbol share a name
(``input_ids`` and ``attention_mask`` have one ``sequence``; ``decoder_input_ids`` gets its own);
every dynamic axis 0 is ``batch``. ``range_constraints`` give each axis its allowed sizes (a
position-embedding table caps the sequence), used to pick the parity shapes.

The same trace is the export's control-flow detector: Python control flow on tensor *values*
(``if x.sum() > 0``) makes ``torch.export`` fail with a data-dependent guard, and an ONNX graph
would silently hard-code the branch the example took, so that is :class:`ControlFlowError`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import torch

DATA_DEPENDENT = re.compile(r"data.dependent|GuardOnDataDependent|DataDependentOutput", re.I)


class ControlFlowError(ValueError):
    """The forward branches on tensor values: an ONNX trace would be wrong on the other branch."""


@dataclass
class Axes:
    """Inferred dynamic axes: ``{input: {axis: label}}``, the output's, and ``label -> (min, max)``."""

    inputs: dict[str, dict[int, str]]
    output: dict[int, str]
    limits: dict[str, tuple[int, Optional[int]]] = field(default_factory=dict)
    note: str = ""


def _probe_tensors(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Batch 1 would be specialised by torch.export (0/1 sizes): probe with 2 rows instead."""
    return [t.repeat(2, *([1] * (t.dim() - 1))) if t.dim() and t.shape[0] == 1 else t for t in tensors]


def _static(d) -> bool:
    """A concrete size (an int, or a SymInt export specialised to a constant)."""
    from torch.fx.experimental.symbolic_shapes import free_symbols
    return isinstance(d, int) or not free_symbols(d)


def _label(sym: str, name: str, axis: int, labels: dict[str, str]) -> str:
    if sym not in labels:
        taken = set(labels.values())
        labels[sym] = "batch" if axis == 0 else ("sequence" if axis == 1 and "sequence" not in taken
                                                 else f"{name}_dim{axis}")
    return labels[sym]


def infer_axes(wrapper: torch.nn.Module, names: list[str], tensors: list[torch.Tensor]) -> Axes:
    """Trace ``wrapper(*tensors)`` with every axis ``Dim.AUTO``; raise ControlFlowError on value branches."""
    from torch.export import Dim
    probe = _probe_tensors(tensors)
    shapes = (tuple({i: Dim.AUTO for i in (range(t.dim()) if t.dim() < 4 else range(1))} for t in probe),)
    try:
        with torch.no_grad():
            ep = torch.export.export(wrapper, tuple(probe), dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # classify: value-dependent control flow, or a model export cannot trace
        text = f"{type(exc).__name__}: {exc}"
        if DATA_DEPENDENT.search(text):
            where = _user_frame(text)
            raise ControlFlowError(
                f"the forward branches on tensor values (data-dependent Python control flow{where}); an ONNX "
                f"graph records only the branch the example inputs took and would be wrong on the other. "
                f"Rewrite the branch with torch.where / torch.cond, or export with allow_control_flow=True "
                f"if the branch can never change for real inputs (parity is then checked on example-like "
                f"inputs only). torch.export said: {str(exc).strip().splitlines()[0][:300]}") from exc
        raise
    users = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]
    labels: dict[str, str] = {}
    inputs: dict[str, dict[int, str]] = {}
    for name, node in zip(names, users):
        for axis, d in enumerate(node.meta["val"].shape):
            if not _static(d):
                inputs.setdefault(name, {})[axis] = "batch" if axis == 0 else _label(str(d), name, axis, labels)
                labels.setdefault(str(d), inputs[name][axis])
    out_node = next(n for n in ep.graph.nodes if n.op == "output").args[0]
    first = out_node[0] if isinstance(out_node, (list, tuple)) else out_node
    output = {}
    for axis, d in enumerate(first.meta["val"].shape):
        if not _static(d):
            output[axis] = labels.get(str(d), "batch" if axis == 0 else f"output_dim{axis}")
    limits = {}
    for sym, rng in ep.range_constraints.items():
        label = labels.get(str(sym))
        if label is not None:
            hi = None if not str(rng.upper).lstrip("-").isdigit() else int(rng.upper)
            lo = int(rng.lower) if str(rng.lower).isdigit() and int(rng.lower) > 2 else 1
            limits[label] = (lo, hi)
    return Axes(inputs, output, limits)


def _user_frame(text: str) -> str:
    """`` at file.py:123`` from a torch.export error text, when it names a user frame."""
    m = re.search(r'File "([^"]+)", line (\d+)', text) or re.search(r"(\S+\.py):(\d+)", text)
    return f" at {m.group(1)}:{m.group(2)}" if m else ""
