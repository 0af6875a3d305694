"""Atomic writes: ``atomic_path`` / ``atomic_dir`` give a temporary file (directory) next to the target that
replaces it on success and is removed on failure, so a reader sees the old one or the new one, never half of
one. They get the mode a plain ``open()`` / ``mkdir`` would give (umask), so every file of a run shares one
mode. A temporary is locked (``flock``) while it is written, so ``clean_stale`` removes only what a killed
writer left. ``check_file_target``: a file is written only where no directory is. ``quiet_logger``: libraries'
WARNING-level advice kept out of the output while they write."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager

__all__ = ["atomic_dir", "atomic_path", "check_file_target", "clean_stale", "first_existing", "quiet_logger", "sha256_file",
           "write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def first_existing(path: str) -> str:
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
    base = first_existing(os.path.dirname(path))
    if not os.path.isdir(base):
        raise ValueError(f"{what} {path}: {base} is a file, so no folder can be made there; choose another path")
    return path


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
