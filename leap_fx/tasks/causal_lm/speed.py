"""Tokens per second of KV-cache ONNX graphs in onnxruntime, two (or more) files interleaved in one process.

Per repetition and per model, in turn: **prefill** (batch 1, a ``prompt``-token prompt, empty cache:
``prompt / seconds``) and **decode** at each batch size (after that prompt's prefill, untimed,
``new_tokens`` greedy steps of one token each feeding back the cache: ``batch * new_tokens / seconds``).
Models take turns inside every repetition, so machine load hits them alike; medians over repetitions,
with the interquartile range. Prompts are seeded random ids. Sessions use onnxruntime's full graph
optimisations and ``threads`` intra-op threads (None: onnxruntime's default); ``spin=False`` makes them
wait passively (better on a shared, loaded machine).
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from leap_fx.tasks.causal_lm.onnx_lm import OnnxLM


def _prefill(lm: OnnxLM, prompt: np.ndarray) -> float:
    start = time.perf_counter()
    lm.forward(prompt, np.ones_like(prompt), lm.empty_past(len(prompt)))
    return time.perf_counter() - start


def _decode(lm: OnnxLM, prompt: np.ndarray, new_tokens: int) -> float:
    mask = np.ones_like(prompt)
    logits, past = lm.forward(prompt, mask, lm.empty_past(len(prompt)))
    start = time.perf_counter()
    for _ in range(new_tokens):
        tok = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones_like(tok)], 1)
        logits, past = lm.forward(tok, mask, past)
    return time.perf_counter() - start


def _stats(values: list[float]) -> dict:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(med), "iqr": [float(q1), float(q3)], "runs": len(values)}


def lm_speed(models: dict[str, str], *, prompt: int = 256, new_tokens: int = 128, batches: Sequence[int] = (1, 8),
             repeats: int = 3, threads: Optional[int] = None, seed: int = 0, warmup: bool = True,
             spin: bool = True) -> dict:
    """``{name: {"prefill_tokens_per_s": stats, "decode_tokens_per_s": {batch: stats}}, "speedup": {...}}``
    for ``models`` (name -> ONNX path); ``speedup`` is each model's median over the first model's."""
    if not models:
        raise ValueError("give at least one ONNX model")
    lms = {name: OnnxLM(path, threads=threads, spin=spin) for name, path in models.items()}
    vocab = min(lm.vocab_size for lm in lms.values())
    rng = np.random.default_rng(seed)
    prompts = {b: rng.integers(4 if vocab > 8 else 0, vocab, (b, prompt), dtype=np.int64) for b in {1, *batches}}
    if warmup:
        for lm in lms.values():
            _decode(lm, prompts[1][:, :8], 2)
    pre = {n: [] for n in lms}
    dec = {n: {b: [] for b in batches} for n in lms}
    for _ in range(repeats):
        for name, lm in lms.items():
            pre[name].append(prompt / _prefill(lm, prompts[1]))
            for b in batches:
                dec[name][b].append(b * new_tokens / _decode(lm, prompts[b], new_tokens))
    out = {name: {"prefill_tokens_per_s": _stats(pre[name]),
                  "decode_tokens_per_s": {str(b): _stats(dec[name][b]) for b in batches}} for name in lms}
    first = next(iter(lms))
    speedup = {}
    for name in list(lms)[1:]:
        speedup[name] = {"prefill": out[name]["prefill_tokens_per_s"]["median"] / out[first]["prefill_tokens_per_s"]["median"],
                         **{f"decode_b{b}": out[name]["decode_tokens_per_s"][str(b)]["median"]
                            / out[first]["decode_tokens_per_s"][str(b)]["median"] for b in batches}}
    return {"models": out, "speedup": speedup, "reference": first, "prompt": prompt, "new_tokens": new_tokens,
            "batches": list(batches), "repeats": repeats, "threads": threads, "spin": spin}
