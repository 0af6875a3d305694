"""The dense model a slim folder is rebuilt from (``load_slim``): the class its manifest names, found only
through transformers' own registries or modeling modules (nothing else is ever imported), or the one the
caller passes; ``init_kwargs`` records the constructor flags that rebuild the same module tree."""
from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import os
import re
from typing import Any, Optional

import torch
from torch import nn

__all__ = ["class_name", "dense_model", "init_kwargs"]


def _hf_class(man: dict) -> Optional[type]:
    """The transformers class the manifest names, found through transformers' own registries (the
    config mapping for ``model_type``, then the auto-model mappings of that config class), or None.

    Nothing the file names is imported: only transformers' own modeling module of a registered
    ``model_type`` is (what ``AutoModel.from_config`` would import), and classes the caller
    registered with ``AutoConfig.register`` / ``AutoModel.register`` are found the same way.
    """
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.auto_factory import _LazyAutoMapping
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config, name = man.get("config"), class_name(man)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return None
    config_class = CONFIG_MAPPING[model_type]
    for attr in sorted(dir(modeling_auto)):
        mapping = getattr(modeling_auto, attr)
        if not isinstance(mapping, _LazyAutoMapping) or config_class not in mapping:
            continue
        try:
            found = mapping[config_class]
        except (ImportError, KeyError, AttributeError):
            continue
        for cls in found if isinstance(found, tuple) else (found,):
            if getattr(cls, "__name__", None) == name:
                return cls
    return None


_MODELING = re.compile(r"^transformers\.models(\.[a-z0-9_]+)+$")


def _transformers_class(man: dict) -> Optional[type]:
    """The class the manifest names, looked up by name in one of transformers' own modeling modules
    (``transformers.models.<model>.modeling_<model>``), for classes no auto mapping lists (``WhisperEncoder``,
    ``T5EncoderModel``); None when the name is not such a module or the class is not a transformers model."""
    from transformers import PreTrainedModel
    named = man.get("model_class")
    module, _, name = named.partition(":") if isinstance(named, str) else ("", "", "")
    if not _MODELING.match(module) or not name.isidentifier():
        return None
    root = os.path.dirname(importlib.util.find_spec("transformers").origin)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.abspath(spec.origin).startswith(root + os.sep):
        return None
    cls = getattr(importlib.import_module(module), name, None)
    ok = isinstance(cls, type) and issubclass(cls, PreTrainedModel) and cls.__module__ == module
    return cls if ok else None


def init_kwargs(model: nn.Module) -> dict:
    """Constructor arguments beyond the config that rebuild ``model``'s module tree: the defaults, else the
    first flip of one or two boolean arguments (``add_pooling_layer=False``) whose model, built on the meta
    device, has the same modules; {} when none does (load_slim then names what differs)."""
    cls, config = type(model), getattr(model, "config", None)
    want = {n for n, _ in model.named_modules()}
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    except (TypeError, ValueError):
        return {}
    flags = [p.name for p in params if isinstance(p.default, bool) and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                     p.KEYWORD_ONLY)]
    defaults = {p.name: p.default for p in params if p.name in flags}
    trials = [{}] + [{a: not defaults[a]} for a in flags] + \
        [{a: not defaults[a], b: not defaults[b]} for i, a in enumerate(flags) for b in flags[i + 1:]]
    for kw in trials[:12]:
        try:
            with torch.device("meta"):
                built = cls(copy.deepcopy(config), **kw)
        except Exception:  # a combination the class rejects: try the next
            continue
        if {n for n, _ in built.named_modules()} == want:
            return kw
    return {}


def class_name(man: dict) -> str:
    named = man.get("model_class")
    return named.rpartition(":")[2] if isinstance(named, str) else ""


ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")


def _build(cls: type, man: dict) -> nn.Module:
    """``cls(config, **init_kwargs)`` for an HF class (both from the manifest), else ``cls()``."""
    config_class = getattr(cls, "config_class", None)
    if man.get("config") is not None and config_class is not None:
        kwargs = man.get("init_kwargs") or {}
        if not all(isinstance(k, str) and isinstance(v, bool) for k, v in kwargs.items()):
            raise ValueError(f"manifest init_kwargs {kwargs!r} are not boolean constructor flags: the manifest "
                             f"is damaged or not written by save_slim")
        config = config_class.from_dict(man["config"])
        attn = man.get("attn_implementation")
        if attn is not None:
            if attn not in ATTN_IMPLEMENTATIONS:
                raise ValueError(f"manifest attn_implementation {attn!r} is not one of {ATTN_IMPLEMENTATIONS}: the "
                                 f"manifest is damaged or not written by save_slim")
            try:  # the classes the slim model was saved with (SAM: eager vs sdpa)
                config._attn_implementation = attn
            except (ValueError, ImportError):  # not available here (flash attention on a CPU machine): the default
                pass
        return cls(config, **kwargs)
    return cls()


def dense_model(man: dict, model_or_factory: Any, model_class: Optional[type], where: str) -> nn.Module:
    if model_class is not None:
        if model_or_factory is not None:
            raise ValueError("pass model_or_factory or model_class, not both")
        if not (isinstance(model_class, type) and issubclass(model_class, nn.Module)):
            raise ValueError(f"model_class must be an nn.Module subclass, got {model_class!r}")
        return _build(model_class, man)
    if isinstance(model_or_factory, nn.Module):
        return model_or_factory
    if callable(model_or_factory):
        return model_or_factory()
    if model_or_factory is not None:
        raise ValueError("model_or_factory must be an nn.Module, a callable returning one, or None")
    cls = (_hf_class(man) or _transformers_class(man)) if man.get("config") is not None else None
    if cls is None:
        raise ValueError(f"{where}: the manifest names the class {man.get('model_class')!r}, which is not a "
                         f"transformers model (registered for its config, or in transformers' own modeling "
                         f"modules); leap-fx never imports a class from outside transformers. Pass it: "
                         f"load_slim(dir, model_class=TheClass), or load_slim(dir, model_or_factory): the dense "
                         f"model, or a function that builds it")
    return _build(cls, man)
