"""Pieces of ``leap_fx.pipeline.run_prune``: output directory, data, teacher, configs, artifacts."""
from __future__ import annotations

import copy
import json
import os
import random
import shutil
import tempfile
from typing import Optional

import torch

ARTIFACTS = ("report.json", "options.json", "model.onnx", "density.png", "curves.png", "slim",
             "tokenizer", "train", "teacher", "model.failed.onnx")
CHECKPOINT_MINUTES = 2.0  # besides every epoch: a killed run loses at most this much training
RT_NAMES = ("rotten_tomatoes", "rotten-tomatoes", "rt")
SCORE_INITS = ("magnitude", "zero")
SCORE_PRIOR_STEPS = 20.0  # warm_start_scores: the magnitude prior is worth this many S steps
# options that may differ between a run and its --resume (they do not change results)
RESUME_FREE = ("out", "overwrite", "resume", "verbose", "threads", "cache_dir", "use_cache")


# -- output directory ---------------------------------------------------------------------------
def prepare_out_dir(out: str, opts) -> Optional[dict]:
    """Create ``out`` for a new run; refuse to mix runs. Returns the report of a finished run on resume."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a directory: choose a directory path")
    existing = [a for a in ARTIFACTS if os.path.exists(os.path.join(out, a))]
    if existing and opts.resume:
        previous = os.path.join(out, "options.json")
        if not os.path.isfile(previous):
            raise ValueError(f"{out} has no options.json, so it cannot be resumed: pass --overwrite "
                             f"to start over there, or choose another --out")
        with open(previous) as fh:
            before = json.load(fh)
        now = opts.to_dict()
        diff = sorted(k for k in now if k not in RESUME_FREE and before.get(k) != now[k])
        if diff:
            raise ValueError(f"{out} holds a run with different options ({', '.join(diff)}): resume with "
                             f"the same options, or pass --overwrite / another --out")
        report = os.path.join(out, "report.json")
        if os.path.isfile(report):
            with open(report) as fh:
                return json.load(fh)
    elif existing and not opts.overwrite:
        raise ValueError(f"output directory {out} already holds a leap-fx run ({', '.join(existing)}): "
                         f"pass --overwrite to replace it, --resume to continue it, or choose another --out")
    elif existing:
        for name in existing:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(out, exist_ok=True)
    from leap_fx.report import write_json
    write_json(os.path.join(out, "options.json"), opts.to_dict())
    return None


def validate(opts) -> None:
    """Settings that only fail later (LeapConfig: granularity, block size, ...) checked up front."""
    from leap_fx.config import LeapConfig
    LeapConfig(target_density=opts.target_density, granularity=opts.granularity, block_size=opts.block_size,
               temperature=opts.temperature, lambda_max=opts.lambda_max, lambda_min=opts.lambda_min)
    if opts.model is not None and not os.path.isfile(os.path.join(opts.model, "config.json")):
        raise ValueError(f"--model {opts.model!r} is not a Hugging Face model directory (no config.json)")


# -- data ---------------------------------------------------------------------------------------
def _subset(split, n: Optional[int], seed: int):
    """A seeded random subset of ``n`` examples (file order kept), or ``split`` itself."""
    if n is None or len(split) <= n:
        return split
    idx = sorted(random.Random(seed).sample(range(len(split)), int(n)))
    pick = (lambda xs: None if xs is None else [xs[i] for i in idx])
    return type(split)(texts=pick(split.texts), labels=pick(split.labels), label_names=split.label_names,
                       text_pairs=pick(split.text_pairs), groups=pick(split.groups))


def _split_file(split, seed: int, fractions=(0.8, 0.1, 0.1)):
    n = len(split)
    if n < 10:
        raise ValueError(f"the data file has only {n} rows; need at least 10 to split 80/10/10 (or pass "
                         f"--validation-data and --test-data)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    parts = []
    for idx in (sorted(order[:a]), sorted(order[a:b]), sorted(order[b:])):
        pick = (lambda xs: None if xs is None else [xs[i] for i in idx])
        parts.append(type(split)(texts=pick(split.texts), labels=pick(split.labels),
                                 label_names=split.label_names, text_pairs=pick(split.text_pairs)))
    return parts


def load_data(opts):
    """``DatasetSplits`` (not tokenised) for ``opts.data``, subsampled to the mode's budget."""
    from leap_fx.data import DatasetSplits, load_rotten_tomatoes, load_text_file
    if opts.data in RT_NAMES:
        data = load_rotten_tomatoes(seed=opts.split_seed)
    else:
        kw = dict(text_column=opts.text_column, text_pair_column=opts.text_pair_column,
                  label_column=opts.label_column)
        train = load_text_file(opts.data, **kw)
        if (opts.validation_data is None) != (opts.test_data is None):
            raise ValueError("pass both --validation-data and --test-data, or neither (then the data "
                             "file is split 80/10/10)")
        if opts.validation_data is None:
            train, val, test = _split_file(train, opts.split_seed)
        else:
            val = load_text_file(opts.validation_data, labels=train.label_names, **kw)
            test = load_text_file(opts.test_data, labels=train.label_names, **kw)
        if len(train.label_names) < 2:
            raise ValueError(f"{opts.data}: column {opts.label_column!r} has a single label value "
                             f"{train.label_names}; a classifier needs at least two")
        data = DatasetSplits(train, val, test, label_names=list(train.label_names))
    return DatasetSplits(_subset(data.train, opts.max_train_examples, opts.split_seed),
                         _subset(data.validation, opts.max_eval_examples, opts.split_seed + 1),
                         _subset(data.test, opts.max_eval_examples, opts.split_seed + 2),
                         label_names=list(data.label_names))


