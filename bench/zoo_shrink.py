"""A generic config shrinker: any transformers config -> a tiny one (random weights, seconds to build).

``shrink(model_type)`` starts from the default config of ``model_type`` and rewrites the usual size
fields by name (``SIZES``): width 32, 4 heads (2 kv heads where the default is grouped-query), 2
layers, FFN 64, vocab 128, 32x32 images, dropout 0. Lists of per-stage sizes (Swin-like ``depths``,
``num_heads``) keep two stages. Nothing model-specific: a field that is not in the table keeps its
default, so some architectures stay too big or become inconsistent; the zoo reports them.
"""
from __future__ import annotations

from typing import Any

HIDDEN, HEADS, KV_HEADS, LAYERS, FFN, VOCAB = 32, 4, 2, 2, 64, 128

# field name -> new value, or a function (the original config's fields, old value) -> new value
SIZES: dict[str, Any] = {
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "embed_dim", "word_embed_proj_dim",
                     "output_hidden_size", "pooler_hidden_size", "d_embed"), HIDDEN),
    "embedding_size": lambda c, v: HIDDEN if v == c.get("hidden_size") else 16,
    **dict.fromkeys(("classifier_proj_size", "projection_dim", "proj_codevector_dim",
                     "codevector_dim", "xvector_output_dim", "hidden_size_per_head"), 16),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers",
                     "decoder_layers", "num_decoder_layers"), LAYERS),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "encoder_attention_heads",
                     "decoder_attention_heads", "attention_heads"), HEADS),
    **dict.fromkeys(("intermediate_size", "n_inner", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff",
                     "ffn_hidden_size", "dim_feedforward", "moe_intermediate_size",
                     "shared_expert_intermediate_size"), FFN),
    **dict.fromkeys(("head_dim", "d_kv", "attention_head_size", "d_head"), HIDDEN // HEADS),
    "num_key_value_heads": lambda c, v: HEADS if v == c.get("num_attention_heads") else KV_HEADS,
    "num_kv_heads": lambda c, v: HEADS if v == c.get("num_attention_heads") else KV_HEADS,
    "vocab_size": lambda c, v: min(v, VOCAB) if v else v,
    "max_position_embeddings": lambda c, v: min(v, 128), "n_positions": lambda c, v: min(v, 128),
    "max_source_positions": 16, "max_target_positions": 32, "num_mel_bins": 16,
    "image_size": lambda c, v: 32 if isinstance(v, int) else v,
    "patch_size": lambda c, v: (8 if c.get("model_type") in ("vit", "deit", "beit", "data2vec-vision", "dinov2",
                                                                "vit_msn", "ijepa", "clip_vision_model",
                                                                "siglip_vision_model") else v)
    if isinstance(v, int) else v,
    "window_size": lambda c, v: 4 if isinstance(v, int) else v,
    "depths": lambda c, v: [1] * min(len(v), 2) if isinstance(v, (list, tuple)) else v,
    "num_heads": lambda c, v: [2, 4][:len(v)] if isinstance(v, (list, tuple)) else HEADS,
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
    "conv_dim": lambda c, v: tuple(HIDDEN for _ in v) if isinstance(v, (list, tuple)) else v,
    "hidden_sizes": lambda c, v: [16, 32][:min(len(v), 2)] if isinstance(v, (list, tuple)) else v,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4, "rotary_dim": 4,
    "moe_k": lambda c, v: min(v, 2), "moe_layer_end_index": lambda c, v: min(v, LAYERS - 1),
    # routing inside 4 experts: top-2, at most 2 groups with 1 chosen (DeepSeek-V3's grouped routing)
    "num_experts_per_tok": lambda c, v: min(v, 2), "moe_topk": lambda c, v: min(v, 2) if isinstance(v, int) else v,
    "num_experts_per_token": lambda c, v: min(v, 2), "first_k_dense_replace": lambda c, v: min(v, 1),
    "n_group": lambda c, v: min(v, 2), "topk_group": lambda c, v: min(v, 1),
    # latent attention (DeepSeek-V2/V3): per-head parts and low ranks to the tiny width
    "qk_rope_head_dim": 4, "qk_nope_head_dim": HIDDEN // HEADS, "v_head_dim": HIDDEN // HEADS,
    "kv_lora_rank": 16, "q_lora_rank": lambda c, v: 16 if v else v,
    "num_stages": lambda c, v: min(v, 2), "block_sizes": lambda c, v: [1] * min(len(v), 2),
    "max_length": lambda c, v: 32 if c.get("model_type") == "audio-spectrogram-transformer" else v,
    "use_cache": False, "tie_word_embeddings": False,
}
TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id",
             "cls_token_id", "mask_token_id", "unk_token_id")


