"""save_slim / load_slim: a stripped model as safetensors weights + a JSON shape manifest.

The manifest (``manifest.json``) says how to turn a freshly built *dense* model into the slim
one: every module's parameter and persistent buffer shapes (and dtypes), the attributes strip changed (head counts,
``all_head_size``, ...), modules strip replaced (``SlimMultiheadAttention`` with its
constructor spec), kept heads / FFN widths per family (the ``StripReport`` and its Plan),
the model class and, for HF models, ``config.to_dict()`` and the constructor arguments beyond the
config that rebuild its module tree (``init_kwargs``: ``BertModel(config, add_pooling_layer=False)``).
``load_slim`` builds the dense model (from ``model_or_factory`` or ``model_class``, or from the class
transformers' own registries give for the config's ``model_type``, or, for a class outside them (an
encoder-only class, a speech encoder), by its name inside transformers' own ``transformers.models``
modeling modules: nothing outside the ``transformers`` package is ever imported, so loading runs no
code from the folder), applies the manifest, then loads the weights strictly.
Both files are written to a temporary directory that is renamed into place, so ``dir`` is never
half written, and only into a new or empty folder or one ``save_slim`` wrote (``passes.io.owned_dir``):
``leap-fx-files.json`` records the SHA-256 of the manifest and the weights, and ``load_slim`` refuses a
folder whose files changed since (``trust_edited=True`` for one edited on purpose), weights that do
not match the manifest's shapes or dtypes, and a ``model_class`` that is not the one saved.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from passes.analyze.plan import Plan
from passes.export.slim_classes import class_name, dense_model, init_kwargs
from passes.io import MARKER, dir_changes, owned_dir, read_json, write_json
from passes.strip.mha import SlimMultiheadAttention
from passes.strip.report import StripReport
from passes.strip.checked import HANDLERS
from passes.strip.sublayers import ConstantSublayer
from passes.strip.layer_config import PREFIX, set_config
from passes.strip.surgery import shape_attributes, sync_leaf

FORMAT = "leap-fx-slim"
VERSION = 1
WEIGHTS, MANIFEST = "model.safetensors", "manifest.json"


def _replacement_classes() -> dict[str, Callable[[dict], nn.Module]]:
    return {"SlimMultiheadAttention": lambda spec: SlimMultiheadAttention(**spec),
            "ConstantSublayer": lambda spec: ConstantSublayer(**spec)}


def manifest(model: nn.Module, plan: Optional[Plan] = None, strip_report: Optional[StripReport] = None) -> dict:
    modules = {}
    for fqn, mod in model.named_modules():
        params = {n: {"shape": list(p.shape), "dtype": str(p.dtype).replace("torch.", "")}
                  for n, p in mod.named_parameters(recurse=False)}
        buffers = {n: {"shape": list(b.shape), "dtype": str(b.dtype).replace("torch.", "")}  # a BatchNorm's statistics
                   for n, b in mod.named_buffers(recurse=False) if n not in mod._non_persistent_buffers_set}
        entry = {"class": type(mod).__name__, "params": params, **({"buffers": buffers} if buffers else {})}
        if hasattr(mod, "spec") and type(mod).__name__ in _replacement_classes():
            entry["spec"] = mod.spec()
        if params or buffers or "spec" in entry:
            modules[fqn] = entry
    config = getattr(model, "config", None)
    return {
        "format": FORMAT, "version": VERSION,
        "model_class": f"{type(model).__module__}:{type(model).__qualname__}",
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
        "init_kwargs": init_kwargs(model) if hasattr(config, "to_dict") else {},
        "attn_implementation": _attn_implementation(config),  # SAM builds other attention classes per choice
        "modules": modules,
        "attributes": _attributes(model, strip_report),
        "replaced": _replaced(model, strip_report),
        "strip": strip_report.to_dict() if strip_report is not None else None,
        "plan": plan.to_dict() if plan is not None else None,
    }


def _replaced(model: nn.Module, strip_report: Optional[StripReport]) -> dict:
    """Modules strip replaced: the report's, and any replacement class found in the model."""
    found = {fqn: type(m).__name__ for fqn, m in model.named_modules() if type(m).__name__ in _replacement_classes()}
    return {**found, **(strip_report.replaced if strip_report is not None else {})}


def _attn_implementation(config) -> Optional[str]:
    """The attention implementation a transformers config chose (None when it chose none)."""
    value = vars(config).get("_attn_implementation_internal") if hasattr(config, "to_dict") else None
    return value if isinstance(value, str) else None


def _attributes(model: nn.Module, strip_report: Optional[StripReport]) -> dict:
    attrs = shape_attributes(model, HANDLERS.values())
    for fqn, a in (strip_report.attributes if strip_report is not None else {}).items():
        attrs[fqn] = {**attrs.get(fqn, {}), **a}
    return attrs


