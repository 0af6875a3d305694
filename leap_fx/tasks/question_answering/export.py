"""``model.onnx`` of a QA model with two outputs, ``start_logits`` and ``end_logits`` ``[batch, sequence]``.

``export_onnx`` writes one output: the model is exported through ``SpanLogits`` (start and end stacked,
``[batch, sequence, 2]``, parity checked at several shapes), then the graph's output is split by two
``Gather`` nodes (index 0 and 1 on the last axis: exact) into the two named outputs, and the file is
checked again in onnxruntime against the PyTorch model.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from leap_fx.tasks.predict import session
from leap_fx.tasks.question_answering.loss import span_logits
from passes.export import export_onnx
from passes.io import atomic_path

__all__ = ["SpanLogits", "export_span_model", "OUTPUTS"]

OUTPUTS = ("start_logits", "end_logits")


class SpanLogits(nn.Module):
    """The QA model with one output: start and end logits stacked ``[batch, sequence, 2]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **inputs) -> torch.Tensor:
        return span_logits(self.model(**inputs))


def _split_outputs(path: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    stacked = graph.output[0]
    dims = [d.dim_param or d.dim_value for d in stacked.type.tensor_type.shape.dim][:2]
    outs = []
    for i, name in enumerate(OUTPUTS):
        index = f"leap_fx_span_index_{i}"
        graph.initializer.append(numpy_helper.from_array(np.array(i, dtype=np.int64), index))
        graph.node.append(helper.make_node("Gather", [stacked.name, index], [name], axis=2, name=f"split_{name}"))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    del graph.output[:]
    graph.output.extend(outs)
    onnx.checker.check_model(model)
    with atomic_path(path, suffix=".tmp.onnx") as tmp:
        onnx.save_model(model, tmp)


@torch.no_grad()
def export_span_model(model: nn.Module, example: dict, path: str, atol: float = 1e-4):
    """Export (module doc); the report's ``max_abs_diff`` gains the two-output check (``"outputs"``)."""
    report = export_onnx(SpanLogits(model).eval(), example, path, atol=atol, output_name="span_logits",
                         output_axes={0: "batch", 1: "sequence"})
    _split_outputs(path)
    got = session(path).run(list(OUTPUTS), {k: v.numpy() for k, v in example.items()})
    want = span_logits(model.eval()(**example))
    diff = max(float(np.abs(g - want[..., i].numpy()).max()) for i, g in enumerate(got))
    if not diff <= atol:
        raise ValueError(f"{path}: the two-output graph differs from PyTorch by {diff:.3g} > {atol:g}")
    report.max_abs_diff["outputs"] = diff
    report.output_name = ",".join(OUTPUTS)
    return report
