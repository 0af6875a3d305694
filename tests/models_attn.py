"""Tiny models for the attention layouts of issue 25 (classes 3-7): ``NAME() -> (model.eval(), inputs)``.

Latent attention (DeepSeek-V3 with q_a/q_b low rank; DeepSeek-V2 and MiniCPM3 with a plain q_proj; every
layer's MLP dense; DeepSeek-V2's complex-number rotary has no ONNX export), scores built by einsum
(LongT5 transient-global attention; a hand-written relative attention), sink columns concatenated to the
scores (a GPT-OSS-style block), a forward branching on tensor values (``if is_global:`` after
``.item()``, Longformer style), a conv / batch-norm vision hybrid (LeViT: Linear -> BatchNorm1d,
Hardswish, q|k|v split after the reshape into heads), and transformers classes outside the auto mappings
(Whisper's encoder, BERT without its pooler).
``EXPECTED[name]`` is the structure analyze must find: per attention family in forward order its
heads, kv heads and per-role head widths (q, k, v); the FFN widths; coupled / shared tensors.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from tests.models import BATCH, VOCAB, _ids


def _hf(cls_name: str, cfg):
    import transformers
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(cfg).eval()


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics and affine terms away from their init (identity / LeViT's zero weight), so the
    exactness checks see them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm1d):
                n = mod.num_features
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


# -- class 3: multi-head latent attention -------------------------------------------------------------
def deepseek_v3():
    from transformers import DeepseekV3Config
    cfg = DeepseekV3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=16,
                           kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
                           first_k_dense_replace=2, n_routed_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=64, use_cache=False)
    return _hf("DeepseekV3Model", cfg), _ids(40)


def deepseek_v2():
    from transformers import DeepseekV2Config
    cfg = DeepseekV2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, moe_intermediate_size=16,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None,
                           kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=10,
                           first_k_dense_replace=2, n_routed_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=64, use_cache=False)
    return _hf("DeepseekV2Model", cfg), _ids(41)


def minicpm3():
    """Latent attention with a plain q_proj (no q low rank) and v heads as wide as k_nope."""
    from transformers import MiniCPM3Config
    cfg = MiniCPM3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=12,
                         qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, max_position_embeddings=64,
                         use_cache=False)
    return _hf("MiniCPM3Model", cfg), _ids(49)


# -- class 4: einsum scores, sink columns ----------------------------------------------------------
def longt5_tglobal():
    """Transient-global attention: scores by einsum over local blocks plus global side keys made by the
    same k projection from block aggregates (pads the sequence to whole blocks: the ONNX keeps its length)."""
    from transformers import LongT5Config
    cfg = LongT5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=1,
                       num_heads=4, encoder_attention_type="transient-global", local_radius=2, global_block_size=4,
                       relative_attention_num_buckets=8, dropout_rate=0.0, use_cache=False,
                       decoder_start_token_id=0, pad_token_id=0)
    return _hf("LongT5EncoderModel", cfg), _ids(42, seq=12)


class EinsumRelativeAttention(nn.Module):
    """Relative attention written with einsum: content scores ``bqhd,bkhd->bhqk`` plus position scores of q
    against a learned table of relative keys (``bqhd,qkhd->bhqk``), context ``bhqk,bkhd->bqhd``."""

    def __init__(self, dim=24, heads=3, max_rel=8):
        super().__init__()
        self.heads, self.head_dim, self.max_rel = heads, dim // heads, max_rel
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.rel = nn.Parameter(torch.randn(2 * max_rel + 1, heads, dim // heads) * 0.1)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, self.heads, self.head_dim) for p in (self.q, self.k, self.v))
        pos = torch.arange(s)
        rel = self.rel[(pos[None, :] - pos[:, None]).clamp(-self.max_rel, self.max_rel) + self.max_rel]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) + torch.einsum("bqhd,qkhd->bhqk", q, rel)
        probs = torch.softmax(scores / self.head_dim ** 0.5, dim=-1)
        return x + self.o(torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, -1))


class SinkAttention(nn.Module):
    """GPT-OSS-style attention sinks: one learned logit per head concatenated to the scores as an extra
    column, softmax, the column dropped (grouped-query: 4 heads read 2 kv heads)."""

    def __init__(self, dim=32, heads=4, kv_heads=2):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q, self.o = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.k, self.v = nn.Linear(dim, kv_heads * self.head_dim), nn.Linear(dim, kv_heads * self.head_dim)
        self.sinks = nn.Parameter(torch.randn(heads))

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = (p(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2) for p in (self.k, self.v))
        k, v = (t.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1) for t in (k, v))
        scores = q @ k.transpose(-1, -2) / self.head_dim ** 0.5
        scores = torch.cat([scores, self.sinks.reshape(1, -1, 1, 1).expand(b, -1, s, 1)], dim=-1)
        probs = torch.softmax(scores - scores.amax(-1, keepdim=True), dim=-1)[..., :-1]
        return x + self.o((probs @ v).transpose(1, 2).reshape(b, s, -1))


class _Block(nn.Module):
    def __init__(self, attn: nn.Module, dim: int, ffn: int):
        super().__init__()
        self.ln1, self.ln2, self.attn = nn.LayerNorm(dim), nn.LayerNorm(dim), attn
        self.up, self.down = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, x):
        x = self.attn(self.ln1(x))
        return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x))))


class Stack(nn.Module):
    def __init__(self, make, dim: int, ffn: int, layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(_Block(make(), dim, ffn) for _ in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def einsum_relative():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(43)
    return Stack(EinsumRelativeAttention, 24, 40).eval(), {"x": torch.randn(BATCH, 7, 24, generator=g)}


def sink_attention():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(44)
    return Stack(SinkAttention, 32, 48).eval(), {"x": torch.randn(BATCH, 6, 32, generator=g)}


# -- class 5: a forward branching on tensor values -------------------------------------------------------
class GuardedBlock(nn.Module):
    """Longformer's pattern: ``is_global = global_attention_mask.any().item()`` then ``if is_global:`` runs an
    extra projection of the global tokens; the MLP module is swapped inside forward (a submodule reassigned
    on every call)."""

    def __init__(self, dim=32, heads=4, ffn=48):
        super().__init__()
        from tests.models import HandAttention
        self.attn, self.glob = HandAttention(dim, heads), nn.Linear(dim, dim)
        self.up, self.down, self.act = nn.Linear(dim, ffn), nn.Linear(ffn, dim), nn.GELU()

    def forward(self, x, global_attention_mask):
        is_global = global_attention_mask.any().item()
        x = x + self.attn(x)
        if is_global:
            x = x + self.glob(x) * global_attention_mask.unsqueeze(-1).to(x.dtype)
        self.act = nn.GELU() if x.shape[1] > 1 else nn.ReLU()
        return x + self.down(self.act(self.up(x)))


class Guarded(nn.Module):
    def __init__(self, layers=2):
        super().__init__()
        self.layers = nn.ModuleList(GuardedBlock() for _ in range(layers))

    def forward(self, x, global_attention_mask):
        for layer in self.layers:
            x = layer(x, global_attention_mask)
        return x


def guarded():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(45)
    mask = torch.zeros(BATCH, 6, dtype=torch.long)
    mask[:, 0] = 1  # the first token is global in every row (parity inputs tile this mask: same branch)
    return Guarded().eval(), {"x": torch.randn(BATCH, 6, 32, generator=g), "global_attention_mask": mask}


# -- class 6: vision hybrid ------------------------------------------------------------------------------
def levit():
    from transformers import LevitConfig
    cfg = LevitConfig(image_size=64, num_channels=3, kernel_size=3, stride=2, padding=1, patch_size=16,
                      hidden_sizes=[32, 48, 64], num_attention_heads=[2, 3, 4], depths=[1, 1, 1], key_dim=[8, 8, 8],
                      drop_path_rate=0, mlp_ratio=[2, 2, 2], attention_ratio=[2, 2, 2], num_labels=3)
    g = torch.Generator().manual_seed(46)
    return _randomize_norms(_hf("LevitForImageClassification", cfg)), \
        {"pixel_values": torch.randn(BATCH, 3, 64, 64, generator=g)}


# -- class 7: transformers classes outside the auto mappings -------------------------------------------
def whisper_encoder_only():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    cfg = WhisperConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=16,
                        max_source_positions=16, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(47)
    return WhisperEncoder(cfg).eval(), {"input_features": torch.randn(BATCH, 16, 32, generator=g)}


def bert_no_pooler():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=40, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return BertModel(cfg, add_pooling_layer=False).eval(), _ids(48)


def _att(heads, dims, kv=None, coupled=(), shared=()):
    """One attention family: ``heads``, per-role widths ``dims = (q, k, v)``, kv heads, the names (suffixes)
    of its coupled / shared tensors."""
    return dict(heads=heads, kv=kv or heads, dims=dims, coupled=set(coupled), shared=set(shared))


_LEVIT = {"attention_biases"} | {f"batch_norm.{p}" for p in ("weight", "bias", "running_mean", "running_var")}
ALL = {"deepseek_v3": deepseek_v3, "deepseek_v2": deepseek_v2, "minicpm3": minicpm3, "longt5_tglobal": longt5_tglobal,
       "einsum_relative": einsum_relative, "sink_attention": sink_attention, "guarded": guarded, "levit": levit,
       "whisper_encoder_only": whisper_encoder_only, "bert_no_pooler": bert_no_pooler}
EXPECTED = {
    "deepseek_v3": dict(attention=[_att(4, (12, 8, 6), shared={"kv_a_proj_with_mqa.weight"})] * 2, ffn=[48, 48]),
    "deepseek_v2": dict(attention=[_att(4, (12, 8, 10), shared={"kv_a_proj_with_mqa.weight"})] * 2, ffn=[40, 40]),
    "minicpm3": dict(attention=[_att(4, (12, 8, 8), shared={"kv_a_proj_with_mqa.weight"})] * 2, ffn=[40, 40]),
    "longt5_tglobal": dict(attention=[_att(4, (8, 8, 8), coupled={"relative_attention_bias.weight",
                                                                  "global_relative_attention_bias.weight"})] * 2,
                           ffn=[48, 48]),
    "einsum_relative": dict(attention=[_att(3, (8, 8, 8), coupled={"rel"})] * 2, ffn=[40, 40]),
    "sink_attention": dict(attention=[_att(4, (8, 8, 8), kv=2, coupled={"sinks"})] * 2, ffn=[48, 48]),
    "guarded": dict(attention=[_att(4, (8, 8, 8))] * 2, ffn=[48, 48]),
    "levit": dict(attention=[_att(h, (8, 8, v), coupled=_LEVIT) for h, v in ((2, 16), (4, 32), (3, 16), (6, 32),
                                                                           (4, 16))], ffn=[64, 96, 96, 128, 128]),
    "whisper_encoder_only": dict(attention=[_att(4, (8, 8, 8))] * 2, ffn=[48, 48]),
    "bert_no_pooler": dict(attention=[_att(4, (8, 8, 8))] * 2, ffn=[40, 40]),
}


def _suffixes(want: set, names: set) -> bool:
    """Every expected suffix names a tensor, and every tensor ends with an expected suffix."""
    return all(any(n.endswith(w) for n in names) for w in want) and all(any(n.endswith(w) for w in want)
                                                                        for n in names)


def check_structure(plan, name: str) -> None:
    """The Plan of ``ALL[name]`` against ``EXPECTED[name]`` (asserts)."""
    exp = EXPECTED[name]
    att, ffn = plan.attention(), plan.feed_forward()
    assert len(att) == len(exp["attention"]) and [f.width for f in ffn] == exp["ffn"], plan
    for fam, want in zip(att, exp["attention"]):
        assert (fam.num_heads, fam.num_kv_heads) == (want["heads"], want["kv"]), fam.describe()
        assert (fam.unit("q"), fam.unit("k"), fam.unit("v")) == want["dims"], fam.describe()
        assert fam.unit("out") == fam.unit("v") and not fam.frozen
        assert _suffixes(want["coupled"], {c.weight_name for c in fam.coupled}), fam.describe()
        assert all(any(s.endswith(w) for s in fam.shared) for w in want["shared"]), fam.shared
    assert not plan.unmatched, plan.unmatched
