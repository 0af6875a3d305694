"""The HF config's head counts after strip, when every attention family kept the same number of heads.

A transformers config is shared by all layers, so strip leaves it alone when layers differ (the slim
manifest records each module's own counts). When every attention family of the Plan ends with the
same head count (and kv head count) and the config described the dense model that way, the config's
``num_attention_heads`` / ``num_key_value_heads`` are set to the new counts, so the saved
``config.json`` describes the slim model (latent attention reads its head count from the config). Only
for configs that name the head width themselves (``head_dim``, ``qk_nope_head_dim``, ``d_kv``, ...):
where the width is ``hidden_size // num_attention_heads`` (BERT) a smaller count would change it.
"""
from __future__ import annotations

from torch import nn

from passes.analyze.plan import Plan

HEAD_WIDTH_KEYS = ("head_dim", "qk_nope_head_dim", "v_head_dim", "d_kv", "kv_channels", "attention_head_size")
COUNTS = (("num_attention_heads", "num_heads"), ("num_key_value_heads", "num_kv_heads"))


def sync_config(model: nn.Module, before: Plan, after: Plan) -> dict:
    """Set the config's head counts to the slim model's when they are uniform (see the module doc); returns
    ``{config attribute: new value}`` (empty when nothing changed)."""
    config = getattr(model, "config", None)  # a transformers model's config (any other model: none)
    old_fams, new_fams = before.attention(), after.attention()
    if config is None or not new_fams or len(old_fams) != len(new_fams):
        return {}
    if not any(isinstance(vars(config).get(k), int) for k in HEAD_WIDTH_KEYS):  # stored, not a property
        return {}  # (Falcon's ``head_dim`` is a property: hidden_size // num_attention_heads)
    changed = {}
    for attr, field in COUNTS:
        old = {getattr(f, field) for f in old_fams}
        new = {getattr(f, field) for f in new_fams}
        value = getattr(config, attr, None)
        if len(old) == 1 == len(new) and isinstance(value, int) and value == old.pop() and new != {value}:
            changed[attr] = new.pop()
    for attr, value in changed.items():
        setattr(config, attr, value)
    return changed
