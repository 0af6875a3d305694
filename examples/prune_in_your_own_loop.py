"""Any method, any task, your own loop: leap_fx.Pruner on three tasks the job's CLI knows too, each driven here by
hand — an image classifier (ViT) pruned by LEAP in a hand-written loop and by Kwon et al. (one-shot, Fisher of
your loss), a token classifier (BERT) by Kwon, an extractive QA model (BERT) by LEAP — each ending in strip ->
export_onnx -> an onnxruntime run compared with PyTorch. Tiny models from configs and random batches: the point
is the lifecycle, not accuracy (under a minute on 2 CPU cores).

    python examples/prune_in_your_own_loop.py [--quick] [--out runs/own-loop]
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import onnxruntime as ort
import torch
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForTokenClassification,
    ViTConfig,
    ViTForImageClassification,
)

import leap_fx

BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def loss_fn(model, batch):  # every HF head computes its task loss from the labels in the batch
    return model(**batch).loss


def vit_batches(n=8):
    return [{"pixel_values": torch.randn(8, 3, 32, 32), "labels": torch.randint(0, 3, (8,))} for _ in range(n)]


def token_batches(n=8):
    return [{"input_ids": torch.randint(5, 100, (8, 12)), "attention_mask": torch.ones(8, 12, dtype=torch.long),
             "labels": torch.randint(0, 5, (8, 12))} for _ in range(n)]


def qa_batches(n=8):
    return [{"input_ids": torch.randint(5, 100, (8, 16)), "attention_mask": torch.ones(8, 16, dtype=torch.long),
             "start_positions": torch.randint(0, 16, (8,)), "end_positions": torch.randint(0, 16, (8,))}
            for _ in range(n)]


def inputs_of(batch):
    """The model inputs of a batch (labels are for the loss, not for tracing or export)."""
    return {k: v for k, v in batch.items() if k in ("pixel_values", "input_ids", "attention_mask")}


def trained(model, config, batches, steps):
    """LEAP (or any trained method) in a loop of your own."""
    pruner = leap_fx.Pruner(model, config, example_inputs=inputs_of(batches[0]), loss_fn=loss_fn, steps=steps)
    opt = pruner.optimizer(lr=1e-3)
    for step in range(steps):
        pruner.step(batches[step % len(batches)], opt)
    return pruner


def one_shot(model, config, batches):
    """Kwon et al. (or any one-shot method): calibrated on your batches, Fisher of your loss."""
    pruner = leap_fx.Pruner(model, config, example_inputs=inputs_of(batches[0]), loss_fn=loss_fn)
    pruner.calibrate(batches)
    return pruner


def finish(name, pruner, example, out):
    """fold -> strip -> export_onnx -> onnxruntime, compared with the stripped PyTorch model."""
    pruner.finish()
    params = sum(p.numel() for p in pruner.model.parameters())  # folded: the dense weights again
    report = pruner.strip()
    path = os.path.join(out, f"{name}.onnx")
    pruner.export(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: example[i.name].numpy() for i in session.get_inputs()}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        out_t = pruner.model(**example)
    ref = (out_t.logits if hasattr(out_t, "logits") else out_t.start_logits).numpy()
    return {"params": params, "slim_params": report.params_after, "kept": report.kept(),
            "max_abs_diff": float(np.abs(got - ref).max())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (the tests' setting)")
    ap.add_argument("--out", default="runs/own-loop", help="where the ONNX files go (default: runs/own-loop)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    steps = 60 if args.quick else 200
    torch.manual_seed(0)
    vit = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, num_labels=3)
    result = {}
    batches = vit_batches()
    leap = leap_fx.LeapConfig(target="flops:0.5", granularity="structured")
    result["vit-leap"] = finish("vit-leap", trained(ViTForImageClassification(vit), leap, batches, steps),
                                inputs_of(batches[0]), args.out)
    kwon = leap_fx.KwonConfig(target="flops:0.5")
    result["vit-kwon"] = finish("vit-kwon", one_shot(ViTForImageClassification(vit), kwon, batches),
                                inputs_of(batches[0]), args.out)
    batches = token_batches()
    result["token-kwon"] = finish("token-kwon", one_shot(BertForTokenClassification(BertConfig(num_labels=5, **BERT)),
                                                         kwon, batches), inputs_of(batches[0]), args.out)
    batches = qa_batches()
    result["qa-leap"] = finish("qa-leap", trained(BertForQuestionAnswering(BertConfig(**BERT)), leap, batches, steps),
                               inputs_of(batches[0]), args.out)
    for name, r in result.items():
        print(f"{name:10s} params {r['params']:>7,} -> {r['slim_params']:>7,}  onnxruntime vs PyTorch "
              f"{r['max_abs_diff']:.1e}")
    print("result: " + json.dumps(result))


if __name__ == "__main__":
    main()
