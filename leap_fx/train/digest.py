"""Content identity of in-memory state: SHA-256 over tensors and plain data, and the JSON-only check.

``state_sha256(obj)`` hashes a nested structure of dicts, lists, tuples, tensors and scalars in its
iteration order: every tensor by dtype, shape and raw bytes, every scalar by ``repr`` (so ``1``,
``1.0``, ``True`` and ``'1'`` differ). It is the checksum stored in a checkpoint, the key of the
training data a run uses and of a teacher's weights. Anything else (a function, an arbitrary
object) is refused with a ``TypeError`` naming where it sits: only plain data is ever written.
Files are hashed with ``passes.io.sha256_file``.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch

SCALARS = (int, float, str, bool, type(None))


def _feed(h, obj: Any, where: str) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}\0".encode())
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; only str / int keys are plain data")
            _feed(h, k, where)
            _feed(h, v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}\0".encode())
        for i, v in enumerate(obj):
            _feed(h, v, f"{where}[{i}]")
    elif isinstance(obj, SCALARS):
        h.update(f"P{obj!r}\0".encode())
    else:
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: only tensors and plain "
                        f"data (dict, list, tuple, str, int, float, bool, None) are saved")


def state_sha256(obj: Any, where: str = "state") -> str:
    """Hex SHA-256 of tensors + plain data (``TypeError`` naming anything else)."""
    h = hashlib.sha256()
    _feed(h, obj, where)
    return h.hexdigest()


def check_json(obj: Any, where: str) -> None:
    """Refuse what a JSON round trip would not give back unchanged (tuples, non-str keys, objects)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; JSON keys are strings")
            check_json(v, f"{where}[{k!r}]")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_json(v, f"{where}[{i}]")
    elif not isinstance(obj, SCALARS):
        raise TypeError(f"{where} is a {type(obj).__name__}: checkpoint metadata must be plain JSON data (dict "
                        f"with str keys, list, str, int, float, bool, None); keep tensors in the model's "
                        f"state_dict (buffers) instead")


def run_content(train_tensors: dict, teacher) -> dict:
    """What a training run's result depends on besides its settings: the training tensors it reads
    and the teacher it distils from (checked on resume: ``checkpoint.check_same_content``)."""
    return {"train_data": state_sha256(train_tensors, "training data"),
            "teacher": state_sha256(teacher.state_dict(), "teacher") if teacher is not None else None}
