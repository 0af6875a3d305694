"""bench/sparse_kernels.py in its tiny mode, and passes.export.csr (CSR weights for PyTorch inference)."""
import json
import math

import pytest
import torch

from bench import sparse_kernels
from passes.export.csr import CsrLinear, csr_linears
from tests.conftest import bert_inputs, tiny_bert

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it


def test_csr_linears_swaps_only_sparse_enough_matrices_and_keeps_the_outputs():
    model, x = tiny_bert(hidden=64, ffn=256), bert_inputs()
    with torch.no_grad():
        ref = model(**x).logits
        for lin in (model.bert.encoder.layer[0].intermediate.dense, model.bert.encoder.layer[1].attention.self.query):
            lin.weight.mul_(sparse_kernels.masked(tuple(lin.weight.shape), 0.1, 0) != 0)
        sparse_ref = model(**x).logits
    assert not torch.allclose(ref, sparse_ref)
    model.bert.encoder.layer[1].attention.self.query.bias = None  # the bias-free path too
    with torch.no_grad():
        sparse_ref = model(**x).logits
    swapped = csr_linears(model, max_density=0.2)
    assert swapped == ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.1.attention.self.query"]
    assert isinstance(model.bert.encoder.layer[0].intermediate.dense, CsrLinear)
    assert model.bert.encoder.layer[0].intermediate.dense.weight.layout == torch.sparse_csr
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, sparse_ref, atol=1e-5)
    assert csr_linears(model) == []  # nothing left to swap
    with pytest.raises(ValueError, match="max_density"):
        csr_linears(model, max_density=0)


def test_masked_keeps_exactly_the_density():
    assert int((sparse_kernels.masked((64, 96), 0.1, 0) != 0).sum()) == round(0.1 * 64 * 96)
    blocks = sparse_kernels.masked((64, 96), 0.25, 0, block=32) != 0
    assert int(blocks.sum()) == round(0.25 * 6) * 32 * 32 and blocks.view(2, 32, 3, 32).all(3).all(1).sum() > 0


def test_tiny_bench_times_every_kernel_and_checks_its_result(tmp_path):
    out = tmp_path / "sk.json"
    result = sparse_kernels.main(["--tiny", "--densities", "0.1", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    kernels = {r["kernel"] for r in result["rows"]}
    assert kernels == {"torch dense", "torch CSR", "torch CSR F.linear", "torch BSR 32x32", "ORT dense", "ORT CSR"}
    for r in result["rows"]:
        assert r["max_abs_diff"] < 1e-4 and r["ms"]["median"] > 0 and math.isfinite(r["speedup"])
    assert [(r["density"], r["batch"]) for r in result["encoder"]] == [(0.1, 1), (0.1, 1)]
    assert all(r["max_abs_diff"] < 1e-4 and r["csr_matrices"] == 12 for r in result["encoder"])
    assert set(result["encoder"][0]["ms"]) == {"torch dense", "torch CSR", "ORT dense"}
    assert result["semi_structured_2_4"].startswith(("available", "unavailable"))
