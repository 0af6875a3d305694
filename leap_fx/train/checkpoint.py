"""Training state on disk: atomic, checksummed checkpoints of tensors + JSON, and the JSONL history.

A checkpoint file (``torch.save`` zip, read back with ``weights_only=True``: nothing in it can run
code) holds exactly::

    {"format": "leap-fx-checkpoint", "version": 2,
     "tensors": {"model": state_dict, "optimizer": state_dict, "scheduler": state_dict},
     "meta": "<JSON: step, per-rank RNG states, extra (settings, method state, log means, content)>",
     "sha256": state_sha256({"tensors": ..., "meta": ...})}

The writer refuses anything but tensors and plain data (``digest.state_sha256`` / ``check_json``),
the reader refuses a file whose checksum does not match (flipped bytes, a swapped tensor), naming
it; both before anything is loaded into the model.
"""
from __future__ import annotations

import base64
import json
import os
import random
from typing import Optional

import numpy as np
import torch

from leap_fx.train.digest import check_json, state_sha256
from passes.io import atomic_path, read_jsonl, write_text

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.jsonl"
FORMAT, VERSION = "leap-fx-checkpoint", 2
START_OVER = "delete it to start over (resume=False / --overwrite)"


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict:
    """Every RNG the loop may draw from (dropout: torch / CUDA; user code: python, numpy), as JSON data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": _b64(torch.get_rng_state()), "python": [version, list(internal), gauss],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(_unb64(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def save_checkpoint(path: str, model, optimizer, scheduler, step: int, extra: Optional[dict] = None,
                    rng: Optional[list] = None, more_tensors: Optional[dict] = None) -> None:
    """Model (weights, S, σ) + optimizer + scheduler + RNG + step, checksummed and written atomically.

    ``rng``: per-rank RNG states (:func:`rng_state`; default: this process's). ``extra`` must be plain
    JSON data; ``more_tensors``: other state dicts of tensors (e.g. ``{"objective": ...}``). The file is written to a temporary name in the same directory, flushed to disk, then
    ``os.replace``d over ``path``: a crash at any point leaves the previous checkpoint or the new one.
    """
    tensors = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), **(more_tensors or {})}
    meta = {"step": int(step), "rng_states": rng if rng is not None else [rng_state()], "extra": extra or {}}
    check_json(meta, "checkpoint metadata")
    body = {"tensors": tensors, "meta": json.dumps(meta)}
    state = {"format": FORMAT, "version": VERSION, **body, "sha256": state_sha256(body, "checkpoint")}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())


def remove_stale_temps(folder: str) -> list[str]:
    """Delete half-written checkpoint temp files a killed run left in ``folder``; returns their names."""
    stale = [f for f in os.listdir(folder) if f.startswith(f".{CHECKPOINT}.") and f.endswith(".tmp")]
    for f in stale:
        os.remove(os.path.join(folder, f))
    return stale


def read_checkpoint(path: str) -> dict:
    """``{"model", "optimizer", "scheduler", "step", "rng_states", "extra"}`` of a verified checkpoint.

    Read with ``weights_only=True`` (a pickled callable or any object other than tensors and plain
    data is refused before it is built), then the stored SHA-256 is checked; any failure is a
    ``ValueError`` naming the file and the fix. Nothing is loaded into a model here.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        code = next((ln for ln in lines if "GLOBAL" in ln), None)  # what the pickle wanted to call
        if code is not None:
            raise ValueError(f"checkpoint {path} cannot be read safely: it holds an object that is not a tensor or "
                             f"plain data ({code}); it was refused before anything in it ran (an older "
                             f"leap-fx's checkpoint, or a planted file); {START_OVER}") from None
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: "
                         f"{lines[0] if lines else ''}); it is damaged: {START_OVER}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a leap-fx training checkpoint; {START_OVER}")
    if state.get("version") != VERSION or not isinstance(state.get("meta"), str) \
            or not isinstance(state.get("tensors"), dict):
        raise ValueError(f"checkpoint {path} has format version {state.get('version')!r}, this leap-fx reads "
                         f"version {VERSION}; {START_OVER}")
    body = {"tensors": state["tensors"], "meta": state["meta"]}
    try:
        digest = state_sha256(body, "checkpoint")
    except TypeError as err:
        raise ValueError(f"checkpoint {path} holds unexpected data ({err}); {START_OVER}") from None
    if digest != state.get("sha256"):
        raise ValueError(f"checkpoint {path} fails its checksum (stored {str(state.get('sha256'))[:12]}..., "
                         f"content {digest[:12]}...): it was changed or damaged after it was written and "
                         f"is not loaded; {START_OVER}")
    meta = json.loads(state["meta"])
    tensors = state["tensors"]
    if not {"model", "optimizer", "scheduler"} <= set(tensors) or not {"step", "extra"} <= set(meta):
        raise ValueError(f"{path} is not a complete leap-fx training checkpoint; {START_OVER}")
    return {**tensors, "step": int(meta["step"]), "rng_states": meta.get("rng_states") or [],
            "extra": meta["extra"]}


def restore_checkpoint(state: dict, model, optimizer, scheduler, rank: int = 0) -> dict:
    """Load a :func:`read_checkpoint` dict into the model, optimizer, scheduler and RNGs; returns it.

    ``rank`` picks this process's RNG state (a checkpoint of another world size: rank 0's for all).
    """
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng_states"]
    if rngs:
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    return state


def load_checkpoint(path: str, model, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore everything :func:`save_checkpoint` wrote; returns the checkpoint dict (``step``, ``extra``)."""
    return restore_checkpoint(read_checkpoint(path), model, optimizer, scheduler, rank)


def check_same_run(saved: dict, now: dict, path: str, free: tuple = ()) -> None:
    """Refuse to resume a checkpoint whose ``extra`` was written with other settings than ``now``
    (``{"method": name, "<section>": {setting: value}}``); ``free`` settings may differ."""
    diff = [] if saved.get("method") in (None, now.get("method")) else ["method"]
    for section, values in now.items():
        old = saved.get(section)
        if isinstance(values, dict) and isinstance(old, dict):
            diff += sorted(k for k in values if k not in free and old.get(k) != values[k])
    if diff:
        raise ValueError(f"checkpoint {path} was written with other settings ({', '.join(diff)}); "
                         f"use another out_dir, or resume=False to start over")


CONTENT_NAMES = {"train_data": "training data", "teacher": "teacher weights"}


def check_same_content(saved: dict, now: dict, path: str) -> None:
    """Refuse to resume a checkpoint written for other content (``{"train_data": sha256, ...}``):
    the same settings on a changed data file or teacher would silently mix two runs."""
    for key, digest in now.items():
        old = saved.get(key)
        if old != digest:
            what = CONTENT_NAMES.get(key, key)
            raise ValueError(f"checkpoint {path} was written for other {what} (sha256 {str(old)[:12]}..., now "
                             f"{str(digest)[:12]}...): resuming would mix two runs; use another out_dir, or "
                             f"resume=False to start over")


class History:
    """JSONL log of training records; on resume, records after the checkpoint step are dropped."""

    def __init__(self, out_dir: Optional[str]):
        self.path = os.path.join(out_dir, HISTORY) if out_dir else None
        self.records: list[dict] = []

    def resume(self, step: int) -> None:
        if self.path and os.path.exists(self.path):
            self.records = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def reset(self) -> None:
        self.records = []
        if self.path and os.path.exists(self.path):
            os.remove(self.path)

    def add(self, record: dict) -> None:
        self.records.append(record)
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
