"""Tiny transformers-5 models for the any-model classes of issue 11 (``NAME() -> (model.eval(), inputs)``).

Each covers a layout the graph side must handle: partial rotary with heads interleaved in a fused
qkv (GPT-NeoX), partial rotary + GQA (Phi), per-head q/k norms (Qwen3), encoder-decoder self and
cross attention (BART), a relative-position bias shared by all layers (T5, MPNet), one layer run
several times (ALBERT), disentangled attention (DeBERTa-v2), windowed attention with a per-layer
bias table (Swin), audio (Wav2Vec2 raw samples, Whisper encoder features), ALiBi heads that cannot be
stripped (MPT), and GPT-2 with its default 1024 positions and no attention mask.
"""
from __future__ import annotations

import torch

from tests.models import BATCH, VOCAB, _ids

DROP = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _build(cls_name: str, cfg):
    import transformers
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(cfg).eval()


def gpt_neox():
    from transformers import GPTNeoXConfig
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, rotary_pct=0.5, max_position_embeddings=64, use_cache=False,
                        attention_dropout=0.0, hidden_dropout=0.0)
    return _build("GPTNeoXModel", cfg), _ids(11)


def phi():
    from transformers import PhiConfig
    cfg = PhiConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=48, partial_rotary_factor=0.5,
                    max_position_embeddings=64, use_cache=False, resid_pdrop=0.0, embd_pdrop=0.0,
                    attention_dropout=0.0)
    return _build("PhiModel", cfg), _ids(12)


def qwen3():
    from transformers import Qwen3Config
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, intermediate_size=40, max_position_embeddings=64,
                      use_cache=False)
    return _build("Qwen3Model", cfg), _ids(13)


def bart():
    from transformers import BartConfig
    cfg = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
                     dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, use_cache=False,
                     pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    inputs = _ids(14)
    inputs["input_ids"] = inputs["input_ids"].clamp(min=3)
    inputs["decoder_input_ids"] = _ids(15, seq=6)["input_ids"].clamp(min=3)
    return _build("BartModel", cfg), inputs


def t5():
    from transformers import T5Config
    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu", use_cache=False, decoder_start_token_id=0, pad_token_id=0)
    inputs = _ids(16)
    inputs["decoder_input_ids"] = _ids(17, seq=5)["input_ids"]
    return _build("T5Model", cfg), inputs


def mpnet():
    from transformers import MPNetConfig
    cfg = MPNetConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=40, max_position_embeddings=64, **DROP)
    inputs = _ids(18)
    inputs["input_ids"] = inputs["input_ids"].clamp(min=3)
    return _build("MPNetModel", cfg), inputs


def albert():
    from transformers import AlbertConfig
    cfg = AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                       num_attention_heads=4, intermediate_size=48, max_position_embeddings=64, **DROP)
    return _build("AlbertModel", cfg), _ids(19)


def deberta_v2():
    from transformers import DebertaV2Config
    cfg = DebertaV2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=48, max_position_embeddings=64, relative_attention=True,
                          position_buckets=8, max_relative_positions=16, pos_att_type=["c2p", "p2c"], **DROP)
    return _build("DebertaV2Model", cfg), _ids(20)


def swin():
    from transformers import SwinConfig
    cfg = SwinConfig(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                     window_size=4, mlp_ratio=2.0, num_labels=3, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, drop_path_rate=0.0)
    g = torch.Generator().manual_seed(21)
    return _build("SwinForImageClassification", cfg), {"pixel_values": torch.randn(BATCH, 3, 32, 32, generator=g)}


def wav2vec2():
    from transformers import Wav2Vec2Config
    cfg = Wav2Vec2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=48, conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, hidden_dropout=0.0,
                         attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
                         mask_time_prob=0.0)
    g = torch.Generator().manual_seed(22)
    return _build("Wav2Vec2Model", cfg), {"input_values": torch.randn(BATCH, 400, generator=g)}


def whisper_encoder():
    from transformers import WhisperConfig
    cfg = WhisperConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=16,
                        max_source_positions=16, max_target_positions=32, dropout=0.0, attention_dropout=0.0,
                        num_labels=3, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=3)
    g = torch.Generator().manual_seed(23)
    return _build("WhisperForAudioClassification", cfg), {"input_features": torch.randn(BATCH, 16, 32, generator=g)}


def mpt():
    from transformers import MptConfig
    cfg = MptConfig(vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=2, max_seq_len=64,
                    use_cache=False, resid_pdrop=0.0, emb_pdrop=0.0)
    return _build("MptModel", cfg), _ids(24)


def gpt2_default():
    """GPT-2 with its default 1024 positions, given only input_ids: transformers 5 builds the causal mask
    with aten::diff (find_packed_sequence_indices), which the TorchScript exporter lacks."""
    from transformers import GPT2Config
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, use_cache=False, bos_token_id=0, eos_token_id=0)
    return _build("GPT2LMHeadModel", cfg), {"input_ids": _ids(25)["input_ids"]}


MORE = {"gpt_neox": gpt_neox, "phi": phi, "qwen3": qwen3, "bart": bart, "t5": t5, "mpnet": mpnet,
        "albert": albert, "deberta_v2": deberta_v2, "swin": swin, "wav2vec2": wav2vec2,
        "whisper_encoder": whisper_encoder, "mpt": mpt, "gpt2_default": gpt2_default}
