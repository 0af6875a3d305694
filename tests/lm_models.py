"""Tiny causal LMs (random weights, fixed seeds, ``use_cache=False`` in the config so analyze traces them) and a tiny byte-level BPE tokenizer for the LM tests.

``LMS[name]() -> model.eval()``: Llama with GQA (untied embeddings), Qwen3 with GQA (tied), GPT-2
(tied, fused qkv). ``tiny_tokenizer(dir)`` trains a byte-level BPE on a few sentences and saves a
``PreTrainedTokenizerFast`` with an EOS token and a chat template; ``tokenizer_lm(tok)`` builds a tiny
Llama over its vocabulary.
"""
from __future__ import annotations

import torch

VOCAB = 120
TEXT = ["the cat sat on the mat and the dog sat on the log", "a quick brown fox jumps over the lazy dog",
        "pruning removes heads and neurons from a transformer", "onnxruntime runs the slim graph on the cpu",
        "hello world, this is a tiny corpus for a tiny tokenizer"]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def llama_gqa_lm(seed: int = 0, vocab: int = VOCAB, layers: int = 3):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=48, num_hidden_layers=layers, num_attention_heads=6,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      use_cache=False)
    return LlamaForCausalLM(cfg).eval()


def qwen3_lm(seed: int = 1, vocab: int = VOCAB):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, intermediate_size=40, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, use_cache=False)
    return Qwen3ForCausalLM(cfg).eval()


def gpt2_lm(seed: int = 2, vocab: int = VOCAB):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=256,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2,
                     use_cache=False)
    return GPT2LMHeadModel(cfg).eval()


LMS = {"llama_gqa": llama_gqa_lm, "qwen3": qwen3_lm, "gpt2": gpt2_lm}


def sharpen(model, scale: float = 4.0):
    """Scale the output head so greedy decoding has clear winners (random tiny LMs are near-uniform, and
    near-ties would let float rounding, not the export, decide a token)."""
    with torch.no_grad():
        head = model.get_output_embeddings()
        if model.config.tie_word_embeddings:
            model.get_input_embeddings().weight.mul_(scale)
        else:
            head.weight.mul_(scale)
    return model


def tiny_tokenizer(folder: str):
    """A byte-level BPE tokenizer (vocab <= VOCAB + specials) with EOS ``</s>`` and a chat template, saved to
    ``folder``; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT
    fast.save_pretrained(folder)
    return fast


def tokenizer_lm(tokenizer, seed: int = 3):
    """A tiny Llama (GQA) over ``tokenizer``'s vocabulary, EOS = the tokenizer's."""
    model = llama_gqa_lm(seed, vocab=len(tokenizer), layers=2)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
