"""Prune MiniLM-L6 on Rotten Tomatoes with the Hugging Face ``Trainer`` (``leap_fx.train.hf.MethodTrainer``).

    python examples/prune_with_hf_trainer.py [--quick] [--out runs/example-b]

``MethodTrainer`` is a stock ``transformers.Trainer`` driven by a method's protocol (any method's config:
``LeapConfig``, ``CofiConfig``, ...). With LEAP its loss is ``(1 - alpha) CE + alpha KD + lambda L_reg``
(Eq. 8) and its optimizer gives the scores S and thresholds sigma their own learning rate (App. A). After training: fold the masks into the
weights, strip empty heads / neurons, export to ONNX and score it in onnxruntime.
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
from leap_fx.train.teacher import train_teacher

QUICK_LIMIT = 800  # reviews per split in --quick mode (same data and teacher as example a)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first 800 reviews per split, short sequences")
    ap.add_argument("--out", default="runs/example-b", help="output directory (default: runs/example-b)")
    ap.add_argument("--target-density", type=float, default=0.3, help="fraction of weights kept (0.3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import TrainingArguments

    from leap_fx.train.hf import MethodTrainer, TensorDictDataset

    max_length, batch, epochs = (32, 16, 2) if args.quick else (64, 32, 2)
    data = load_rotten_tomatoes(seed=0, limit=QUICK_LIMIT if args.quick else None)
    teacher = train_teacher(data=data, max_length=max_length, config=TrainConfig(
        epochs=1 if args.quick else 2, batch_size=batch, lr=5e-5, alpha=0.0, fold=False))

    student = copy.deepcopy(teacher.model)
    example = {k: v for k, v in next(iterate_batches(data.train, 2)).items() if k != "labels"}
    plan = leap_fx.analyze(student, example)
    leap_cfg = leap_fx.LeapConfig(target_density=args.target_density, granularity="hybrid")

    targs = TrainingArguments(output_dir=os.path.join(args.out, "trainer"), num_train_epochs=epochs,
                              per_device_train_batch_size=batch, learning_rate=3e-5,
                              warmup_steps=0.1,  # a float < 1 is a ratio in transformers 5
                              lr_scheduler_type="linear", logging_steps=10, save_strategy="no",
                              report_to=[], use_cpu=True, remove_unused_columns=False, seed=17,
                              disable_tqdm=True)
    trainer = MethodTrainer(model=student, args=targs, train_dataset=TensorDictDataset(data.train),
                            method_config=leap_cfg, plan=plan, teacher=teacher.model,
                            train_config=TrainConfig(alpha=0.9), finalize=False)  # fold below, after measuring
    trainer.train()
    last = [r for r in trainer.state.log_history if "R" in r][-1]
    from leap_fx.train.records import density_by_kind, weight_kinds
    dens = leap_fx.densities(student)
    density = density_by_kind(student, dens, weight_kinds(plan, dens))["density"]  # element-weighted
    print(f"achieved density {density:.4f} (target {args.target_density}); at the last log R(sigma) "
          f"{last['R']:.4f}, lambda {last['lambda']:.1f}")

    leap_fx.fold(student)                       # masks -> exact zeros, plain nn.Linear weights
    slim = student.eval()
    print(leap_fx.strip(slim, plan, example).table())  # self-checked on the example inputs
    export = leap_fx.export_onnx(slim, example, os.path.join(args.out, "model.onnx"))
    acc = onnx_accuracy(export.path, data.test)
    print(f"ONNX {export.path}: parity {max(export.max_abs_diff.values()):.2e}, test accuracy {acc:.4f} "
          f"(dense teacher {teacher.metrics['test_accuracy']:.4f})")
    return {"R": last["R"], "density": density, "test_accuracy": acc,
            "parity": max(export.max_abs_diff.values()), "onnx": export.path}


if __name__ == "__main__":
    print("result:", json.dumps(main()))
