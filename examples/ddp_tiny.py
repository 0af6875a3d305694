"""A tiny LEAP run (config-built BERT, synthetic data) on one or several processes.

    python examples/ddp_tiny.py --out /tmp/run                            # one process
    torchrun --nproc_per_node 2 examples/ddp_tiny.py --out /tmp/run2      # DDP, gloo on CPU
    python examples/ddp_tiny.py --out /tmp/run                            # again: resumes

Same seed and global batch size => the same σ, R and loss trajectory on 1 or N processes. A
re-run with the same ``--out`` resumes from ``OUT/train/checkpoint.pt``. Rank 0 writes
``OUT/result.json`` (history, final σ and |S| per owner, density, σ gradients of every step). The tests
``tests/test_resume.py`` and ``tests/test_distributed.py`` drive this script; ``--step-delay`` and
``--hang-at-save`` only slow it down so a test can kill it mid-training or mid-save.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_bert(seed: int = 0, num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval()


def toy_data(n: int = 100, seq: int = 12, seed: int = 0) -> dict:
    """Right-padded random tokens of varying length; label: token 1 in the upper half of the vocab."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(4, seq + 1, (n,), generator=g)
    mask = (torch.arange(seq)[None] < lens[:, None]).long()
    ids = torch.randint(1, 100, (n, seq), generator=g) * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": (ids[:, 1] >= 50).long()}


def _record_grads(model, sink: list):
    """Append the σ gradients (and per-owner sums of |grad S|) the optimizer sees at every step."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from leap_fx.masks import owners

    def hook(optimizer, args, kwargs):
        own = owners(model)
        sink.append({"sigma": {k: float(o.sigma.grad) for k, o in own.items()
                               if getattr(o, "sigma", None) is not None and o.sigma.grad is not None},
                     "scores_abs": {k: float(o.scores.grad.abs().sum()) for k, o in own.items()
                                    if o.scores.grad is not None}})
    return register_optimizer_step_pre_hook(hook)


def _slow_steps(model, delay: float):
    if delay > 0:
        model.register_forward_pre_hook(lambda m, a: time.sleep(delay) if m.training else None)


def _hang_in_save(n: int, ready: str):
    """Make the ``n``-th checkpoint save write half a file, signal ``ready`` and hang (to be killed)."""
    import io
    real, calls = torch.save, {"n": 0}

    def save(obj, fh, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < n:
            return real(obj, fh, *args, **kwargs)
        buf = io.BytesIO()
        real(obj, buf)
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        fh.flush()
        open(ready, "w").close()
        time.sleep(600)
    torch.save = save


def _start_step(train_dir: str) -> int:
    from leap_fx.train.checkpoint import CHECKPOINT, read_checkpoint
    path = os.path.join(train_dir, CHECKPOINT)
    return read_checkpoint(path)["step"] if os.path.exists(path) else 0


def run(out: str, steps: int = 24, checkpoint_every: int = 4, method: str = "leap",
        granularity: str = "hybrid", batch_size: int = 16, n: int = 100, step_delay: float = 0.0,
        hang_at_save: int = 0, log_every: int = 1, stop_after: Optional[int] = None,
        extra_unused: bool = False) -> dict:
    from leap_fx.masks import owners
    from leap_fx.methods import config_class
    from leap_fx.spec.train import TrainConfig
    from leap_fx.train import train
    from leap_fx.train.distributed import Dist

    dist = Dist.current()
    model, teacher = tiny_bert(0), tiny_bert(1)
    if extra_unused:  # a trainable parameter the forward never uses: DDP must be told
        model.unused = torch.nn.Parameter(torch.zeros(3))
    _slow_steps(model, step_delay)
    if hang_at_save:
        _hang_in_save(hang_at_save, os.path.join(out, "saving"))
    cfg = TrainConfig(epochs=100, max_steps=steps, batch_size=batch_size, lr=1e-3,
                      log_every=log_every, eval_every=1000, checkpoint_every=checkpoint_every, fold=False)
    method_config = config_class(method)(target_density=0.3, granularity=granularity, block_size=8)
    grads: list = []
    handle = _record_grads(model, grads)
    start = _start_step(os.path.join(out, "train"))
    res = train(model, teacher, toy_data(n), None, cfg, method_config, out_dir=os.path.join(out, "train"), quiet=True,
                stop_after=stop_after)
    handle.remove()
    result = {"world": dist.world, "step": res.metrics["step"], "density": res.metrics.get("density"),
              "history": [r for r in res.history if r["type"] == "train"],
              "sigma": {k: float(o.sigma.detach()) for k, o in owners(res.model).items() if hasattr(o, "sigma")},
              "scores_abs": {k: float(o.scores.detach().abs().sum()) for k, o in owners(res.model).items()},
              "grads": {start + i + 1: g for i, g in enumerate(grads)}}
    if dist.is_main:
        from passes.io import write_text
        write_text(os.path.join(out, "result.json"), json.dumps(result))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--checkpoint-every", type=int, default=4)
    p.add_argument("--method", default="leap")
    p.add_argument("--granularity", default="hybrid")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--step-delay", type=float, default=0.0, help="seconds of sleep per training forward")
    p.add_argument("--stop-after", type=int, help="stop (unfinished, as if interrupted) after this step")
    p.add_argument("--extra-unused", action="store_true", help="add a parameter the forward never uses")
    p.add_argument("--hang-at-save", type=int, default=0, help="test only: hang inside the N-th save")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from leap_fx.train.distributed import init_from_env, shutdown
    init_from_env()
    try:
        run(a.out, a.steps, a.checkpoint_every, a.method, a.granularity, a.batch_size, a.examples,
            a.step_delay, a.hang_at_save, stop_after=a.stop_after, extra_unused=a.extra_unused)
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
