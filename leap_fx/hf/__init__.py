"""Hugging Face model sources beyond a plain model folder: GGUF files (converted once, cached)."""
from leap_fx.hf.gguf import DEFAULT_LM, default_gguf, gguf_entry, load_gguf, resolve_lm

__all__ = ["DEFAULT_LM", "default_gguf", "gguf_entry", "load_gguf", "resolve_lm"]
