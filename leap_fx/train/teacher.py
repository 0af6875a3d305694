"""Dense fine-tuned teacher: the KD teacher of Eq. 8 and the accuracy reference, cached on disk.

The cache key hashes the model directory, the training data (texts, labels, max length) and the
training hyperparameters; a hit loads the saved model instead of training again. Cache root:
``$LEAP_FX_CACHE/teachers`` or ``~/.cache/leap-fx/teachers``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from leap_fx.train.config import TrainConfig
from passes.io import atomic_dir, write_json

TEACHER_CONFIG = TrainConfig(epochs=2, batch_size=32, lr=5e-5, warmup_ratio=0.1, alpha=0.0, log_every=50,
                             seed=17, fold=False)


@dataclass
class TeacherResult:
    model: nn.Module
    tokenizer: object
    metrics: dict = field(default_factory=dict)  # val_accuracy, test_accuracy, ...
    path: Optional[str] = None                   # cache directory of this teacher
    cached: bool = False                         # True when loaded instead of trained


def cache_root() -> str:
    root = os.environ.get("LEAP_FX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "leap-fx")
    return os.path.join(root, "teachers")


def _fingerprint(split) -> str:
    h = hashlib.sha256()
    for i, text in enumerate(split.texts):
        pair = split.text_pairs[i] if split.text_pairs else ""
        h.update(f"{text}\x00{pair}\x00{split.labels[i]}\x01".encode())
    return h.hexdigest()


def teacher_key(model_dir: str, data, config: TrainConfig, max_length: int) -> str:
    """Hash of model dir + training data + hyperparameters (the cache entry's name)."""
    blob = json.dumps({"model_dir": os.path.abspath(model_dir), "train": _fingerprint(data.train),
                       "labels": list(data.label_names), "max_length": max_length,
                       "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_teacher(model_dir: Optional[str] = None, data=None, *, seed: int = 0, max_length: int = 64,
                  config: Optional[TrainConfig] = None, cache_dir: Optional[str] = None,
                  use_cache: bool = True, quiet: bool = False, work_dir: Optional[str] = None,
                  tokenizer=None) -> TeacherResult:
    """Fine-tune ``model_dir`` densely on ``data`` (default: Rotten Tomatoes split with ``seed``), cached.

    ``data`` is a :class:`~leap_fx.data.DatasetSplits`, tokenised here with ``tokenizer`` (default: the
    model's own; data the job already tokenised with it is not tokenised again).
    Returns the teacher in eval mode with validation/test accuracy. ``work_dir``: checkpoints of the
    fine-tune (a killed run resumes it there). Under torchrun the fine-tune is distributed and rank 0
    alone writes the cache entry.
    """
    from leap_fx.data import load_rotten_tomatoes
    from leap_fx.models import default_model_dir, load_classifier, load_tokenizer, quiet_from_pretrained
    from leap_fx.train.evaluate import accuracy
    from leap_fx.train.loop import train

    model_dir = model_dir or default_model_dir()
    config = config or TEACHER_CONFIG
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
    data = data if data is not None else load_rotten_tomatoes(seed=seed)
    data.tokenize(tokenizer, max_length)
    key = teacher_key(model_dir, data, config, max_length)
    path = os.path.join(cache_dir or cache_root(), key)
    meta_file = os.path.join(path, "teacher.json")
    from leap_fx.train.distributed import Dist
    dist = Dist.current()
    if dist.broadcast(use_cache and os.path.isfile(meta_file)):  # every rank takes the same branch
        from transformers import AutoModelForSequenceClassification
        model = quiet_from_pretrained(AutoModelForSequenceClassification, path).eval()
        with open(meta_file) as fh:
            return TeacherResult(model, tokenizer, json.load(fh)["metrics"], path, cached=True)

    model, _ = load_classifier(model_dir, num_labels=len(data.label_names), seed=config.seed,
                               label_names=data.label_names)
    result = train(model, None, data.train, data.validation, config, quiet=quiet, out_dir=work_dir)
    model = result.model.eval()
    metrics = {"val_accuracy": accuracy(model, data.validation, config.eval_batch_size),
               "test_accuracy": accuracy(model, data.test, config.eval_batch_size),
               "train_examples": len(data.train), "steps": result.metrics.get("step"),
               "train_seconds": next((r["elapsed_s"] for r in reversed(result.history) if "elapsed_s" in r),
                                     None)}
    if use_cache and dist.is_main:
        _save(model, tokenizer, path, {"key": key, "model_dir": os.path.abspath(model_dir),
                                       "max_length": max_length, "config": config.to_dict(),
                                       "metrics": metrics})
    dist.barrier()
    return TeacherResult(model, tokenizer, metrics, path if use_cache else None, cached=False)


def _save(model, tokenizer, path: str, meta: dict) -> None:
    """Written to a temporary directory that replaces ``path`` at the end (never half a teacher)."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(os.path.join(tmp, "teacher.json"), meta)
