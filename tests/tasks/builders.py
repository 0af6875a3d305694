"""Tiny model folders and generated data for the task tests (no downloads, fixed seeds).

- ``text_model_folder(folder, head)``: a 2-layer BERT (hidden 32, 4 heads) saved with a word-level fast
  tokenizer over ``WORDS``; ``head``: "token" / "qa" (transformers' classes) ;
- ``vit_folder(folder, processor)``: a 2-layer ViT (16x16 images, 4x4 patches), optionally with a
  ``preprocessor_config.json``;
- ``ner_rows`` / ``qa_rows`` / ``image_folder``: learnable generated data (names are PER, cities LOC; the
  answer to "where does X live" is the city after X; classes are colours).
"""
from __future__ import annotations

import json
import os
import random

import numpy as np
import torch

PEOPLE = "anna bob carl dora emil fay".split()
CITIES = "paris rome oslo lima kyiv bern".split()
FILLER = "the a lives in works at and likes visits where does live who is".split()
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", "."] + PEOPLE + CITIES + FILLER + ["new", "york"]


def tokenizer():
    from transformers import BertTokenizerFast
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(WORDS))})


def text_model_folder(folder, head: str, num_labels: int = 2, seed: int = 0) -> str:
    from transformers import (
        BertConfig,
        BertForQuestionAnswering,
        BertForTokenClassification,
    )
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=128, num_labels=num_labels, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    model = {"token": BertForTokenClassification, "qa": BertForQuestionAnswering}[head](cfg)
    path = os.path.join(str(folder), f"tiny-bert-{head}")
    model.save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path


def vit_folder(folder, processor: bool = False, num_labels: int = 3, seed: int = 0) -> str:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=num_labels, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    path = os.path.join(str(folder), "tiny-vit" + ("-proc" if processor else ""))
    ViTForImageClassification(cfg).save_pretrained(path)
    if processor:
        ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.4, 0.5, 0.6],
                          image_std=[0.2, 0.25, 0.3]).save_pretrained(path)
    return path


def ner_rows(n: int = 120, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(2, 3)):
            if rng.random() < 0.5:
                words += [rng.choice(PEOPLE)]
                tags += ["B-PER"]
            else:
                words += [rng.choice(["new", rng.choice(CITIES)])]
                tags += ["B-LOC"]
                if words[-1] == "new":
                    words.append("york")
                    tags.append("I-LOC")
            filler = rng.choice(FILLER)
            words.append(filler)
            tags.append("O")
        rows.append({"tokens": words, "tags": tags})
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return str(path)


def qa_rows(n: int = 120, seed: int = 0) -> list[dict]:
    """Contexts "x lives in c . y lives in d ." and "where does x live ?" -> c."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        people = rng.sample(PEOPLE, 3)
        cities = [rng.choice(CITIES) for _ in people]
        context = " ".join(f"{p} lives in {c} ." for p, c in zip(people, cities))
        k = rng.randrange(3)
        start = context.index(f"{people[k]} lives in ") + len(f"{people[k]} lives in ")
        rows.append({"id": f"q{i}", "question": f"where does {people[k]} live ?", "context": context,
                     "answers": {"text": [cities[k]], "answer_start": [start]}})
    return rows


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def image_folder(root, per_class: int = 30, seed: int = 0, size: int = 12) -> str:
    """Class sub-folders of noisy single-colour PNGs (12x12: resized to the model's 16x16)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        os.makedirs(os.path.join(str(root), name), exist_ok=True)
        for i in range(per_class):
            arr = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(os.path.join(str(root), name, f"{i}.png"))
    return str(root)
