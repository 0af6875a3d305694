"""A layer's own head counts where its forward reads them from the shared config (Phi-3).

A transformers config is shared by every layer, and some attention forwards read their head counts from
it (``self.config.num_attention_heads * self.head_dim``) rather than from the module or the weights. When
strip leaves such a layer with other counts than the config says, the module's ``config`` becomes a
:class:`LayerConfig`: the layer's counts, and *every other attribute read from and written to the shared
config*, so switching the model's attention implementation (``set_attn_implementation``) still reaches
it. The slim manifest records the counts (``"config.<name>"`` attributes) and ``load_slim`` sets them again.
"""
from __future__ import annotations

from torch import nn

PREFIX = "config."


class LayerConfig:
    """The shared config with some integer attributes of one layer's own (see the module doc)."""

    def __init__(self, base, own: dict):
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_own", dict(own))

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_base", "_own"):
            raise AttributeError(name)  # copy / pickle protocol lookups, and the state before __init__
        own = object.__getattribute__(self, "_own")
        return own[name] if name in own else getattr(object.__getattribute__(self, "_base"), name)

    def __setattr__(self, name, value):
        if name in self._own:
            self._own[name] = value
        else:
            setattr(self._base, name, value)

    def __repr__(self) -> str:
        return f"LayerConfig({type(self._base).__name__}, own={self._own})"


def config_int(mod: nn.Module, attr: str):
    """``mod.config.<attr>`` when ``mod`` holds a (transformers) config with that integer, else None."""
    cfg = vars(mod).get("config")
    v = getattr(cfg, attr, None) if cfg is not None and hasattr(cfg, "to_dict") else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def set_config(mod: nn.Module, values: dict[str, int]) -> None:
    """Give ``mod`` its own ``values`` over its shared config (a :class:`LayerConfig`)."""
    cfg = vars(mod)["config"]
    if isinstance(cfg, LayerConfig):
        cfg._own.update(values)
    else:
        mod.config = LayerConfig(cfg, values)
