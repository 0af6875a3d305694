"""Training state on disk: atomic checkpoints and the JSONL history."""
from __future__ import annotations

import json
import os
import random
from typing import Optional

import numpy as np
import torch

from passes.io import atomic_path, read_jsonl, write_text

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.jsonl"


def rng_state() -> dict:
    """Every RNG the loop may draw from (dropout: torch / CUDA; user code: python, numpy)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, model, optimizer, scheduler, step: int, extra: Optional[dict] = None,
                    rng: Optional[list] = None) -> None:
    """Model (weights, S, σ) + optimizer + scheduler + RNG + step, written atomically.

    ``rng``: per-rank RNG states (:func:`rng_state`; default: this process's). The file is written to
    a temporary name in the same directory, flushed to disk, then ``os.replace``d over ``path``: a
    crash at any point leaves either the previous checkpoint or the new one, never half of one.
    """
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
             "rng_states": rng if rng is not None else [rng_state()], "step": int(step),
             "extra": extra or {}}
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
    """The checkpoint dict, or a ``ValueError`` naming the fix when the file cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); delete it to "
                         f"start over (resume=False / --overwrite)") from err
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "step"} <= set(state):
        raise ValueError(f"{path} is not a leap-fx training checkpoint; delete it to start over "
                         f"(resume=False / --overwrite)")
    return state


def restore_checkpoint(state: dict, model, optimizer, scheduler, rank: int = 0) -> dict:
    """Load a :func:`read_checkpoint` dict into the model, optimizer, scheduler and RNGs; returns it.

    ``rank`` picks this process's RNG state (a checkpoint of another world size: rank 0's for all).
    """
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state.get("rng_states")
    if rngs:
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    else:
        torch.set_rng_state(state["rng"])
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
