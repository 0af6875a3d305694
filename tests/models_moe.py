"""Tiny mixture-of-experts models (transformers 5 fused experts): ``NAME() -> (model.eval(), example_inputs)``.

Layouts: Mixtral (routed experts only, softmax router renormalised over the top-k), Qwen2-MoE (a shared
expert behind a sigmoid gate, softmax router *not* renormalised, q/k/v biases), GLM-4-MoE (DeepSeek-V3's
MoE: a dense first layer, shared experts, a sigmoid router with a score-correction bias and grouped
routing), Qwen3-MoE (dense first layer through ``mlp_only_layers``, per-head q/k norms), OLMoE,
GPT-OSS's experts (biases, ``[experts, hidden, 2 * ffn]`` storage with gate / up interleaved, a clamped
SwiGLU; its attention adds sink columns, issue 25 class 4), and a hand-written block on transformers'
experts decorator (ungated, transposed, biased experts; an ``nn.Linear`` router with a bias; a per-expert
scale gathered by the chosen experts; a dense first block), and Ernie-4.5 MoE (a ``[1, experts]`` score
correction). ``MOE_EXPECTED[name]`` is the structure
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
         router_bias=False, expert_bias=False, activation="silu", attention=None, frozen=False, gated=True,
         coupled=None):
    """Per MoE layer: ``experts`` routed experts of ``ffn`` neurons (gated), ``top_k`` per token; ``dense``: dense
    FFN widths of the layers without experts; ``shared``: shared-expert width; ``select``: a score-correction
    bias in the routing; ``groups``: grouped routing; ``activation`` "" = an elementwise gate outside
    ACTIVATIONS; ``attention``: attention families found (default one per layer); ``frozen``: their heads;
    ``coupled``: per-expert routing tensors (default the score-correction bias when ``select``)."""
    return dict(layers=layers, experts=experts, top_k=top_k, ffn=ffn, dense=list(dense), shared=shared,
                groups=groups, heads=heads, kv_heads=kv_heads or heads, select=select, router_bias=router_bias,
                expert_bias=expert_bias, moe_layers=layers - len(dense), activation=activation,
                attention=layers if attention is None else attention, frozen=frozen, gated=gated,
                coupled=coupled if coupled is not None else (["e_score_correction_bias"] if select else []))


class _Config:  # what transformers' experts decorator reads: the implementation, as a PretrainedConfig holds it
    def __init__(self, implementation: str):
        from transformers import PretrainedConfig
        self.config = PretrainedConfig()
        self.config._experts_implementation = implementation


def _plain_experts_class():
    from transformers.integrations.moe import use_experts_implementation

    @use_experts_implementation(has_gate=False, is_transposed=True, has_bias=True)
    class PlainExperts(torch.nn.Module):
        """Ungated experts stored ``[experts, in, out]`` with biases (Ergo / NemotronH-like)."""

        def __init__(self, config, experts=6, hidden=32, ffn=16):
            super().__init__()
            self.num_experts = experts
            self.up_proj = torch.nn.Parameter(torch.randn(experts, hidden, ffn) * 0.2)
            self.up_proj_bias = torch.nn.Parameter(torch.randn(experts, ffn) * 0.1)
            self.down_proj = torch.nn.Parameter(torch.randn(experts, ffn, hidden) * 0.2)
            self.down_proj_bias = torch.nn.Parameter(torch.randn(experts, hidden) * 0.1)
            self.act_fn = torch.nn.GELU()

        def forward(self, hidden_states, top_k_index, top_k_weights):  # the eager path is not used here
            raise NotImplementedError
    return PlainExperts


class PlainMoE(torch.nn.Module):
    """A hand-written MoE block: ``nn.Linear`` router with a bias, top-2 softmax, a learned per-expert output
    scale gathered by the chosen experts."""

    def __init__(self, experts=6, hidden=32, ffn=16, top_k=2):
        super().__init__()
        self.top_k = top_k
        self.norm = torch.nn.LayerNorm(hidden)
        self.router = torch.nn.Linear(hidden, experts)
        self.scale = torch.nn.Parameter(torch.rand(experts) + 0.5)
        self.experts = _plain_experts_class()(_Config("batched_mm").config, experts, hidden, ffn)

    def forward(self, x):
        h = self.norm(x).reshape(-1, x.shape[-1])
        vals, idx = torch.topk(self.router(h), self.top_k, dim=-1)
        weights = torch.softmax(vals, dim=-1) * self.scale[idx]
        return x + self.experts(h, idx, weights).reshape(x.shape)


class PlainMoEModel(torch.nn.Module):
    """A dense first block (Linear -> GELU -> Linear), then a PlainMoE block."""

    def __init__(self):
        super().__init__()
        self.dense = torch.nn.Sequential(torch.nn.Linear(32, 40), torch.nn.GELU(), torch.nn.Linear(40, 32))
        self.blocks = torch.nn.ModuleList([PlainMoE()])

    def forward(self, x):
        x = x + self.dense(x)
        for block in self.blocks:
            x = block(x)
        return x


def plain_moe():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(37)
    return PlainMoEModel().eval(), {"x": torch.randn(2, 8, 32, generator=g)}


def ernie4_5_moe():
    """Ernie-4.5 MoE: a dense first layer (``moe_layer_start_index``), a shared expert, and a score correction
    stored ``[1, experts]`` (``moe_statics``), added to the routing probabilities before the top-k."""
    from transformers import Ernie4_5_MoeConfig
    cfg = Ernie4_5_MoeConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=40, moe_intermediate_size=12, moe_num_experts=4,
                             moe_k=2, moe_num_shared_experts=1, moe_layer_start_index=1, moe_layer_end_index=1,
                             moe_layer_interval=1, max_position_embeddings=64, use_cache=False)
    model = _build("Ernie4_5_MoeModel", cfg)
    g = torch.Generator().manual_seed(34)
    with torch.no_grad():  # a trained correction is not zero
        for name, p in model.named_parameters():
            if name.endswith("e_score_correction_bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model, _ids(34)


MOE = {"mixtral": mixtral, "qwen2_moe": qwen2_moe, "glm4_moe": glm4_moe, "qwen3_moe": qwen3_moe,
       "olmoe": olmoe, "gpt_oss": gpt_oss, "plain_moe": plain_moe, "ernie4_5_moe": ernie4_5_moe}
MOE_EXPECTED = {
    "mixtral": _moe(2, 4, 2, 24, kv_heads=2),
    "qwen2_moe": _moe(2, 8, 2, 16, shared=20),
    "glm4_moe": _moe(2, 8, 2, 12, dense=[48], shared=12, groups=2, kv_heads=2, select=True),
    "qwen3_moe": _moe(2, 6, 2, 20, dense=[36], kv_heads=2),
    "olmoe": _moe(2, 8, 2, 16, frozen=True),  # q/k norms over all heads: heads kept
    # attention with sink columns (issue 25 class 4): matched, one family a layer
    "gpt_oss": _moe(2, 4, 2, 16, kv_heads=2, router_bias=True, expert_bias=True, activation="", attention=2),
    "plain_moe": _moe(2, 6, 2, 16, dense=[40], router_bias=True, expert_bias=True, activation="gelu", attention=0,
                      gated=False, coupled=["scale"]),
    "ernie4_5_moe": _moe(2, 4, 2, 12, dense=[40], shared=12, kv_heads=2, select=True),  # correction on axis 1
}
