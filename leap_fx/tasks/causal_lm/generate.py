"""Generation from a KV-cache ONNX graph with onnxruntime and the tokenizer only (no torch).

``generate_ids(lm, prompts, config, on_token)``: a batch of prompt id lists (left-padded), a prefill,
then one token per call feeding back the ``present.*`` cache: greedy (argmax) or sampled
(``temperature``, nucleus ``top_p``; ``seed``), stopping a row at an EOS id and the batch when every
row stopped or after ``max_new_tokens``. ``generate(lm, tokenizer, prompt, ...)``: one text prompt
(``chat=True``: through the tokenizer's chat template with a generation prompt), streaming the decoded
text to ``stream`` as it grows. ``load_generator(path)``: the graph and the tokenizer named in its
metadata (a run folder holding ``model.onnx`` is accepted).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from leap_fx.tasks.causal_lm.onnx_lm import OnnxLM


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    eos_token_ids: Optional[list[int]] = None  # None: the graph's metadata

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)   # the new tokens (EOS included when it stopped there)
    stopped_at_eos: bool = False
    seconds: float = 0.0


def next_tokens(logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator) -> np.ndarray:
    """One token per row of ``logits`` ``[B, V]``: argmax, or a sample at ``temperature`` within ``top_p``."""
    if not config.sample:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / config.temperature
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.empty(len(p), dtype=np.int64)
    for i, row in enumerate(p):
        order = np.argsort(-row, kind="stable")
        cum = np.cumsum(row[order])
        n = min(len(row), int(np.searchsorted(cum, config.top_p) + 1))  # smallest set reaching top_p
        keep = order[:n]
        out[i] = keep[rng.choice(n, p=row[keep] / row[keep].sum())]
    return out


def generate_ids(lm: OnnxLM, prompts: Sequence[Sequence[int]], config: GenerationConfig,
                 on_token: Optional[Callable[[np.ndarray], None]] = None) -> tuple[list[list[int]], list[bool]]:
    """``(new token ids per row, stopped at EOS per row)`` (module doc); ``on_token(tokens [B])`` after each step."""
    config.check()
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    eos = set(config.eos_token_ids if config.eos_token_ids is not None else lm.eos_ids())
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    rng = np.random.default_rng(config.seed)
    past, out = lm.empty_past(len(prompts)), [[] for _ in prompts]
    done = np.zeros(len(prompts), dtype=bool)
    for _ in range(config.max_new_tokens):
        logits, past = lm.forward(ids, mask, past)
        tok = next_tokens(logits[:, -1], config, rng)
        for i, t in enumerate(tok):
            if not done[i]:
                out[i].append(int(t))
                done[i] = int(t) in eos
        if on_token is not None:
            on_token(tok)
        if done.all():
            break
        ids, mask = tok[:, None].astype(np.int64), np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], 1)
    return out, [bool(d) for d in done]


def prompt_ids(tokenizer, prompt: str, chat: bool = False) -> list[int]:
    if chat:
        if not getattr(tokenizer, "chat_template", None):  # HF tokenizer attribute
            raise ValueError("--chat needs a tokenizer with a chat template; this one has none")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return list(tokenizer(prompt)["input_ids"])


def generate(lm: OnnxLM, tokenizer, prompt: str, config: Optional[GenerationConfig] = None, chat: bool = False,
             stream: Optional[Callable[[str], None]] = None) -> GenerationResult:
    """Generate from one text prompt; ``stream(text piece)`` receives the decoded text as it grows."""
    config = config or GenerationConfig()
    if config.eos_token_ids is None and not lm.eos_ids() and tokenizer.eos_token_id is not None:
        config.eos_token_ids = [tokenizer.eos_token_id]
    ids = prompt_ids(tokenizer, prompt, chat)
    new: list[int] = []
    shown = [""]

    def emit(tok: np.ndarray) -> None:
        new.append(int(tok[0]))
        text = tokenizer.decode(new, skip_special_tokens=True)
        if stream is not None and not text.endswith("\ufffd") and text.startswith(shown[0]):
            stream(text[len(shown[0]):])
            shown[0] = text
    start = time.perf_counter()
    rows, stopped = generate_ids(lm, [ids], config, emit)
    text = tokenizer.decode(rows[0], skip_special_tokens=True)
    if stream is not None and text != shown[0] and text.startswith(shown[0]):
        stream(text[len(shown[0]):])  # the tail held back (an incomplete UTF-8 sequence at the end)
    return GenerationResult(text, len(ids), rows[0], stopped[0], time.perf_counter() - start)


def load_generator(path: str, threads: Optional[int] = None):
    """``(OnnxLM, tokenizer)`` for an ONNX file or a folder holding ``model.onnx``; the tokenizer is the folder
    named in the graph's metadata."""
    from transformers import AutoTokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "model.onnx")
    lm = OnnxLM(path, threads=threads)
    folder = lm.tokenizer_dir()
    if folder is None or not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: its metadata names no tokenizer folder that exists ({folder!r}); "
                                f"keep the run's tokenizer/ folder beside model.onnx")
    return lm, AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
