"""int8 on top of the slim graph (passes/export/quantize.py): smaller file, judged by agreement."""
import numpy as np
import pytest
import torch

from leap_fx.run.evaluate import onnx_predict_logits
from passes.export import export_onnx
from passes.export.quantize import (
    QuantizationError,
    agreement,
    check_agreement,
    quantize_int8,
)
from tests.conftest import bert_inputs, tiny_bert


def test_int8_file_is_smaller_runs_and_agrees(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    model = tiny_bert(hidden=64, ffn=256)
    fp32 = export_onnx(model, bert_inputs(), str(tmp_path / "m.onnx")).path
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # onnxruntime's symbolic shape inference leaves temp files in the cwd: not used
    info = quantize_int8(fp32, str(tmp_path / "m.int8.onnx"))
    assert not list(cwd.iterdir())
    assert info["size_bytes"] < 0.6 * (tmp_path / "m.onnx").stat().st_size
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name or "pre" in p.name]  # nothing half-written
    data = {**bert_inputs(64, 12, seed=3), "labels": torch.zeros(64, dtype=torch.long)}
    a, b = onnx_predict_logits(fp32, data), onnx_predict_logits(info["path"], data)
    res = agreement(a, b)
    assert res["rows"] == 64 and 0 < res["max_abs_logit_diff"] < 0.1  # int8 changes logits, a little
    assert res["agreement"] >= 0.9


def test_agreement_bound_and_bad_input():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    flipped = ref.copy()
    flipped[0] = [0.0, 1.0]
    res = agreement(ref, flipped)
    assert res["agreement"] == 0.75 and res["max_abs_logit_diff"] == 1.0
    check_agreement(res, bound=0.75)
    with pytest.raises(QuantizationError, match="75.00% of 4 predictions, below the bound 95%"):
        check_agreement(res)
    with pytest.raises(ValueError, match="cannot be compared"):
        agreement(ref, ref[:2])
    with pytest.raises(ValueError, match="must end with .onnx"):
        quantize_int8("a.onnx", "b.bin")
