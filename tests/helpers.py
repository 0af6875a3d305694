"""Shared test builders (tiny data, a tiny model folder, the run options of the tiny runs, folder snapshots):
imported by the tests that need them, never from one test module into another."""
import csv
import os
import random

import torch

from leap_fx.spec.options import PruneOptions
from tests.conftest import tiny_bert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository

POS = "good great fine nice superb lovely".split()
NEG = "bad awful poor dull boring ugly".split()
NEUTRAL = "movie film plot actor scene the a it was".split()


def write_tiny_corpus(folder, rows=160, seed=0):
    """``(csv path, tokenizer)``: labelled reviews and a word-level vocab (fits tiny_bert's 100 ids)."""
    from transformers import BertTokenizerFast
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POS + NEG + NEUTRAL
    rng = random.Random(seed)
    path = os.path.join(folder, "reviews.csv")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "sentiment"])
        for _ in range(rows):
            pos = rng.random() < 0.5
            words = [rng.choice(POS if pos else NEG) for _ in range(2)] + [rng.choice(NEUTRAL) for _ in range(4)]
            rng.shuffle(words)
            w.writerow([" ".join(words), "pos" if pos else "neg"])
    return path, BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def tiny_model_folder(folder):
    """A tiny corpus and a saved tiny BERT with its tokenizer in ``folder``: ``(csv_path, tokenizer, model_dir)``."""
    csv_path, tok = write_tiny_corpus(str(folder))
    model_dir = folder / "tiny-bert"
    tiny_bert().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return csv_path, tok, model_dir


def tiny_options(csv_path, out, **kw):
    """The options of a tiny run. ``continue_anyway``: a tiny teacher on 16 validation rows is often not
    clearly above the majority-class rate; tests of the stop that follows pass ``continue_anyway=False``."""
    base = dict(data=csv_path, text_column="review", label_column="sentiment", out=str(out),
                granularity="structured", target_density=0.5, epochs=2, teacher_epochs=6, batch_size=16,
                max_length=16, lr=1e-3, teacher_lr=3e-3, verbose=False, continue_anyway=True)
    base.update(kw)
    return PruneOptions(**base)


def snapshot(folder):
    """Every file's bytes under ``folder``; the lock file only by presence (it holds a pid and a time)."""
    from leap_fx.run.rundir import LOCK
    out = {}
    for root, dirs, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = b"" if f == LOCK else open(p, "rb").read()
    return out


def toy_data(n=128, seq=12, seed=0):
    """Random tokens; the label is whether token 1 is in the upper half of the vocabulary (learnable)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (n, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[:, 1] >= 50).long()}


def owners_state(model):
    from leap_fx.masks import owners
    return {k: (getattr(o, "sigma", o.expected_density()).detach().clone(), o.scores.detach().clone())
            for k, o in owners(model).items()}


def _tiny_model_dir(tmp_path):
    from transformers import BertTokenizer
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "fun", "bad", "dull", "awful",
             "film", "plot", "the", "a"]
    d = tmp_path / "model"
    tiny_bert().save_pretrained(str(d))
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    assert tok("the good film")["input_ids"] == [2, 13, 5, 11, 3]
    tok.save_pretrained(str(d))
    return str(d)


def overrides(csv_path):
    return dict(data=csv_path, text_column="review", label_column="sentiment", max_length=16, batch_size=16,
                lr=1e-3, teacher_lr=3e-3, teacher_epochs=6, block_size=8,
                mask_lr_scale=1.0, lambda_min=10.0, score_init="zero")  # tuned for this ~50-step tiny run


SCRIPT = os.path.join(ROOT, "examples", "ddp_tiny.py")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


README = os.path.join(ROOT, "README.md")


def readme_blocks(lang: str) -> list[str]:
    """The README's fenced code blocks of language ``lang``, in order."""
    import re
    text = open(README, encoding="utf-8").read()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a bash block as the shell splits them: ``\\`` continuations joined, comments dropped,
    ``&&`` chains cut into their commands, quotes removed (each command's argv). Any other shell operator
    (``|``, ``;``, ``>``, ``&``, ...) is refused: a README command the tests cannot read like a shell does."""
    import shlex
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        ops = {w for w in words if w and all(c in lexer.punctuation_chars for c in w)} - {"&&"}
        if ops:
            raise ValueError(f"README bash line {line!r}: shell operator(s) {sorted(ops)} not understood")
        argv: list[str] = []
        for w in words + ["&&"]:
            if w == "&&":
                if argv:
                    found.append(argv)
                argv = []
            else:
                argv.append(w)
    return found
