"""Training state on disk: ``TrainConfig`` (JSON), atomic checkpoints and the JSONL history."""
from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.jsonl"


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`leap_fx.train.train` (defaults follow the LEAP paper's App. A)."""

    method: str = "leap"            # leap | magnitude | movement | dense
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 3e-5                # weights (App. A)
    mask_lr: Optional[float] = None  # S and sigma; None = auto (see methods.auto_mask_lr), App. A: 1e-2
    mask_lr_scale: float = 1.0  # multiplies the auto mask LR (mask_lr=None only)
    sigma_beta1: float = 0.0        # Adam beta1 of sigma (see methods.split_sigma_group); paper: 0.9
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1       # linear LR warmup, then linear decay to 0
    alpha: float = 0.9              # Eq. 8: (1 - alpha) CE + alpha KD
    kd_temperature: float = 2.0     # tau of the KD softmax
    max_grad_norm: Optional[float] = 1.0
    log_every: int = 10
    eval_every: int = 0             # steps; 0 = at the end of every epoch
    checkpoint_every: int = 0       # steps; 0 = at the end of every epoch (needs out_dir)
    checkpoint_minutes: float = 0.0  # also checkpoint when this much time passed since the last one (0: off)
    eval_batch_size: int = 128
    group_by_length: bool = True    # batches of similar length: less padding (resume stays exact)
    seed: int = 17                  # App. A
    max_steps: Optional[int] = None  # stop (and end every schedule) after this many steps
    prune_warmup_ratio: float = 0.1   # baselines: t_0 of the cubic schedule (Eq. 1)
    prune_cooldown_ratio: float = 0.2  # baselines: t_c of Eq. 1
    prune_every: int = 1              # magnitude: rescore every N steps
    fold: bool = True                 # bake masks into plain weights at the end

    def __post_init__(self):
        from .methods import METHOD_NAMES
        if self.method not in METHOD_NAMES:
            raise ValueError(f"unknown method {self.method!r}: use one of {list(METHOD_NAMES)}")
        if self.batch_size < 1 or self.epochs <= 0:
            raise ValueError(f"need batch_size >= 1 and epochs > 0, got {self.batch_size}, {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps} must be >= 1 (or None for full epochs)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha} must be in [0, 1]")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.prune_warmup_ratio + self.prune_cooldown_ratio >= 1.0:
            raise ValueError("prune_warmup_ratio + prune_cooldown_ratio must be < 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}; valid keys: {sorted(known)}")
        return cls(**d)

    def to_json(self, path: Optional[str] = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str) -> "TrainConfig":
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            with open(text_or_path) as fh:
                text = fh.read()
        return cls.from_dict(json.loads(text))


def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


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
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> the mode a plain open() would give
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def read_jsonl(path: str) -> list[dict]:
    """Records of a JSONL file; a line cut short by a crash (the last one) is skipped."""
    out = []
    with open(path) as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


class History:
    """JSONL log of training records; on resume, records after the checkpoint step are dropped."""

    def __init__(self, out_dir: Optional[str]):
        self.path = os.path.join(out_dir, HISTORY) if out_dir else None
        self.records: list[dict] = []

    def resume(self, step: int) -> None:
        if self.path and os.path.exists(self.path):
            self.records = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def reset(self) -> None:
        self.records = []
        if self.path and os.path.exists(self.path):
            os.remove(self.path)

    def add(self, record: dict) -> None:
        self.records.append(record)
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
