"""Folders leap-fx owns: ``owned_dir(path)`` is what every folder writer of the API goes through. A folder is
written only if it is new, empty, or one leap-fx wrote (its marker ``leap-fx-files.json`` lists every file
with its SHA-256, and nothing else is in it). Anything else is refused naming the path; nothing that is not
ours is moved or deleted. ``dir_changes`` compares a folder with its marker (what ``load_slim`` verifies)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Optional

from passes.io.atomic import atomic_dir, first_existing, sha256_file
from passes.io.jsondata import read_json, write_json

__all__ = ["MARKER", "check_dir_target", "dir_changes", "owned_dir", "written_files"]


MARKER = "leap-fx-files.json"  # in a folder leap-fx wrote: {"written_by": "leap-fx", "files": {name: sha256}}


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
    base = first_existing(os.path.dirname(path))
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
