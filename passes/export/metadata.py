"""Key/value metadata inside an ONNX file (``ModelProto.metadata_props``): what a consumer needs to use
the graph without the folder it came from (label names, max length, tokenizer, provenance).

Values are strings in ONNX; ``write_metadata`` stores ``str`` values as they are and anything else as
JSON, ``read_metadata`` decodes every value that parses as JSON (so ``'["neg", "pos"]'`` comes back a
list) and keeps the others as strings. onnxruntime shows the same map as
``session.get_modelmeta().custom_metadata_map``. Writing touches nothing but ``metadata_props``: the
graph is serialised unchanged, to a temporary file renamed over ``path``.

``mark_written(path)`` tags a file export_onnx writes beside the one asked for (``.failed.onnx``,
``.opt.onnx``) with the entry ``written_by = leap-fx``, appended to the file as one more
``metadata_props`` record (protobuf merges repeated fields, so the graph is not re-serialised);
``written_here(path)`` tells such a file from a user's, which export_onnx never replaces or deletes.
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


WRITTEN_BY = ("written_by", "leap-fx")


def _trailer() -> bytes:
    """``ModelProto.metadata_props`` (field 14, length-delimited) holding ``{key: value}`` of WRITTEN_BY."""
    key, value = (x.encode() for x in WRITTEN_BY)
    entry = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(value)]) + value
    return b"\x72" + bytes([len(entry)]) + entry


def mark_written(path: str) -> None:
    """Tag the ONNX file ``path`` as written by leap-fx (see the module doc)."""
    with open(path, "ab") as fh:
        fh.write(_trailer())


def written_here(path: str) -> bool:
    """True if ``path`` is a file leap-fx tagged with ``mark_written`` (or whose metadata says so)."""
    if not os.path.isfile(path):
        return False
    tail = _trailer()
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - len(tail)))
        if fh.read() == tail:
            return True
    try:
        return read_metadata(path).get(WRITTEN_BY[0]) == WRITTEN_BY[1]
    except ValueError:
        return False


def refuse_theirs(who: str, sides: list[str]) -> None:
    """Refuse to write where a file beside the target (``.failed.onnx``, ``.opt.onnx``) is the user's: leap-fx
    replaces or deletes only the side files it tagged (``written_here``)."""
    theirs = [p for p in sides if os.path.lexists(p) and not written_here(p)]
    if theirs:
        kind = "rejected" if theirs[0].endswith(".failed.onnx") else "optimized"
        raise ValueError(f"{who}: {theirs[0]} exists and was not written by leap-fx; {who} writes a {kind} graph "
                         f"there and never replaces your files: move it, or export to another path")
