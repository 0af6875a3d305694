"""JSON files and JSON dataclasses: ``write_json`` / ``read_json`` / ``read_jsonl`` (errors name the file);
``JsonDataclass``: ``to_dict`` / ``from_dict`` (unknown keys and wrong types are refused, naming the field) /
``to_json`` / ``from_json`` for the configs, the Plan and the reports."""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any, Optional

from passes.io.atomic import write_text

__all__ = ["JsonDataclass", "jsonable", "read_json", "read_jsonl", "write_json"]


def jsonable(x: Any) -> Any:
    """``json.dumps`` fallback: tensors and numpy values as lists/numbers, dataclasses as dicts."""
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def write_json(path: str, obj: Any) -> str:
    """JSON (indent 2) written atomically; returns ``path``."""
    return write_text(path, json.dumps(obj, indent=2, default=jsonable) + "\n")


def read_json(path: str, what: str = "JSON file") -> Any:
    """Parsed JSON; a missing, unreadable or corrupt file raises ``ValueError`` naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {path} cannot be read ({type(err).__name__}: {err}); restore or "
                         f"delete it") from None


def read_jsonl(path: str) -> list[dict]:
    """Records of a JSONL file (empty if missing); a line cut short by a crash is skipped."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _check_type(cls_name: str, name: str, hint: Any, value: Any) -> None:
    """Refuse a value whose JSON type cannot be the field's (``"2"`` for an int, ...)."""
    if value is None or hint is Any:
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if type(None) in args and len(args) == 2:
            hint = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        else:
            return
    ok = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(hint)
    if ok is None and origin in (tuple, list):
        ok = (list, tuple)
    if ok is None and origin is dict or hint is dict:
        ok = (dict,)
    if ok is not None and (not isinstance(value, ok) or hint in (int, float) and isinstance(value, bool)):
        want = getattr(hint, "__name__", str(hint))
        raise ValueError(f"{cls_name}.{name} must be {want}, got {type(value).__name__} {value!r}")


class JsonDataclass:
    """Mixin for dataclasses: JSON round trip with unknown keys and wrong types refused."""

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=jsonable))

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__} needs a JSON object, got {type(d).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        for name, value in d.items():
            _check_type(cls.__name__, name, hints.get(name, Any), value)
        return cls(**d)

    def to_json(self, path: Optional[str] = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str):
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            return cls.from_dict(read_json(text_or_path, f"{cls.__name__} file"))
        return cls.from_dict(json.loads(text))
