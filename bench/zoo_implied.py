"""What a config implies the Plan should hold: attention and feed-forward families, routed experts.

The zoo compares this with what analyze found, so a silent partial find (fewer families than the model
has, nothing in ``Plan.unmatched``) shows up as a row, not as a pass. A heuristic read of the usual
config fields, not a verdict: layer counts (decoder cross-attention counted), ``layer_types`` of hybrid
models (only attention layers hold attention), and mixture-of-experts layers (``first_k_dense_replace``,
``mlp_only_layers``, ``decoder_sparse_step``, Jamba's ``expert_layer_period``, Nemotron-H's ``moe`` / ``mlp``
blocks) whose experts are families of their own. YOSO's attention (hashing, no softmax over scores) holds
no heads a softmax matcher could find, like linear attention.
"""
from __future__ import annotations

from typing import Optional

LAYERS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
HEADS = ("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads", "attention_heads")
EXPERTS = ("n_routed_experts", "num_local_experts", "num_experts", "moe_num_experts")  # per layer


def _get(config, *names) -> Optional[int]:
    for n in names:
        v = getattr(config, n, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _moe_layers(config, layers: int) -> int:
    if not _get(config, *EXPERTS) or getattr(config, "is_moe", True) is False:
        return 0
    kinds = getattr(config, "mlp_layer_types", None)  # ["dense", "sparse", ...]: one entry per layer
    if isinstance(kinds, (list, tuple)) and kinds and all(isinstance(k, str) for k in kinds):
        return sum(k != "dense" for k in kinds[:layers])
    period = _get(config, "expert_layer_period")  # Jamba: layers offset, offset + period, ...
    if period:
        return sum(1 for i in range(layers) if i % period == (_get(config, "expert_layer_offset") or 0))
    first = _get(config, "first_k_dense_replace", "moe_layer_start_index", "num_dense_layers", "num_dense_blocks") or 0
    last = _get(config, "moe_layer_end_index")
    only = getattr(config, "mlp_only_layers", None) or []
    step = _get(config, "decoder_sparse_step", "moe_layer_freq") or 1
    every = _get(config, "moe_layer_interval")  # Ernie-4.5: layers first, first + every, ... up to last
    if every:
        return sum(1 for i in range(layers) if i >= first and (last is None or i <= last) and (i - first) % every == 0)
    return sum(1 for i in range(layers) if i >= first and i not in only and (i + 1) % step == 0)


def implied(config) -> dict:
    """``{"attention": n, "ffn": n, "experts": n}`` the config implies (None where it says nothing)."""
    enc = _get(config, "encoder_layers", "num_encoder_layers", *LAYERS)
    if getattr(config, "is_encoder_decoder", False) and enc is not None:
        dec = _get(config, "decoder_layers", "num_decoder_layers") or enc
        return {"attention": enc + 2 * dec, "ffn": enc + dec, "experts": 0}
    layers = _get(config, *LAYERS) or enc
    if layers is None:
        return {"attention": None, "ffn": None, "experts": None}
    groups = _get(config, "num_hidden_groups")  # ALBERT: the layers share num_hidden_groups x inner_group_num weights
    if groups is not None:
        layers = min(layers, groups * (_get(config, "inner_group_num") or 1))
    if _get(config, "num_hash", "hash_code_len") is not None:  # YOSO: attention by LSH / its expectation
        return {"attention": 0, "ffn": layers, "experts": 0}  # (no softmax over scores: no heads to find)
    if _get(config, *HEADS) is None and not isinstance(getattr(config, "num_heads", None), (list, tuple)):
        return {"attention": 0, "ffn": None, "experts": 0}  # no head count anywhere: a conv net (ConvNeXt)
    types = getattr(config, "layer_types", None)
    attention = layers
    if isinstance(types, (list, tuple)) and types and all(isinstance(t, str) for t in types):
        attention = sum("attention" in t and "linear" not in t for t in types[:layers])  # linear attention: no softmax
    kinds = list(types or ())[:layers]
    if "moe" in kinds or "mlp" in kinds:  # Nemotron-H: a block is mamba, attention, mlp or moe
        ffn, moe = kinds.count("mlp"), kinds.count("moe")
        return {"attention": attention, "ffn": ffn, "experts": moe * (_get(config, *EXPERTS) or 0)}
    moe = _moe_layers(config, layers)
    experts = moe * (_get(config, *EXPERTS) or 0)
    return {"attention": attention, "ffn": layers - moe, "experts": experts}


def shortfall(found: dict, want: dict) -> str:
    """Which kinds analyze found fewer of than implied ("" when none), e.g. ``"attention 1/2"``. Experts count
    with the feed-forward families (a matcher may report each expert as one)."""
    out = []
    w, f = want.get("attention"), found.get("attention", 0)
    if w is not None and f < w:
        out.append(f"attention {f}/{w}")
    if want.get("ffn") is not None:
        w = want["ffn"] + (want.get("experts") or 0)
        f = found.get("ffn", 0) + found.get("experts", 0)
        if f < w:
            out.append(f"ffn{'+experts' if want.get('experts') else ''} {f}/{w}")
    return ", ".join(out)
