"""Dense fine-tuned teacher: the KD teacher of Eq. 8 and the accuracy reference, cached on disk.

The cache key hashes content, not paths: the model folder's files (weights, config, tokenizer), the
tokenised training data, the labels, the max length and the training hyperparameters. A hit loads
the saved model (safetensors) instead of training again, after checking every file of the entry
against the SHA-256 recorded when it was written (a damaged or swapped entry is trained again).
Cache root: ``$LEAP_FX_CACHE/teachers`` or ``~/.cache/leap-fx/teachers``; ``check_cache_writable`` refuses
an unwritable one before anything is trained and removes what a killed writer left there (an entry is
written into a temporary folder and moved into place: a kill never leaves half an entry, and the
temporary copy is cleaned the next time).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from leap_fx.data import load_rotten_tomatoes
from leap_fx.env.cache import cache_path
from leap_fx.env.cache import entry_problem as cache_entry_problem
from leap_fx.hf.models import (
    default_model_dir,
    load_classifier,
    load_tokenizer,
    model_content,
    quiet_from_pretrained,
)
from leap_fx.spec.train import TrainConfig
from leap_fx.train.digest import state_sha256
from leap_fx.train.distributed import Dist
from leap_fx.train.validation import accuracy
from leap_fx.train.loop import train
from passes.io import (
    check_dir_target,
    clean_stale,
    owned_dir,
    read_json,
)

TEACHER_CONFIG = TrainConfig(epochs=2, batch_size=32, lr=5e-5, warmup_ratio=0.1, alpha=0.0, log_every=50,
                             seed=17, fold=False)
META = "teacher.json"


@dataclass
class TeacherResult:
    model: nn.Module
    tokenizer: object
    metrics: dict = field(default_factory=dict)  # val_accuracy, test_accuracy, ...
    path: Optional[str] = None                   # cache directory of this teacher
    cached: bool = False                         # True when loaded instead of trained


def cache_root(cache_dir: Optional[str] = None) -> str:
    return cache_path("teachers", cache_dir)


def check_cache_writable(root: str) -> str:
    """``root`` (created if missing) if a teacher can be cached there, else ``ValueError`` naming it and the
    fix; temporaries a killed writer left in it are removed. Called before any training."""
    root = os.path.abspath(root)
    try:
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, f".probe-{os.getpid()}"), "w") as fh:
            fh.write("ok")
        os.remove(fh.name)
    except OSError as err:
        raise ValueError(f"the teacher cache {root} is not writable ({type(err).__name__}: {err.strerror or err}); "
                         f"set LEAP_FX_CACHE to a writable folder, pass --cache-dir DIR (cache_dir=...), or "
                         f"--no-cache (use_cache=False)") from None
    removed = clean_stale(root)
    if removed:
        print(f"[leap-fx] removed {len(removed)} half-written cache entr{'y' if len(removed) == 1 else 'ies'} a "
              f"killed run left in {root}", file=sys.stderr, flush=True)
    return root


def teacher_key(model_dir: str, data, config: TrainConfig, max_length: int) -> str:
    """Hash of what the teacher is made of (the cache entry's name): the model folder's content
    (weights, config, tokenizer: :func:`~leap_fx.hf.models.model_content`), the tokenised training
    tensors, the label names, the max length and the hyperparameters. A swapped model file or data
    file gives another key, never the cached teacher of the old content."""
    blob = json.dumps({"model": model_content(model_dir), "train": state_sha256(data.train.features, "train data"),
                       "labels": list(data.label_names), "max_length": max_length,
                       "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _eval_key(data) -> str:
    return state_sha256({"validation": data.validation.features, "test": data.test.features}, "eval data")


def entry_problem(path: str, key: str) -> Optional[str]:
    """Why the cache entry ``path`` must not be loaded (None: it is complete and every file matches
    the SHA-256 recorded when it was written)."""
    def belongs(meta: dict) -> Optional[str]:
        ok = meta.get("key") == key and isinstance(meta.get("metrics"), dict)
        return None if ok else "has no checksums for this key (written by another leap-fx version?)"
    return cache_entry_problem(path, META, "cached teacher metadata", belongs)


def _load_cached(path: str, tokenizer, data, config: TrainConfig) -> TeacherResult:
    from transformers import AutoModelForSequenceClassification

    model = quiet_from_pretrained(AutoModelForSequenceClassification, path, use_safetensors=True).eval()
    meta = read_json(os.path.join(path, META), "cached teacher metadata")
    metrics = meta["metrics"]
    if meta.get("eval_data") != _eval_key(data):  # same teacher, other validation / test rows
        metrics = {**metrics, **_eval_metrics(model, data, config)}
    return TeacherResult(model, tokenizer, metrics, path, cached=True)


def _eval_metrics(model, data, config: TrainConfig) -> dict:
    return {"val_accuracy": accuracy(model, data.validation, config.eval_batch_size),
            "test_accuracy": accuracy(model, data.test, config.eval_batch_size)}


def train_teacher(model_dir: Optional[str] = None, data=None, *, seed: int = 0, max_length: int = 64,
                  config: Optional[TrainConfig] = None, cache_dir: Optional[str] = None,
                  use_cache: bool = True, quiet: bool = False, work_dir: Optional[str] = None,
                  tokenizer=None) -> TeacherResult:
    """Fine-tune ``model_dir`` densely on ``data`` (default: Rotten Tomatoes split with ``seed``), cached.

    ``data`` is a :class:`~leap_fx.data.DatasetSplits`, tokenised here with ``tokenizer`` (default: the
    model's own; data the job already tokenised with it is not tokenised again).
    Returns the teacher in eval mode with validation/test accuracy. ``work_dir``: checkpoints of the
    fine-tune (a killed run resumes it there). Under torchrun the fine-tune is distributed and rank 0
    alone writes the cache entry. A cache entry whose files fail their recorded checksums is not
    loaded (a warning names it) and is trained again.
    """

    model_dir = model_dir or default_model_dir()
    config = config or TEACHER_CONFIG
    dist = Dist.current()
    root = check_cache_writable(cache_dir or cache_root()) if use_cache and dist.is_main else None
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
    data = data if data is not None else load_rotten_tomatoes(seed=seed)
    data.tokenize(tokenizer, max_length)
    key = teacher_key(model_dir, data, config, max_length)
    path = os.path.join(cache_dir or cache_root(), key)
    problem = dist.broadcast(entry_problem(path, key) if use_cache and dist.is_main else "missing")
    if problem is None:  # every rank takes the same branch
        return _load_cached(path, tokenizer, data, config)
    if problem != "missing" and dist.is_main:
        print(f"[leap-fx] WARNING: cached teacher {path} is not loaded: {problem}; training it again",
              file=sys.stderr, flush=True)
    save = root is not None and _replaceable(path)
    model, _ = load_classifier(model_dir, num_labels=len(data.label_names), seed=config.seed,
                               label_names=data.label_names)
    result = train(model, None, data.train, data.validation, config, quiet=quiet, out_dir=work_dir)
    model = result.model.eval()
    metrics = {**_eval_metrics(model, data, config), "train_examples": len(data.train),
               "steps": result.metrics.get("step"),
               "train_seconds": next((r["elapsed_s"] for r in reversed(result.history) if "elapsed_s" in r),
                                     None)}
    if save:
        _save(model, tokenizer, path, {"key": key, "model_dir": os.path.abspath(model_dir),
                                       "max_length": max_length, "config": config.to_dict(),
                                       "eval_data": _eval_key(data), "metrics": metrics})
    dist.barrier()
    return TeacherResult(model, tokenizer, metrics, path if use_cache else None, cached=False)


def _replaceable(path: str) -> bool:
    """True if the entry ``path`` is missing or ours (checked before training: never refused after it)."""
    try:
        check_dir_target(path, "cached teacher", marker=META)
        return True
    except ValueError as err:
        print(f"[leap-fx] WARNING: {err}; the teacher is trained but not cached", file=sys.stderr, flush=True)
        return False


def _save(model, tokenizer, path: str, meta: dict) -> None:
    """Written to a temporary directory that replaces ``path`` at the end (never half a teacher);
    ``teacher.json`` records the SHA-256 of every other file in it."""
    with owned_dir(path, "cached teacher", marker=META, meta=meta) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
