"""Tiny mixture-of-experts models (transformers 5 fused experts): ``NAME() -> (model.eval(), example_inputs)``.

Layouts: Mixtral (routed experts only, softmax router renormalised over the top-k), Qwen2-MoE (a shared
expert behind a sigmoid gate, softmax router *not* renormalised, q/k/v biases), GLM-4-MoE (DeepSeek-V3's
MoE: a dense first layer, shared experts, a sigmoid router with a score-correction bias and grouped
routing), Qwen3-MoE (dense first layer through ``mlp_only_layers``, per-head q/k norms), OLMoE, and
GPT-OSS's experts (biases, ``[experts, hidden, 2 * ffn]`` storage with gate / up interleaved, a clamped
SwiGLU; its attention adds sink columns, issue 25 class 4). ``MOE_EXPECTED[name]`` is the structure
analyze must find. Sizes differ across models so a hard-coded guess cannot pass every test.
"""
from __future__ import annotations

import torch

from tests.models import VOCAB, _ids


def _build(cls_name: str, cfg, seed: int = 0):
    import transformers
    torch.manual_seed(seed)
    return getattr(transformers, cls_name)(cfg).eval()


def mixtral():
    from transformers import MixtralConfig
    cfg = MixtralConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=64, use_cache=False, attention_dropout=0.0)
    return _build("MixtralForCausalLM", cfg), _ids(31)


def qwen2_moe():
    from transformers import Qwen2MoeConfig
    cfg = Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=40, moe_intermediate_size=16,
                         shared_expert_intermediate_size=20, num_experts=8, num_experts_per_tok=2,
                         norm_topk_prob=False, max_position_embeddings=64, use_cache=False, attention_dropout=0.0)
    return _build("Qwen2MoeModel", cfg), _ids(32)


def glm4_moe():
    from transformers import Glm4MoeConfig
    cfg = Glm4MoeConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=8, intermediate_size=48, moe_intermediate_size=12,
                        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
                        first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=1.5,
                        max_position_embeddings=64, use_cache=False, attention_dropout=0.0)
    model = _build("Glm4MoeModel", cfg)
    g = torch.Generator().manual_seed(33)
    with torch.no_grad():  # a trained router's correction bias is not zero
        for mod in model.modules():
            if hasattr(mod, "e_score_correction_bias"):
                mod.e_score_correction_bias.copy_(torch.randn(mod.e_score_correction_bias.shape, generator=g) * 0.1)
    return model, _ids(33)


def qwen3_moe():
    from transformers import Qwen3MoeConfig
    cfg = Qwen3MoeConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, intermediate_size=36, moe_intermediate_size=20,
                         num_experts=6, num_experts_per_tok=2, norm_topk_prob=True, mlp_only_layers=[0],
                         max_position_embeddings=64, use_cache=False, attention_dropout=0.0)
    return _build("Qwen3MoeModel", cfg), _ids(34)


def olmoe():
    from transformers import OlmoeConfig
    cfg = OlmoeConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                      max_position_embeddings=64, use_cache=False, attention_dropout=0.0, pad_token_id=1,
                      bos_token_id=0, eos_token_id=2)
    return _build("OlmoeModel", cfg), _ids(35)


def gpt_oss():
    from transformers import GptOssConfig
    cfg = GptOssConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, intermediate_size=16, num_local_experts=4,
                       num_experts_per_tok=2, max_position_embeddings=64, use_cache=False, attention_dropout=0.0,
                       layer_types=["full_attention", "full_attention"],
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model = _build("GptOssModel", cfg)
    g = torch.Generator().manual_seed(36)
    with torch.no_grad():  # HF initialises these biases to zero: random ones test that strip slices them
        for mod in model.modules():
            for name in ("gate_up_proj_bias", "down_proj_bias"):
                if hasattr(mod, name):
                    getattr(mod, name).copy_(torch.randn(getattr(mod, name).shape, generator=g) * 0.1)
            if type(mod).__name__ == "GptOssTopKRouter":
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
    return model, _ids(36)


def _moe(layers, experts, top_k, ffn, *, dense=(), shared=None, groups=1, heads=4, kv_heads=None, select=False,
         router_bias=False, expert_bias=False, activation="silu", attention=None, frozen=False):
    """Per MoE layer: ``experts`` routed experts of ``ffn`` neurons (gated), ``top_k`` per token; ``dense``: dense
    FFN widths of the layers without experts; ``shared``: shared-expert width; ``select``: a score-correction
    bias in the routing; ``groups``: grouped routing; ``activation`` "" = an elementwise gate outside
    ACTIVATIONS; ``attention``: attention families found (default one per layer); ``frozen``: their heads."""
    return dict(layers=layers, experts=experts, top_k=top_k, ffn=ffn, dense=list(dense), shared=shared,
                groups=groups, heads=heads, kv_heads=kv_heads or heads, select=select, router_bias=router_bias,
                expert_bias=expert_bias, moe_layers=layers - len(dense), activation=activation,
                attention=layers if attention is None else attention, frozen=frozen)


MOE = {"mixtral": mixtral, "qwen2_moe": qwen2_moe, "glm4_moe": glm4_moe, "qwen3_moe": qwen3_moe,
       "olmoe": olmoe, "gpt_oss": gpt_oss}
MOE_EXPECTED = {
    "mixtral": _moe(2, 4, 2, 24, kv_heads=2),
    "qwen2_moe": _moe(2, 8, 2, 16, shared=20),
    "glm4_moe": _moe(2, 8, 2, 12, dense=[48], shared=12, groups=2, kv_heads=2, select=True),
    "qwen3_moe": _moe(2, 6, 2, 20, dense=[36], kv_heads=2),
    "olmoe": _moe(2, 8, 2, 16, frozen=True),  # q/k norms over all heads: heads kept
    # attention with sink columns is issue 25 class 4: not matched yet (0 attention families, no unmatched site)
    "gpt_oss": _moe(2, 4, 2, 16, kv_heads=2, router_bias=True, expert_bias=True, activation="", attention=0),
}