def _shrink_one(config) -> None:
    orig = {**config.to_dict(), "model_type": getattr(config, "model_type", None)}
    for name, new in SIZES.items():
        old = getattr(config, name, None)
        if name in getattr(config, "attribute_map", {}) or old is None or isinstance(old, bool) and name != "use_cache":
            continue
        try:
            setattr(config, name, new(orig, old) if callable(new) else new)
        except (AttributeError, NotImplementedError):  # a computed property (Falcon's head_dim, Funnel's layers)
            pass
    for name, value in list(vars(config).items()):
        if isinstance(value, float) and not isinstance(value, bool) and ("dropout" in name or "drop" in name
                                                                        or name.endswith("pdrop")):
            setattr(config, name, 0.0)
    vocab = getattr(config, "vocab_size", None)
    for i, name in enumerate(TOKEN_IDS):  # special ids inside the shrunk vocabulary
        v = getattr(config, name, None)
        if isinstance(v, int) and vocab and v >= vocab:
            setattr(config, name, i % 4)
        elif isinstance(v, list) and vocab:
            setattr(config, name, [x if x < vocab else i % 4 for x in v])
    layers = getattr(config, "num_hidden_layers", LAYERS)
    for name, value in list(vars(config).items()):  # layer_types, mlp_layer_types, ...: one entry per layer
        if name.endswith("layer_types") and isinstance(value, list):
            setattr(config, name, value[:layers])
    kinds = vars(config).get("mlp_layer_types")
    if isinstance(kinds, list) and "sparse" in (orig.get("mlp_layer_types") or []):  # keep a MoE layer in the 2
        config.mlp_layer_types = (["dense"] if orig["mlp_layer_types"][0] == "dense" else ["sparse"]) + \
            ["sparse"] * (layers - 1)
    if isinstance(vars(config).get("attention_types"), list) and getattr(config, "model_type", "") == "gpt_neo":
        config.attention_types = [[["global", "local"], max(1, LAYERS // 2)]]  # [[kinds, repeats]] = the layers
        config.attention_layers = (["global", "local"] * LAYERS)[:LAYERS]
    _align_stages(config)
    if isinstance(getattr(config, "qk_rope_head_dim", None), int):  # latent attention
        if isinstance(vars(config).get("head_dim"), int):
            config.head_dim = config.qk_rope_head_dim  # the rotary tables' width is the rope part
        if isinstance(vars(config).get("qk_head_dim"), int):
            config.qk_head_dim = config.qk_nope_head_dim + config.qk_rope_head_dim
    if vars(config).get("n_routed_experts") and vars(config).get("num_experts_per_tok", 0) is None:
        config.num_experts_per_tok = 2  # a default of None (DeepSeek-V2): the router needs a k
    if hasattr(config, "_attn_implementation"):
        config._attn_implementation = "eager" if getattr(config, "_attn_implementation", None) is None \
            else config._attn_implementation


def _align_stages(config) -> None:
    """A backbone config's stage names and chosen outputs follow its new depth (a saved config that names
    ``stage12`` of a 2-layer model is refused when it is read back)."""
    if not isinstance(getattr(config, "stage_names", None), list) or getattr(config, "out_features", None) is None:
        return
    depths = getattr(config, "depths", None)
    n = len(depths) if isinstance(depths, (list, tuple)) else getattr(config, "num_hidden_layers", LAYERS)
    config.stage_names = ["stem"] + [f"stage{i}" for i in range(1, n + 1)]
    try:
        config.out_features = [config.stage_names[-1]]
    except (AttributeError, ValueError):  # a config whose setter wants indices instead
        config.out_indices = [n]


def shrink(model_type: str):
    """The default config of ``model_type`` with every known size field made tiny (sub-configs too)."""
    from transformers import AutoConfig
    config = AutoConfig.for_model(model_type)
    for sub in ("text_config", "vision_config", "audio_config", "encoder", "decoder"):
        part = getattr(config, sub, None)
        if part is not None and hasattr(part, "to_dict"):
            _shrink_one(part)
    _shrink_one(config)
    return config
