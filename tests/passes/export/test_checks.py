"""export_onnx's own checks: data-dependent control flow, warnings at the call site, axes, which side failed."""
import os
import warnings

import onnx
import pytest
import torch
import torch.nn as nn

from passes.export import ControlFlowError, ParityError, export_onnx
from tests import models


class Branchy(nn.Module):
    """``if x.sum() > 0``: an ONNX trace would keep one branch (off by 1.389 on the other, issue 12)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x)
        return x * 2


def test_data_dependent_control_flow_is_refused_or_warned(tmp_path):
    torch.manual_seed(0)
    model, x = Branchy().eval(), torch.ones(2, 4)
    with pytest.raises(ControlFlowError, match="branches on tensor values.*torch.where / torch.cond"):
        export_onnx(model, x, str(tmp_path / "b.onnx"))
    assert os.listdir(tmp_path) == []
    with pytest.warns(RuntimeWarning, match="branches on tensor values"):
        rep = export_onnx(model, x, str(tmp_path / "b.onnx"), allow_control_flow=True)
    assert any(n.startswith("WARNING: the forward branches") for n in rep.notes)


class ConstantFromShape(nn.Module):
    """``torch.tensor(x.shape[-1])``: a TracerWarning that is not one of the known-harmless ones."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x) / torch.tensor(float(x.shape[-1]))


def test_known_harmless_warnings_are_silenced_real_ones_stay(tmp_path):
    model, inputs = models.bert()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rep = export_onnx(model, inputs, str(tmp_path / "b.onnx"))
    assert not [w for w in seen if w.category.__name__ in ("TracerWarning", "DeprecationWarning")
                or "aten::index" in str(w.message)], [str(w.message)[:80] for w in seen]
    assert not any("warning kept visible" in n for n in rep.notes)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rep = export_onnx(ConstantFromShape().eval(), torch.randn(2, 3, 8), str(tmp_path / "c.onnx"))
    assert any(w.category.__name__ == "TracerWarning" and "registered as constants" in str(w.message) for w in seen)
    assert any("warning kept visible: TracerWarning" in n for n in rep.notes)


def test_explicit_dynamic_axes_override(tmp_path):
    model, inputs = models.bert()
    axes = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}}
    rep = export_onnx(model, inputs, str(tmp_path / "b.onnx"), dynamic_axes=axes)
    assert rep.dynamic_axes == axes and set(rep.max_abs_diff) == {"1x-", "3x-", "2x-"}
    dims = onnx.load(str(tmp_path / "b.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 8
    with pytest.raises(ValueError, match=r"dynamic_axes names \['ids'\] are not inputs"):
        export_onnx(model, inputs, str(tmp_path / "x.onnx"), dynamic_axes={"ids": {0: "batch"}})


class OnlyLength8(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        if x.shape[1] != 8:  # a model that takes one length only
            raise ValueError(f"length 8 only, got {x.shape[1]}")
        return self.lin(x)


def test_error_says_pytorch_rejected_the_shape(tmp_path):
    """A wrong explicit axis: PyTorch (not onnxruntime) fails at the other length, and the error says so."""
    model = OnlyLength8().eval()
    with pytest.raises(ParityError, match="PyTorch failed on inputs .* the model does not accept this shape") as err:
        export_onnx(model, torch.randn(2, 8, 8), str(tmp_path / "o.onnx"), exporter="torchscript",
                    dynamic_axes={"input_0": {0: "batch", 1: "sequence"}})
    assert err.value.side == "pytorch"
    rep = export_onnx(model, torch.randn(2, 8, 8), str(tmp_path / "o.onnx"))  # inferred: length fixed
    assert rep.dynamic_axes == {"input_0": {0: "batch"}}
