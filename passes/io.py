"""Files, written once and read back safely: the one place for atomic writes and JSON round trips.

Both packages use these (``passes`` is the lower layer, so they live here):

- ``atomic_path(path)`` / ``atomic_dir(path)``: a temporary file (directory) next to ``path`` that
  replaces it on success and is removed on failure, so a reader sees the old one or the new one,
  never half of one. They get the mode a plain ``open()`` / ``mkdir`` would give (umask), so every
  file of a run shares one mode. A temporary is locked (``flock``) while it is written, so
  ``clean_stale`` removes only what a killed writer left.
- ``owned_dir(path)`` / ``check_file_target(path)``: what every writer of the API goes through. A folder
  is written only if it is new, empty, or one leap-fx wrote (its marker ``leap-fx-files.json`` lists
  every file with its SHA-256, and nothing else is in it); a file only where no directory is. Anything
  else is refused naming the path; nothing that is not ours is moved or deleted. ``dir_changes``
  compares a folder with its marker (what ``load_slim`` verifies).
- ``write_json`` / ``write_text`` / ``read_json`` / ``read_jsonl``: errors name the file.
- ``JsonDataclass``: ``to_dict`` / ``from_dict`` (unknown keys and wrong types are refused, naming
  the field) / ``to_json`` / ``from_json`` for the configs, the Plan and the reports.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import typing
from contextlib import contextmanager
from typing import Any, Optional


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str, suffix: str = ".tmp"):
    """Yield a temporary path next to ``path``; renamed to ``path`` on success, else removed.
    ``path`` may be a file (replaced) or new, never a directory (``check_file_target``)."""
    path = check_file_target(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held while written: clean_stale leaves it alone
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> the mode open() would give
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        os.close(fd)
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_dir(path: str):
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` (an old one is
    moved aside first and deleted after), on failure it is removed: ``path`` is never half written.
    The caller decides that ``path`` may be replaced (``owned_dir`` checks it is ours)."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    fd = os.open(tmp, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held while written: clean_stale leaves it alone
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _umask_modes(tmp)
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        os.close(fd)
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


_TEMP = re.compile(r"^\..+\.(tmp-\w+|old-\w+|\w+\.tmp(\.onnx)?)$")  # atomic_dir's / atomic_path's names


def clean_stale(folder: str) -> list[str]:
    """Remove the temporaries a killed ``atomic_dir`` / ``atomic_path`` left in ``folder`` (a half-written
    copy of a model, ...); one a live writer holds (its lock) is left alone. Returns what was removed."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if not _TEMP.match(name) or os.path.islink(path):
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # being written right now
            os.close(fd)
            continue
        try:
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            removed.append(name)
        finally:
            os.close(fd)
    return removed


MARKER = "leap-fx-files.json"  # in a folder leap-fx wrote: {"written_by": "leap-fx", "files": {name: sha256}}


