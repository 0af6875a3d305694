"""What a run keeps on disk: sizes of its files, and the training checkpoints removed once it is complete.

The checkpoints of the teacher fine-tune (``teacher/``) and of the pruning loop (``train/``) exist to
resume a killed run; once ``report.json`` is written nothing resumes from them, and they are the bulk
of a run folder (MiniLM: teacher 273 MB + student 358 MB next to an 87 MB slim model). They are
removed then, unless ``--keep-checkpoints``; histories and configs stay (they feed the plots).
"""
from __future__ import annotations

import os
import shutil

from leap_fx.train.checkpoint import CHECKPOINT

CHECKPOINT_DIRS = ("train", "teacher")
_STEM = os.path.splitext(CHECKPOINT)[0]  # "checkpoint": the file, its sidecars and half-written temps


def size_of(path: str) -> int:
    """Bytes of a file, or of every file under a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
               if not os.path.islink(os.path.join(d, f)))


def checkpoint_paths(out: str) -> list[str]:
    """The training checkpoints (and their sidecar / temporary files) of the run in ``out``."""
    found = []
    for sub in CHECKPOINT_DIRS:
        folder = os.path.join(out, sub)
        if os.path.isdir(folder):
            found += [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                      if f.startswith(_STEM) or f.startswith("." + _STEM)]
    return found


def remove_checkpoints(out: str) -> int:
    """Delete the run's training checkpoints; returns the bytes freed."""
    freed = 0
    for path in checkpoint_paths(out):
        freed += size_of(path)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    return freed


def disk_report(out: str, keep_checkpoints: bool) -> dict:
    """Bytes of the run's entries without checkpoints, of its checkpoints, and of the whole run as it is
    after the cleanup (``checkpoints``: ``"kept"`` or ``"removed"``)."""
    ckpts = {p: size_of(p) for p in checkpoint_paths(out)}
    files = {}
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if not name.startswith("."):
            files[name] = size_of(path) - sum(n for p, n in ckpts.items() if p.startswith(path + os.sep))
    ckpt = sum(ckpts.values())
    return {"run_bytes": sum(files.values()) + (ckpt if keep_checkpoints else 0), "files": files,
            "checkpoints_bytes": ckpt, "checkpoints": "kept" if keep_checkpoints else "removed"}


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GB"
