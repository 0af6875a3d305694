"""Example inputs as ``forward`` sees them: split into args/kwargs, and the keyword names it accepts.

``split_inputs``: ``dict`` -> kwargs, ``tuple``/``list`` -> args, ``Tensor`` -> one arg.
``accepted_inputs``: keyword names of ``model.forward`` (HF ``**kwargs: Unpack[TypedDict]`` counts its
keys), None when it takes arbitrary ``**kwargs``. ``unknown_inputs``: the names it would reject.
"""
from __future__ import annotations

import inspect
import typing
from typing import Iterable, Optional

import torch
from torch import nn


def split_inputs(example_inputs) -> tuple[tuple, dict]:
    """``dict`` -> kwargs, ``tuple``/``list`` -> args, ``Tensor`` -> one arg."""
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    raise TypeError(f"example_inputs must be a dict of forward kwargs, a tuple of positional args, or a "
                    f"single Tensor; got {type(example_inputs).__name__}")


def accepted_inputs(model: nn.Module) -> Optional[list[str]]:
    """Keyword names ``model.forward`` accepts, or None when it takes arbitrary ``**kwargs``."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    names = []
    for p in params:
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
        elif p.kind is p.VAR_KEYWORD:
            ann = p.annotation
            args = typing.get_args(ann) if typing.get_origin(ann) is typing.Unpack else ()
            keys = getattr(args[0], "__annotations__", None) if args else None
            if not keys:
                return None  # plain **kwargs: anything goes
            names.extend(k for k in keys if k not in names)
    return names


def unknown_inputs(model: nn.Module, names: Iterable[str]) -> tuple[list[str], Optional[list[str]]]:
    """``(names forward would reject, names it accepts)``; nothing is rejected under plain ``**kwargs``."""
    accepted = accepted_inputs(model)
    if accepted is None:
        return [], None
    return [n for n in names if n not in accepted], accepted
