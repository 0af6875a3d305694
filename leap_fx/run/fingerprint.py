"""What a run is made of, by content: SHA-256 of its data files and of its model folder's files.

``options.json`` records ``run_content(opts)`` under ``"content"`` beside the options; ``--resume``
recomputes it and refuses, naming the file, when a data file or a model file changed since the run
started (the same options on other content would silently continue the old teacher and student).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from leap_fx.data.rotten_tomatoes import data_path
from leap_fx.data.splits import RT_NAMES
from leap_fx.hf.models import default_model_dir, model_content
from passes.io import sha256_file

KEY = "content"
DATA_FIELDS = ("data", "validation_data", "test_data")


def _data_file(opts, name: str) -> Optional[str]:
    value = getattr(opts, name)
    if name == "data" and (value is None or value in RT_NAMES):  # the named dataset: the file it is read from
        try:
            return data_path()
        except (ModuleNotFoundError, FileNotFoundError):
            return None
    return value if value is not None and os.path.isfile(value) else None


def _model_dir(opts) -> Optional[str]:
    if opts.model is not None:
        return opts.model if os.path.isdir(opts.model) else None
    try:
        return default_model_dir()
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def run_content(opts) -> dict:
    """``{"data": {"path", "sha256"}, ..., "model": {"path", "files": {name: sha256}}}`` for the files
    ``opts`` names (the named dataset's file; the default model when ``opts.model`` is None)."""
    out: dict = {}
    for name in DATA_FIELDS:
        path = _data_file(opts, name)
        if path is not None:
            out[name] = {"path": os.path.abspath(path), "sha256": sha256_file(path)}
    model_dir = _model_dir(opts)
    if model_dir is not None:
        out["model"] = {"path": os.path.abspath(model_dir), "files": model_content(model_dir)}
    return out


def _changed(before: dict, now: dict) -> list[str]:
    """Paths of the files whose content differs between two :func:`run_content` records."""
    changed = []
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name) or {}, now.get(name) or {}
        if name != "model":
            if old.get("sha256") != new.get("sha256"):
                changed.append(new.get("path") or old.get("path") or name)
            continue
        folder = new.get("path") or old.get("path") or "the model folder"
        files_old, files_new = old.get("files") or {}, new.get("files") or {}
        changed += [os.path.join(folder, f) for f in sorted(set(files_old) | set(files_new))
                    if files_old.get(f) != files_new.get(f)]
    return changed


def check_same_content(recorded, now: dict, out: str) -> None:
    """Refuse ``--resume`` of the run in ``out`` when its files changed since it started (``ValueError``
    naming them); a run recorded before content hashes existed is resumed with a warning."""
    if not isinstance(recorded, dict):
        print(f"[leap-fx] WARNING: {out}/options.json records no content hashes (an older leap-fx); the data "
              f"and model files cannot be checked against the run's", file=sys.stderr, flush=True)
        return
    changed = _changed(recorded, now)
    if changed:
        raise ValueError(f"cannot --resume {out}: {', '.join(changed)} changed since the run started (its "
                         f"SHA-256 differs from the one in options.json), so the run's teacher and student "
                         f"were made from other content; restore the file, or start over with --overwrite "
                         f"or another --out")
