"""bench/sparse_kernels.py in its tiny mode, and passes.export.csr (CSR weights for PyTorch inference)."""
import json
import math

import pytest
import torch

from bench import sparse_kernels
from passes.export.csr import csr_linears
from tests.conftest import bert_inputs, tiny_bert


def test_csr_linears_swaps_only_sparse_enough_matrices_and_keeps_the_outputs():
    model, x = tiny_bert(hidden=64, ffn=256), bert_inputs()
    with torch.no_grad():
        ref = model(**x).logits
        up = model.bert.encoder.layer[0].intermediate.dense.weight
        up.mul_(sparse_kernels.masked(tuple(up.shape), 0.1, 0) != 0)
        sparse_ref = model(**x).logits
    assert not torch.allclose(ref, sparse_ref)
    csr_linears(model, max_density=0.3)
    kinds = {n: p.layout for n, p in model.named_parameters()}
    assert kinds["bert.encoder.layer.0.intermediate.dense.weight"] == torch.sparse_csr
    assert sum(k == torch.sparse_csr for k in kinds.values()) == 1  # the dense ones stay strided
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, sparse_ref, atol=1e-5)
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
    assert kernels == {"torch dense", "torch CSR", "torch BSR 32x32", "ORT dense", "ORT CSR"}
    for r in result["rows"]:
        assert r["max_abs_diff"] < 1e-4 and r["ms"]["median"] > 0 and math.isfinite(r["speedup"])
    assert [(r["density"], r["batch"]) for r in result["encoder"]] == [(0.1, 1), (0.1, 1)]
    assert all(r["max_abs_diff"] < 1e-4 for r in result["encoder"])
    assert result["semi_structured_2_4"].startswith(("available", "unavailable"))
