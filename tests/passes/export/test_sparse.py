"""Compact ONNX storage of sparse weights (passes/export/sparse.py): exact round trip, smaller file, the
same outputs in onnxruntime (rebuilt at load by constant folding), nothing written on a mismatch."""
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from passes.export import ParityError, export_onnx, ort_session
from passes.export import sparse as sparse_mod
from passes.export.sparse import compact_model, compact_onnx, decode, densify, encode
from passes.io import sha256_file
from tests.conftest import bert_inputs, tiny_bert


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int8])
def test_encode_decode_round_trip_is_exact_for_any_pattern(dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((64, 96)) * (50 if dtype == np.int8 else 1)).astype(dtype)
    a[rng.random(a.shape) < 0.9] = 0
    a[10:40] = 0                        # gaps far over 255: bridged by stored zeros
    a[0, 0], a[-1, -1] = -0.0, 3.0      # -0.0 comes back as +0.0 (equal as a number)
    for arr in (a, np.zeros((7, 300), dtype), np.ones((5, 5), dtype)):
        gaps, values = encode(arr)
        back = decode(gaps, values, arr.shape)
        assert back.dtype == arr.dtype and np.array_equal(back, arr)
    gaps, values = encode(a)
    assert gaps.max() <= 255 and np.count_nonzero(values) == np.count_nonzero(a)
    assert values.size < np.count_nonzero(a) + a.size / 255 + 2  # a bridge every 255 zeros at most


@pytest.fixture(scope="module")
def sparse_export(tmp_path_factory):
    """A tiny BERT whose encoder keeps 10 % of each matrix by |W| (folded zeros), exported to ONNX."""
    model = tiny_bert(hidden=64, ffn=256)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and ".encoder." in name:
                keep = p.abs().flatten().topk(int(0.1 * p.numel())).indices
                mask = torch.zeros(p.numel())
                mask[keep] = 1
                p.mul_(mask.view_as(p))
    x = bert_inputs()
    path = str(tmp_path_factory.mktemp("sparse") / "model.onnx")
    export_onnx(model, x, path)
    return path, x


def _initializers(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_compacted_model_is_valid_onnx_and_densifies_back_exactly(sparse_export):
    path, _ = sparse_export
    dense = onnx.load(path)
    compact, tensors = compact_model(dense)
    assert len(tensors) == 12  # q, k, v, out, up, down of both layers
    onnx.checker.check_model(compact, full_check=True)
    for t in tensors.values():  # (1 + 4) bytes per stored float32 at density 0.1: 0.125 x dense
        assert t["nonzero"] <= 0.1 * np.prod(t["shape"]) and t["bytes"] <= 0.13 * t["dense_bytes"]
    back = densify(compact)
    before, after = _initializers(dense), _initializers(back)
    assert set(before) == set(after) and all(np.array_equal(before[k], after[k]) for k in before)
    assert [n.op_type for n in back.graph.node] == [n.op_type for n in dense.graph.node]
    assert not [p for p in back.metadata_props if p.key.startswith("leap_fx")]
    assert compact_model(compact)[1] == {}  # compacting twice is a no-op


def test_compact_onnx_file_is_smaller_and_runs_identically(sparse_export, tmp_path):
    path, x = sparse_export
    out = str(tmp_path / "compact.onnx")
    rep = compact_onnx(path, x, out=out)
    assert rep.bytes == os.path.getsize(out) < 0.6 * os.path.getsize(path) and rep.ratio < 0.6
    assert rep.max_abs_diff and max(rep.max_abs_diff.values()) == 0.0  # the very same weights
    feeds = {k: v.numpy() for k, v in x.items()}
    for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_ALL"):  # folded once at load: the dense graph itself
        ref = ort_session(path, level=level).run(None, feeds)[0]
        assert np.array_equal(ort_session(out, level=level).run(None, feeds)[0], ref)
    ref = ort_session(path).run(None, feeds)[0]  # optimisations off: rebuilt on every call, same weights
    assert np.allclose(ort_session(out).run(None, feeds)[0], ref, rtol=0, atol=1e-6)
    folded = str(tmp_path / "folded.onnx")
    ort_session(out, optimize_to=folded, level="ORT_ENABLE_BASIC")
    assert "ScatterElements" not in {n.op_type for n in onnx.load(folded).graph.node}  # densified at load


def test_dense_file_is_left_alone_and_a_mismatch_writes_nothing(sparse_export, tmp_path, monkeypatch):
    _, x = sparse_export
    dense = str(tmp_path / "dense.onnx")
    export_onnx(tiny_bert(), x, dense)
    before = sha256_file(dense)
    rep = compact_onnx(dense, x)
    assert rep.tensors == {} and rep.bytes == rep.dense_bytes and sha256_file(dense) == before
    path, _ = sparse_export
    victim = str(tmp_path / "victim.onnx")
    with open(path, "rb") as src, open(victim, "wb") as dst:
        dst.write(src.read())
    before = sha256_file(victim)
    calls = []

    def perturbed(session, feeds):
        calls.append(1)
        return session.run(None, feeds)[0] + (1e-3 if len(calls) % 2 else 0.0)
    monkeypatch.setattr(sparse_mod, "ort_outputs", perturbed)  # the name sparse.py calls
    with pytest.raises(ParityError, match="differs"):
        compact_onnx(victim, x)
    assert sha256_file(victim) == before and sorted(os.listdir(tmp_path)) == ["dense.onnx", "victim.onnx"]


def test_int8_quantized_sparse_file_compacts_exactly(sparse_export, tmp_path):
    """int8 (symmetric weights: a pruned weight stays 0) compacts too: ~2 bytes per kept weight, the
    same outputs in onnxruntime, what ``--quantize int8`` writes for a sparse run."""
    from passes.export.quantize import quantize_int8
    path, x = sparse_export
    q = str(tmp_path / "model.int8.onnx")
    quantize_int8(path, q)
    out = str(tmp_path / "compact.int8.onnx")
    rep = compact_onnx(q, x, out=out)
    int8 = {n: t for n, t in rep.tensors.items() if t["dense_bytes"] == np.prod(t["shape"])}  # 1 byte each
    assert len(int8) >= 12 and all(t["bytes"] <= 0.25 * t["dense_bytes"] for t in int8.values())
    assert rep.bytes < os.path.getsize(q) and max(rep.max_abs_diff.values()) == 0.0
    feeds = {k: v.numpy() for k, v in x.items()}
    ref = ort_session(q, level="ORT_ENABLE_ALL").run(None, feeds)[0]
    assert np.array_equal(ort_session(out, level="ORT_ENABLE_ALL").run(None, feeds)[0], ref)
