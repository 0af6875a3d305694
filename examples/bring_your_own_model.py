"""Bring your own model: analyze -> (masks) -> fold -> strip -> ONNX -> onnxruntime, on ViT and GPT-2.

    python examples/bring_your_own_model.py [--quick] [--out runs/example-c]

Nothing here is specific to BERT: ``leap_fx.analyze`` finds attention heads and FFN neurons from the
traced graph of any model plus example inputs (fused GPT-2 ``c_attn`` Conv1D included). Instead of
training, each family gets *random* LEAP scores and a threshold keeping about half of its heads and
neurons (``LeapConfig(granularity="structured")``), so the example runs in seconds; with training
you would call ``leap_fx.train.train`` (or the HF ``MethodTrainer``) between ``prepare`` and ``fold``.
The stripped model must match the masked one exactly, in PyTorch and in onnxruntime.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
import torch

import leap_fx
from leap_fx.masks import owners
from passes.export import first_tensor


def vit(size: dict):
    from transformers import ViTConfig, ViTForImageClassification
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=size["hidden"],
                    num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                    intermediate_size=4 * size["hidden"], num_labels=10)
    return ViTForImageClassification(cfg).eval(), {"pixel_values": torch.randn(2, 3, 32, 32)}


def gpt2(size: dict):
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=500, n_positions=64, n_embd=size["hidden"], n_layer=size["layers"],
                     n_head=size["heads"], use_cache=False, bos_token_id=0, eos_token_id=0)
    ids = torch.randint(0, 500, (2, 12))
    return GPT2LMHeadModel(cfg).eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


MODELS = {"vit": vit, "gpt2": gpt2}
SIZES = {"quick": dict(hidden=64, layers=2, heads=4), "full": dict(hidden=256, layers=4, heads=8)}


def random_masks(model, keep: float, seed: int) -> None:
    """Random scores S; sigma = T logit(keep), so Top-k keeps ceil(keep * n) granules (Eq. 3-4)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for owner in owners(model).values():
            owner.scores.copy_(torch.randn(owner.scores.shape, generator=g))
            owner.sigma.fill_(owner.temperature * math.log(keep / (1 - keep)))


def run(name: str, size: dict, out: str, keep: float = 0.5, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model, example = MODELS[name](size)
    plan = leap_fx.analyze(model, example)
    print(plan.table())

    leap_fx.prepare(model, leap_fx.LeapConfig(target_density=keep, granularity="structured"), plan)
    random_masks(model, keep, seed)
    leap_fx.fold(model)  # masks baked in: dropped heads / neurons are exact zeros
    with torch.no_grad():
        masked = first_tensor(model(**example)).numpy()  # logits of the masked (dense-shaped) model
    params = sum(p.numel() for p in model.parameters())

    slim = model
    report = leap_fx.strip(slim, plan, example)  # self-checked: outputs before == after
    print(report.table())
    export = leap_fx.export_onnx(slim, example, os.path.join(out, f"{name}.onnx"))

    import onnxruntime as ort
    sess = ort.InferenceSession(export.path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in example.items()})[0]
    diff = float(np.abs(got - masked).max())
    slim_params = sum(p.numel() for p in slim.parameters())
    print(f"{name}: params {params} -> {slim_params}; onnxruntime(slim) vs PyTorch(masked) max |diff| "
          f"{diff:.2e}; {export.path}\n")
    return {"params": params, "slim_params": slim_params, "max_abs_diff": diff, "onnx": export.path,
            "kept": {k: len(v["kept"]) for k, v in report.families.items()}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models (hidden 64, 2 layers)")
    ap.add_argument("--out", default="runs/example-c", help="output directory (default: runs/example-c)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="models to run")
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of heads / neurons kept (0.5)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    size = SIZES["quick" if args.quick else "full"]
    results = {name: run(name, size, args.out, args.keep) for name in args.models}
    worst = max(r["max_abs_diff"] for r in results.values())
    if worst > 1e-4:
        raise SystemExit(f"slim ONNX differs from the masked model by {worst:.2e} > 1e-4")
    return results


if __name__ == "__main__":
    print("result:", json.dumps(main()))
