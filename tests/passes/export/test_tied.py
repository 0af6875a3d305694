"""A tied output head is stored once in the KV-cache export (Gemm with transB on the embedding), exactly."""
import onnx
import pytest

from passes.export.decoder import export_decoder
from tests.lm_models import gpt2_lm, llama_gqa_lm, qwen3_lm


def _big_initializers(path):
    m = onnx.load(path)
    return sorted(tuple(i.dims) for i in m.graph.initializer if len(i.dims) == 2 and 120 in i.dims)


@pytest.mark.parametrize("build", [qwen3_lm, gpt2_lm])
def test_tied_embedding_is_stored_once(build, tmp_path):
    model = build()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    rep = export_decoder(model, str(tmp_path / "m.onnx"))
    assert any("tied output head" in n for n in rep.notes)
    assert len(_big_initializers(str(tmp_path / "m.onnx"))) == 1  # [V, H] only, no [H, V] copy
    assert rep.max_abs_diff <= 1e-4  # parity checked on the rewritten graph


def test_untied_heads_keep_both_matrices(tmp_path):
    rep = export_decoder(llama_gqa_lm(), str(tmp_path / "m.onnx"))
    assert not any("tied output head" in n for n in rep.notes)
    assert len(_big_initializers(str(tmp_path / "m.onnx"))) == 2
