"""passes/export/fuse.py: graph fusions keep the pruned model's numbers (per-layer head counts pinned)."""
import copy

import pytest
import torch

from leap_fx.masks import zero_granules
from passes.analyze import analyze
from passes.export import export_onnx
from passes.export.fuse import fuse
from passes.export.inputs import InputSpec
from passes.export.parity import ort_session, parity
from passes.strip import strip
from tests.conftest import bert_inputs


def _pruned_bert(tmp_path):
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    model = BertModel(cfg).eval()
    model.set_attn_implementation("eager")
    plan = analyze(model, bert_inputs())
    keep = {f.fqn: ([0, 1, 3] if f.layer == 0 else [2]) if f.kind == "attention" else list(range(0, 64, 2))
            for f in plan.families.values()}
    slim = zero_granules(copy.deepcopy(model), plan, keep)
    strip(slim, plan, bert_inputs())
    path = export_onnx(slim, bert_inputs(), str(tmp_path / "slim.onnx")).path
    return slim, path


@pytest.mark.parametrize("how", ["attention", "norms", "gemm"])
def test_fusions_keep_the_numbers(tmp_path, how):
    torch.set_num_threads(1)
    slim, path = _pruned_bert(tmp_path)
    out = str(tmp_path / f"slim.{how}.onnx")
    info = fuse(path, out, how)
    if how == "attention":
        assert info["pinned_reshapes"] == 6 and info["attention_heads"] == [3, 1]  # each layer its own count
    elif how == "norms":
        assert info["attention_heads"] == [] and info["fused"]["SkipLayerNormalization"] == 4
    else:
        assert info["gemm"] == 12  # q k v out up down, two layers
    spec = InputSpec.from_example(bert_inputs())
    diffs = parity(slim, spec, ort_session(out, level="ORT_ENABLE_ALL"), [(1, 5), (3, 11), (2, None)])
    assert max(diffs.values()) <= 1e-4
    with pytest.raises(ValueError, match="use one of"):
        fuse(path, out, "everything")
