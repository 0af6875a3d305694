"""Key/value metadata inside an ONNX file (``ModelProto.metadata_props``): what a consumer needs to use
the graph without the folder it came from (label names, max length, tokenizer, provenance).

Values are strings in ONNX; ``write_metadata`` stores ``str`` values as they are and anything else as
JSON, ``read_metadata`` decodes every value that parses as JSON (so ``'["neg", "pos"]'`` comes back a
list) and keeps the others as strings. onnxruntime shows the same map as
``session.get_modelmeta().custom_metadata_map``. Writing touches nothing but ``metadata_props``: the
graph is serialised unchanged, to a temporary file renamed over ``path``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from passes.io import atomic_path


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def write_metadata(path: str, props: Mapping[str, Any]) -> dict[str, str]:
    """Set ``props`` in ``path``'s ``metadata_props`` (other keys kept); returns the stored strings."""
    import onnx

    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file not found: {path!r}")
    model = onnx.load(path, load_external_data=False)
    stored = {str(k): _encode(v) for k, v in props.items() if v is not None}
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in stored]
    del model.metadata_props[:]
    for key, value in kept + sorted(stored.items()):
        model.metadata_props.add(key=key, value=value)
    with atomic_path(path, suffix=".tmp.onnx") as tmp:
        onnx.save_model(model, tmp)
    return stored


def read_metadata(source) -> dict[str, Any]:
    """The metadata of an ONNX file path or an ``onnxruntime.InferenceSession``, values JSON-decoded."""
    if hasattr(source, "get_modelmeta"):
        raw = dict(source.get_modelmeta().custom_metadata_map)
    else:
        import onnx
        try:
            model = onnx.load(str(source), load_external_data=False)
        except Exception as err:  # truncated / not ONNX: name the file
            raise ValueError(f"{source}: not a readable ONNX file ({type(err).__name__}: {err})") from err
        raw = {p.key: p.value for p in model.metadata_props}
    return {k: _decode(v) for k, v in raw.items()}