def example_inputs(split, n: int = 2) -> dict:
    """The first ``n`` examples as model inputs (no labels), trimmed to their longest row."""
    from leap_fx.data import iterate_batches
    batch = next(iterate_batches(split, n))
    return {k: v for k, v in batch.items() if k != "labels"}


def flop_inputs(split, max_length: int) -> dict:
    """One example at the full ``max_length`` (what FLOPs are counted on)."""
    feats = split.features
    return {k: v[:1].clone() for k, v in feats.items() if k != "labels"}


# -- teacher ------------------------------------------------------------------------------------
def teacher_config(opts):
    from leap_fx.train import TrainConfig
    return TrainConfig(method="dense", epochs=opts.teacher_epochs, batch_size=opts.batch_size,
                       lr=opts.teacher_lr, warmup_ratio=0.1, alpha=0.0, log_every=50, seed=opts.seed,
                       fold=False, checkpoint_minutes=CHECKPOINT_MINUTES)


def dense_teacher(opts, data, model=None, tokenizer=None, teacher=None, work_dir: Optional[str] = None):
    """``(base model, tokenizer, teacher, info)``; the teacher is fine-tuned (cached) unless given.

    ``work_dir``: checkpoints of the fine-tune, so a killed run resumes it (``--resume``)."""
    from leap_fx.models import default_model_dir, load_classifier, load_tokenizer
    from leap_fx.train import accuracy, train
    from leap_fx.train.teacher import train_teacher
    cfg = teacher_config(opts)
    model_dir = None
    if model is None:
        model_dir = opts.model or default_model_dir()
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise ValueError(f"--model {model_dir!r} is not a Hugging Face model directory (no config.json)")
        tokenizer = tokenizer or load_tokenizer(model_dir)
    elif tokenizer is None:
        raise ValueError("run_prune(model=...) also needs tokenizer=... (the model's tokenizer)")
    _check_labels(model, data)
    data.tokenize(tokenizer, opts.max_length)
    info = {"config": cfg.to_dict(), "cached": False, "path": None, "injected": teacher is not None}
    if teacher is None and model_dir is not None:
        res = train_teacher(model_dir, data, seed=opts.split_seed, max_length=opts.max_length, config=cfg,
                            cache_dir=opts.cache_dir, use_cache=opts.use_cache, quiet=not opts.verbose,
                            work_dir=work_dir)
        teacher, info["metrics"], info["cached"], info["path"] = res.model, res.metrics, res.cached, res.path
    else:
        if teacher is None:
            teacher = train(copy.deepcopy(model), None, data.train, data.validation, cfg,
                            quiet=not opts.verbose, out_dir=work_dir).model
        teacher.eval()
        info["metrics"] = {"val_accuracy": accuracy(teacher, data.validation),
                           "test_accuracy": accuracy(teacher, data.test)}
    if opts.student_init == "pretrained" and model is None:
        model, _ = load_classifier(model_dir, num_labels=len(data.label_names), seed=opts.seed,
                                   label_names=list(data.label_names))
    return model, tokenizer, teacher.eval(), info