def save_slim(model: nn.Module, dir: Union[str, os.PathLike], plan: Optional[Plan] = None,
              strip_report: Optional[StripReport] = None) -> str:
    """Write ``dir/model.safetensors`` + ``dir/manifest.json`` (+ their SHA-256 in ``leap-fx-files.json``)
    atomically into a new or empty folder, or one save_slim wrote; returns ``dir``."""
    from safetensors.torch import save_model

    with owned_dir(dir, "save_slim: folder") as tmp:
        save_model(model, os.path.join(tmp, WEIGHTS))  # de-duplicates tied tensors
        write_json(os.path.join(tmp, MANIFEST), manifest(model, plan, strip_report))
    return os.path.abspath(os.fspath(dir))


def read_manifest(dir: Union[str, os.PathLike]) -> dict:
    man = read_json(os.path.join(os.fspath(dir), MANIFEST), "slim model manifest")
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise ValueError(f"{dir} is not a leap-fx slim model directory (no {FORMAT} manifest)")
    return man


def apply_manifest(model: nn.Module, man: dict) -> nn.Module:
    """Reshape a dense model in place to the manifest's shapes (values are left uninitialised)."""
    expected = class_name(man)
    if type(model).__qualname__ != expected:
        raise ValueError(f"manifest is for {expected}, got a {type(model).__qualname__}")
    makers = _replacement_classes()
    for fqn, cls_name in man["replaced"].items():
        spec = man["modules"][fqn].get("spec")
        if cls_name not in makers or spec is None:
            raise ValueError(f"cannot rebuild replaced module {fqn} ({cls_name})")
        parent, _, name = fqn.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name, makers[cls_name](spec))
    _same_tree(model, man)
    for fqn, entry in man["modules"].items():
        mod = model.get_submodule(fqn) if fqn else model
        if type(mod).__name__ != entry["class"]:
            raise ValueError(f"{fqn}: manifest has {entry['class']}, model has {type(mod).__name__}")
        for name, p in entry["params"].items():
            cur = getattr(mod, name, None)
            dtype = getattr(torch, str(p["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{fqn}.{name}: manifest dtype {p['dtype']!r} is not a torch dtype")
            if cur is None or list(cur.shape) != p["shape"] or cur.dtype != dtype:
                setattr(mod, name, nn.Parameter(torch.empty(p["shape"], dtype=dtype)))
        for name, b in entry.get("buffers", {}).items():
            cur, dtype = getattr(mod, name, None), getattr(torch, str(b["dtype"]), None)
            if not isinstance(cur, torch.Tensor) or not isinstance(dtype, torch.dtype):
                raise ValueError(f"{fqn}.{name}: manifest buffer does not fit the model (damaged manifest?)")
            if list(cur.shape) != b["shape"] or cur.dtype != dtype:
                setattr(mod, name, torch.empty(b["shape"], dtype=dtype))  # stays a registered buffer
        sync_leaf(mod)
    for fqn, attrs in man["attributes"].items():
        mod = model.get_submodule(fqn) if fqn else model
        own = {k[len(PREFIX):]: v for k, v in attrs.items() if k.startswith(PREFIX)}
        if any(not isinstance(v, int) or "." in k or k.startswith("_") for k, v in own.items()):
            raise ValueError(f"{fqn or 'model'}: manifest config counts {own} are not counts (damaged manifest?)")
        if "config" in vars(mod) and any(getattr(mod.config, k, None) != v for k, v in own.items()):
            set_config(mod, own)  # this layer's own head counts (the shared config has the dense ones)
        for k, v in attrs.items():
            if k.startswith(PREFIX):
                continue
            plain = isinstance(v, (int, float, str, list, type(None)))
            if k.startswith("__") or callable(getattr(mod, k, None)) or not plain:
                raise ValueError(f"{fqn or 'model'}: manifest attribute {k}={v!r} is not a size or count; "
                                 f"the manifest is damaged or not written by save_slim")
            setattr(mod, k, v)
    return model


def _same_tree(model: nn.Module, man: dict) -> None:
    """The dense model has exactly the manifest's modules with parameters (else it was built with other
    constructor arguments than the saved one, e.g. with the pooler the slim model was built without)."""
    mods = dict(model.named_modules())
    missing = [f for f in man["modules"] if f not in mods]
    extra = [f for f, m in mods.items() if f not in man["modules"] and any(True for _ in m.parameters(recurse=False))]
    if missing or extra:
        raise ValueError(f"the dense {type(model).__name__} built for this slim model differs from the saved one: "
                         f"{'it lacks ' + ', '.join(missing[:4]) if missing else ''}"
                         f"{'; ' if missing and extra else ''}{'it has ' + ', '.join(extra[:4]) if extra else ''} "
                         f"(built with other constructor arguments?): pass load_slim(dir, model_or_factory) with "
                         f"the model built as it was before stripping")


def load_slim(dir: Union[str, os.PathLike], model_or_factory: Any = None,
              model_class: Optional[type] = None, trust_edited: bool = False) -> nn.Module:
    """The slim model saved in ``dir``; exact round trip of ``save_slim`` (state_dict equal).

    The dense model comes from ``model_or_factory`` (a model, or a function building one), from
    ``model_class`` (built from the manifest's HF config, or with no arguments), or, for a
    transformers model, from transformers' registries (the config's ``model_type``). The manifest's
    ``model_class`` string is only compared, never imported: loading a slim model runs no code from it.
    A folder whose manifest or weights changed since ``save_slim`` wrote them is refused, naming the
    files, unless ``trust_edited=True`` (then the weights must still fit the manifest).
    """
    from safetensors.torch import load_model

    where = os.fspath(dir)
    man = read_manifest(dir)
    if not trust_edited:
        verify_slim(dir)
    named = class_name(man)
    if isinstance(model_class, type) and model_class.__qualname__ != named:
        raise ValueError(f"{where}: manifest is for {named}, model_class is {model_class.__qualname__}; pass "
                         f"model_class={named}, or leave model_class out")
    try:
        dense = dense_model(man, model_or_factory, model_class, where)
    except TypeError as err:
        raise ValueError(f"{where}: the dense {named} could not be built ({err}); pass model_or_factory: the "
                         f"dense model, or a function that builds it") from err
    model = apply_manifest(dense, man)
    _check_weights(model, os.path.join(where, WEIGHTS), where)
    try:
        load_model(model, os.path.join(where, WEIGHTS), strict=True)
    except RuntimeError as err:  # missing / unexpected names
        raise ValueError(f"{where}: {WEIGHTS} does not hold the tensors {MANIFEST} describes "
                         f"({' '.join(str(err).split())[:300]}); {_RESAVE}") from None
    return model.eval()


_RESAVE = "the folder was edited or mixes two saves: re-save it with save_slim, or restore its files"
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def verify_slim(dir: Union[str, os.PathLike]) -> None:
    """Refuse ``dir`` unless its manifest and weights are the bytes ``save_slim`` wrote (SHA-256)."""
    where = os.fspath(dir)
    changes = dir_changes(where)
    edited = "load_slim(..., trust_edited=True) (leap-fx export / eval: --trust-edited)"
    if changes is None:
        raise ValueError(f"{where}: no {MARKER} (not written by save_slim, or by an older leap-fx), so its files "
                         f"cannot be checked; re-save it with save_slim, or if you trust it: {edited}")
    if changes:
        raise ValueError(f"{where}: {', '.join(changes)} since save_slim wrote it (SHA-256 in {MARKER}); restore "
                         f"it or re-save the model, or if you edited it on purpose: {edited}")


def _check_weights(model: nn.Module, path: str, where: str) -> None:
    """Every tensor in ``path`` has the shape and dtype the manifest gave the model; one float dtype."""
    from safetensors import SafetensorError, safe_open
    state = model.state_dict()
    try:
        with safe_open(path, "pt") as fh:
            stored = {k: (list(fh.get_slice(k).get_shape()), fh.get_slice(k).get_dtype()) for k in fh.keys()}
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {err}); {_RESAVE}") from None
    for name, (shape, dtype) in stored.items():
        if name not in state:
            continue  # load_model names unexpected tensors
        want = state[name]
        if shape != list(want.shape) or _DTYPES.get(dtype) != want.dtype:
            raise ValueError(f"{where}: {WEIGHTS} holds {name} as {shape} {dtype}, {MANIFEST} says "
                             f"{list(want.shape)} {str(want.dtype).replace('torch.', '')}; {_RESAVE}")
    kinds: dict[torch.dtype, list[str]] = {}
    for name, t in state.items():
        if t.is_floating_point():
            kinds.setdefault(t.dtype, []).append(name)
    if len(kinds) > 1:
        main = max(kinds, key=lambda d: len(kinds[d]))
        odd = next(d for d in kinds if d != main)
        main_s, odd_s = (str(d).replace("torch.", "") for d in (main, odd))
        raise ValueError(f"{where}: {kinds[odd][0]} is {odd_s} while the other weights are {main_s}: the forward "
                         f"would fail on mixed dtypes; re-save it with save_slim(model.to(torch.{main_s}), dir)")


def load_strip_report(dir: Union[str, os.PathLike]) -> Optional[StripReport]:
    """The ``StripReport`` saved with a slim model (None if it was saved without one)."""
    strip = read_manifest(dir).get("strip")
    return StripReport.from_dict(strip) if strip is not None else None
