"""Tiny models shared by every test: ``NAME() -> (model.eval(), example_inputs)``.

Each builder uses a fixed seed and dropout 0; ``EXPECTED[name]`` records the structure the graph
analysis must find (per layer: heads, kv heads, head_dim, ffn width, gating, fused qkv, activation).
Sizes vary a little across models so that a hard-coded guess cannot pass every test.
"""
from __future__ import annotations

import torch
import torch.nn as nn

BATCH, SEQ, VOCAB = 2, 8, 100


def _ids(seed=0, batch=BATCH, seq=SEQ):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def bert():
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval(), _ids()


def distilbert():
    from transformers import DistilBertConfig, DistilBertModel
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=48,
                           max_position_embeddings=64, dropout=0.0, attention_dropout=0.0)
    return DistilBertModel(cfg).eval(), _ids(1)


def roberta():
    from transformers import RobertaConfig, RobertaModel
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=40, max_position_embeddings=64, pad_token_id=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    inputs = _ids(2)
    inputs["input_ids"] = inputs["input_ids"].clamp(min=3)  # keep clear of the pad id
    return RobertaModel(cfg).eval(), inputs


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval(), _ids(3)


def vit():
    from transformers import ViTConfig, ViTForImageClassification
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=48, num_labels=3,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    g = torch.Generator().manual_seed(4)
    return ViTForImageClassification(cfg).eval(), {"pixel_values": torch.randn(BATCH, 3, 32, 32, generator=g)}


def llama_gqa():
    from transformers import LlamaConfig, LlamaModel
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
                      attention_dropout=0.0, use_cache=False)
    return LlamaModel(cfg).eval(), _ids(5)


class TorchEncoder(nn.Module):
    """``nn.TransformerEncoder`` (fused ``in_proj_weight``) with a float input ``x``."""

    def __init__(self, d_model=32, nhead=4, ffn=64, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=nhead, dim_feedforward=ffn,
                                           batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


def torch_encoder():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(6)
    return TorchEncoder().eval(), {"x": torch.randn(BATCH, SEQ, 32, generator=g)}


class HandAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        b, s, _ = x.shape
        split = lambda t: t.view(b, s, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        probs = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim ** 0.5, dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(b, s, -1)
        return self.o(ctx)


class HandBlock(nn.Module):
    """Pre-LN block written by hand: manual matmul -> softmax -> matmul, up -> relu -> down."""

    def __init__(self, dim=32, heads=4, ffn=64):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = HandAttention(dim, heads)
        self.up, self.down = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(torch.relu(self.up(self.ln2(x))))


class HandModel(nn.Module):
    def __init__(self, dim=32, heads=4, ffn=64, layers=2):
        super().__init__()
        self.blocks = nn.ModuleList(HandBlock(dim, heads, ffn) for _ in range(layers))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def hand_block():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    return HandModel().eval(), {"x": torch.randn(BATCH, SEQ, 32, generator=g)}


CORE = {"bert": bert, "distilbert": distilbert, "roberta": roberta, "gpt2": gpt2, "vit": vit,
        "llama_gqa": llama_gqa, "torch_encoder": torch_encoder, "hand_block": hand_block}


def _exp(layers, heads, head_dim, ffn, act, kv_heads=None, gated=False, fused_qkv=False, hidden=32, attention=None,
         ffns=None, interleaved=False, coupled=0, tied=0, frozen=False, qk_scale=True):
    """``heads`` / ``ffn`` / ``hidden``: one value, or one per attention / ffn family in forward order.
    ``attention`` / ``ffns``: family counts (default ``layers``); ``coupled``: per-head tensors per
    self-attention family; ``tied``: groups of families sharing one; ``frozen``: heads kept (ALiBi);
    ``qk_scale``: scaling q by c and k by 1/c is invariant and unpaired scaling is not (False: q/k are
    normalised per head, or q also meets relative-position keys, as in disentangled attention)."""
    return dict(layers=layers, heads=heads, kv_heads=kv_heads or heads, head_dim=head_dim, ffn=ffn,
                activation=act, gated=gated, fused_qkv=fused_qkv, hidden=hidden, attention=attention or layers,
                ffns=ffns or layers, interleaved=interleaved, coupled=coupled, tied=tied, frozen=frozen,
                qk_scale=qk_scale)


EXPECTED = {
    "bert": _exp(2, 4, 8, 64, "gelu"),
    "distilbert": _exp(2, 2, 16, 48, "gelu"),
    "roberta": _exp(3, 4, 8, 40, "gelu"),
    "gpt2": _exp(2, 4, 8, 64, "gelu_tanh", fused_qkv=True),
    "vit": _exp(2, 4, 8, 48, "gelu"),
    "llama_gqa": _exp(2, 4, 8, 48, "silu", kv_heads=2, gated=True),
    "torch_encoder": _exp(2, 4, 8, 64, "relu", fused_qkv=True),
    "hand_block": _exp(2, 4, 8, 64, "relu"),
    # tests/models_more.py: the any-model classes of issue 11
    "gpt_neox": _exp(2, 4, 8, 64, "gelu", fused_qkv=True, interleaved=True),
    "phi": _exp(2, 4, 8, 48, "gelu_tanh", kv_heads=2),
    "qwen3": _exp(2, 4, 8, 40, "silu", kv_heads=2, gated=True, qk_scale=False),
    "bart": _exp(4, 4, 8, 48, "gelu", attention=6, ffns=4),
    "t5": _exp(4, 4, 8, 48, "gelu_tanh", gated=True, attention=6, ffns=4, coupled=1, tied=3),
    "mpnet": _exp(2, 4, 8, 40, "gelu", coupled=1, tied=1),
    "albert": _exp(1, 4, 8, 48, "gelu_tanh"),
    "deberta_v2": _exp(2, 4, 8, 48, "gelu", coupled=4, qk_scale=False),
    "swin": _exp(2, [2, 4], 8, [32, 64], "gelu", hidden=[16, 32], coupled=1),
    "wav2vec2": _exp(2, 4, 8, 48, "gelu"),
    "whisper_encoder": _exp(2, 4, 8, 48, "gelu"),
    "mpt": _exp(2, 4, 8, 128, "gelu", fused_qkv=True, frozen=True),  # MPT ignores expansion_ratio: 4 x d_model
    "gpt2_default": _exp(2, 4, 8, 128, "gelu_tanh", fused_qkv=True),
}


def _more():
    from tests.models_more import MORE
    return MORE


ALL = {**CORE, **_more()}