def _check_labels(model, data) -> None:
    n = getattr(getattr(model, "config", None), "num_labels", None)
    if model is not None and n is not None and n != len(data.label_names):
        raise ValueError(f"the model has num_labels={n} but the data has {len(data.label_names)} labels "
                         f"{data.label_names}: build the classifier with num_labels={len(data.label_names)}")


# -- configs ------------------------------------------------------------------------------------
def configs(opts, data):
    """``(TrainConfig, LeapConfig)`` of the pruning run."""
    from leap_fx.config import LeapConfig
    from leap_fx.train import TrainConfig, total_steps
    cfg = TrainConfig(method=opts.method, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr,
                      mask_lr=opts.mask_lr, mask_lr_scale=opts.mask_lr_scale, alpha=opts.alpha, seed=opts.seed, log_every=1,
                      checkpoint_minutes=CHECKPOINT_MINUTES)
    steps = total_steps(cfg, data.train)
    cfg.log_every = max(1, steps // 100)
    leap = LeapConfig(target_density=opts.target_density, granularity=opts.granularity,
                      block_size=opts.block_size, temperature=opts.temperature, lambda_max=opts.lambda_max,
                      lambda_min=opts.lambda_min)
    return cfg, leap


def effective_mask_lr(train_cfg, leap_cfg, steps: int) -> float:
    """The S/sigma learning rate the run trains with: the training method's own choice."""
    from leap_fx.train.methods import make_method
    return float(make_method(train_cfg, leap_cfg, None, steps).mask_lr())


def warm_start_scores(model, leap_cfg, plan, mask_lr: float, prior_steps: float = SCORE_PRIOR_STEPS) -> dict:
    """``prepare`` the model now and start S from a magnitude prior instead of zeros.

    Per owner, ``S_g = prior_steps * mask_lr * m_g / mean(m)`` with ``m_g = sum |W|`` over granule g
    (all tied members). Zero-initialised S (movement pruning, the paper) makes the first Top-K masks
    arbitrary; over ~10^5 steps that does not matter, but a few hundred steps prune before S has
    learned anything. The prior is worth ``prior_steps`` consistent Adam steps of S, so movement
    (dL/dS = dL/dW' * W) overrides it where the gradients agree. Returns ``{owner: mean m}``.
    """
    import leap_fx
    from leap_fx.lifecycle import owners
    from leap_fx.train.baselines import magnitude_scores
    leap_fx.prepare(model, leap_cfg, plan)
    own = owners(model)
    saved = {k: o.fixed_k for k, o in own.items()}
    for o in own.values():
        o.fixed_k = 1.0  # every granule kept while measuring: no granule scores 0 by accident
    try:
        mags = magnitude_scores(model, own)
    finally:
        for k, o in own.items():
            o.fixed_k = saved[k]
    means = {}
    with torch.no_grad():
        for k, o in own.items():
            m = mags[k].to(o.scores.dtype)
            means[k] = float(m.mean())
            o.scores.copy_(prior_steps * mask_lr * m / m.mean().clamp_min(1e-12))
    return means


# -- artifacts ----------------------------------------------------------------------------------
def save_tokenizer(tokenizer, path: str) -> str:
    parent = os.path.dirname(path)
    tmp = tempfile.mkdtemp(prefix=".tokenizer.tmp-", dir=parent)
    try:
        tokenizer.save_pretrained(tmp)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_plots(report: dict, history: list[dict], out: str) -> dict:
    from leap_fx.plots import curves_plot, density_plot
    target = report["density"]["target"]
    name = f"{report['options']['method']} {report['options']['granularity']}"
    paths = {"density": density_plot(report["density"]["per_matrix"], os.path.join(out, "density.png"),
                                     target, f"Density per matrix ({name}, target {target:g})"),
             "curves": curves_plot(history, os.path.join(out, "curves.png"), target,
                                   f"Training curves ({name})")}
    report["plots"] = paths
    return paths


def set_threads(n: int) -> None:
    if n:
        torch.set_num_threads(int(n))