def _first_existing(path: str) -> str:
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def check_file_target(path, what: str = "output file") -> str:
    """``path`` made absolute if a file may be written there: not a directory, no file in the way of
    its folder; an existing file at ``path`` is replaced (it is the file asked for)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a directory; give the path of the file to write (e.g. "
                         f"{os.path.join(path, 'model.onnx')}): nothing in the directory is touched")
    base = _first_existing(os.path.dirname(path))
    if not os.path.isdir(base):
        raise ValueError(f"{what} {path}: {base} is a file, so no folder can be made there; choose another path")
    return path


def written_files(path: str, marker: str = MARKER) -> Optional[dict]:
    """``{name: sha256}`` the marker of folder ``path`` records (None: no readable marker)."""
    try:
        rec = read_json(os.path.join(path, marker), "leap-fx file list")
    except (FileNotFoundError, ValueError):
        return None
    files = rec.get("files") if isinstance(rec, dict) else None
    return files if isinstance(files, dict) and all(isinstance(v, str) for v in files.values()) else None


def _listing(folder: str, marker: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out += [os.path.relpath(os.path.join(root, f), folder) for f in sorted(files)]
    return [f for f in out if f != marker]


def check_dir_target(path, what: str = "output folder", marker: str = MARKER) -> str:
    """``path`` made absolute if a writer may (re)write the folder: new, empty, or written by leap-fx
    (``marker`` lists every file in it); else ``ValueError`` naming it, and nothing is touched."""
    path = os.path.abspath(os.fspath(path))
    fix = "choose a new or empty folder"
    if os.path.islink(path):
        raise ValueError(f"{what} {path} is a symbolic link; {fix} (the link and what it points to are left as is)")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path} is a file, not a folder; {fix} (the file is left as it is)")
    base = _first_existing(os.path.dirname(path))
    if not os.path.isdir(base):
        raise ValueError(f"{what} {path}: {base} is a file, so no folder can be made there; {fix}")
    present = sorted(e for e in os.listdir(path) if e != marker) if os.path.isdir(path) else []
    if not present:
        return path
    files = written_files(path, marker)
    if files is None:
        raise ValueError(f"{what} {path} holds files leap-fx did not write ({', '.join(present[:3])}"
                         f"{', ...' if len(present) > 3 else ''}): leap-fx writes only into a new or empty folder "
                         f"or one it wrote itself, and never deletes yours; {fix}")
    extra = [f for f in _listing(path, marker) if f not in files]
    extra += [e for e in present if not any(r == e or r.startswith(e + os.sep) for r in files) and e not in extra]
    if extra:
        raise ValueError(f"{what} {path} was written by leap-fx but now also holds {', '.join(extra[:3])}"
                         f"{', ...' if len(extra) > 3 else ''}, which leap-fx did not write; move them out, or "
                         f"{fix}")
    return path


@contextmanager
def owned_dir(path, what: str = "output folder", marker: str = MARKER, meta: Optional[dict] = None):
    """Write a folder: ``check_dir_target``, then ``atomic_dir``; after the block the marker records the
    SHA-256 of every file written (plus ``meta``). Yields the temporary folder to write into."""
    path = check_dir_target(path, what, marker)
    with atomic_dir(path) as tmp:
        yield tmp
        files = {f: sha256_file(os.path.join(tmp, f)) for f in _listing(tmp, marker)}
        write_json(os.path.join(tmp, marker), {"written_by": "leap-fx", **(meta or {}), "files": files})


def dir_changes(path, marker: str = MARKER) -> Optional[list[str]]:
    """What changed in folder ``path`` since leap-fx wrote it: ``["model.safetensors changed", "x missing"]``
    (``[]``: every recorded file is as written; files added since are not read, so not listed); None:
    no marker (not written by leap-fx, or by an older version)."""
    files = written_files(os.fspath(path), marker)
    if files is None:
        return None
    out = []
    for name, digest in sorted(files.items()):
        full = os.path.join(os.fspath(path), name)
        if not os.path.isfile(full):
            out.append(f"{name} missing")
        elif sha256_file(full) != digest:
            out.append(f"{name} changed")
    return out


def _umask_modes(folder: str) -> None:
    """Give the files a writer created inside ``folder`` (e.g. safetensors' 0600) the umask's mode."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            path = os.path.join(root, f)
            if not os.stat(path).st_mode & 0o111 and not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def write_text(path: str, text: str, fsync: bool = False) -> str:
    """Write ``text`` atomically; ``fsync=True`` flushes it to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    return path


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (content identity: checksums, cache keys, resume checks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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


@contextlib.contextmanager
def quiet_logger(name: str = ""):
    """Raise logger ``name`` (``""``: the root logger) to ERROR inside the block: libraries that log advice
    or notices at WARNING (onnxruntime's quantizer and fuser, the dynamo exporter) stay out of the output."""
    log = logging.getLogger(name or None)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
