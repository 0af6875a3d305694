"""Mixture of experts end to end (issue 25 class 2): random masks on every family including whole experts ->
fold -> strip (self-verified) -> ONNX (the exporter switches the experts to batched_mm itself, on its copy)
-> onnxruntime parity at several shapes -> slim round trip; and the op named when every export path fails."""
import importlib

import pytest

from leap_fx.run.roundtrip import roundtrip
from passes.analyze import EXPERTS, analyze
from passes.export import ExportError, export_onnx
from passes.export.fallback import exporter_reason
from passes.hf_experts import experts_implementation
from tests.models_moe import MOE, MOE_EXPECTED


@pytest.mark.slow  # ~20 s each here: most of it the ONNX export
@pytest.mark.parametrize("name", list(MOE))
def test_round_trip_every_moe_layout(name, tmp_path):
    model, inputs = MOE[name]()
    exp = MOE_EXPECTED[name]
    hf = experts_implementation(model) is not None  # transformers' class: the exporter switches its experts
    layers = [k for k, f in analyze(MOE[name]()[0], inputs).families.items() if f.kind == EXPERTS]
    rt = roundtrip(model, inputs, str(tmp_path), seed=3, slim=True if hf else (lambda: MOE[name]()[0]))
    assert rt.status == "PASS", f"{rt.stage} ({rt.module}): {rt.reason} -- {rt.hint}"
    routed = exp["experts"] * exp["moe_layers"]
    dense = len(exp["dense"]) + (exp["moe_layers"] if exp["shared"] else 0)
    assert (rt.families["attention"], rt.families["ffn"], rt.families["unmatched"], rt.families["experts"]) == \
        (exp["attention"], routed + dense, 0, exp["moe_layers"])
    assert len(layers) == exp["moe_layers"] and all(exp["top_k"] <= rt.kept[k][0] < exp["experts"] for k in layers)
    assert rt.params[1] < rt.params[0]
    assert not hf or "batched_mm" in rt.path_taken and model.config._experts_implementation == "grouped_mm"
    batches, seqs = {k.split("x")[0] for k in rt.parity}, {k.split("x")[1] for k in rt.parity}
    assert len(batches) >= 2 and len(seqs) >= 2 and max(rt.parity.values()) <= 1e-4, rt.parity
    assert rt.slim == 0.0


def test_exporter_reason_names_the_op_under_next_steps():
    class ConversionError(RuntimeError):
        pass
    inner = RuntimeError("No ONNX function found for <OpOverload(op='transformers.grouped_mm_fallback', "
                         "overload='default')>. Failure message: No decompositions registered")
    outer = ConversionError("Failed to convert the exported program to an ONNX model. This is step 3/3 of "
                            "exporting the model to ONNX. Next steps:\n- If there is a missing ONNX function, ...")
    outer.__cause__ = inner
    said = exporter_reason(outer)
    assert said == "ConversionError: no ONNX function for transformers::grouped_mm_fallback"
    old = RuntimeError("Exporting the operator 'aten::histc' to ONNX opset version 17 is not supported.")
    assert exporter_reason(old) == "RuntimeError: no ONNX export of operator aten::histc at opset version 17"
    assert exporter_reason(ValueError("first line\nsecond")) == "ValueError: first line"


@pytest.mark.slow  # two failing exports, ~15 s
def test_every_path_failing_names_the_ops(tmp_path, monkeypatch):
    """Without the batched_mm switch the grouped_mm experts cannot export: the error says which op, per path."""
    fallback = importlib.import_module("passes.export.fallback")
    monkeypatch.setattr(fallback, "experts_implementation", lambda model: None)
    model, inputs = MOE["mixtral"]()
    with pytest.raises(ExportError) as err:
        export_onnx(model, inputs, str(tmp_path / "m.onnx"))
    text = str(err.value)
    assert "operator aten::histc" in text and "no ONNX function for transformers::grouped_mm_fallback" in text
    assert "Next steps" not in text and not (tmp_path / "m.onnx").exists()
