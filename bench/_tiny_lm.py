"""A tiny language model and corpus for ``bench/llm.py --tiny`` (seconds, for tests): a config-built Llama
(GQA, 2 layers) over a byte-level BPE tokenizer trained on a synthetic corpus, then fitted to that corpus
for a few dozen steps so the dense model is better than chance and pruning visibly costs perplexity.
"""
from __future__ import annotations

import os
import random

import torch

__all__ = ["tiny_setup"]

WORDS = ("the cat sat on the mat and the dog sat on the log a quick brown fox jumps over the lazy dog "
         "pruning removes heads and neurons from a small transformer").split()
FIT_STEPS, FIT_LR, BLOCK = 80, 3e-3, 32


def _corpus(path: str, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(60):  # a little grammar: a word mostly follows its predecessor in WORDS
        i, words = rng.randrange(len(WORDS)), []
        for _ in range(70):
            i = (i + 1) % len(WORDS) if rng.random() < 0.7 else rng.randrange(len(WORDS))
            words.append(WORDS[i])
        docs.append(" ".join(words))
    with open(path, "w") as fh:
        fh.write("\n\n".join(docs) + "\n")
    return docs


def _tokenizer(docs: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _fit(model, tokenizer, docs: list[str]) -> None:
    ids = [t for d in docs for t in tokenizer(d)["input_ids"] + [tokenizer.eos_token_id]]
    blocks = torch.tensor(ids[: len(ids) // BLOCK * BLOCK]).view(-1, BLOCK)
    opt = torch.optim.AdamW(model.parameters(), lr=FIT_LR)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(FIT_STEPS):
        batch = blocks[torch.randint(0, len(blocks), (16,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def tiny_setup(folder: str) -> tuple[str, str]:
    """``(model folder, corpus .txt)`` under ``folder`` (built once; a second call reuses them)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    model_dir, corpus = os.path.join(folder, "tiny-llama"), os.path.join(folder, "tiny-corpus.txt")
    if os.path.isfile(os.path.join(model_dir, "config.json")) and os.path.isfile(corpus):
        return model_dir, corpus
    os.makedirs(folder, exist_ok=True)
    docs = _corpus(corpus)
    tok = _tokenizer(docs)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, use_cache=False)
    model, threads = LlamaForCausalLM(cfg), torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend (tens of seconds on a loaded machine)
    try:
        _fit(model, tok, docs)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir, corpus
