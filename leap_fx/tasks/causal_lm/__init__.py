"""The causal-LM task: ``config.py`` (``CausalLMConfig``) ; ``handler.py`` (``CausalLM``: the task's hooks)
-> ``data.py`` (packed text blocks split by document) -> ``kd.py`` (LM loss, top-k distillation) ->
``metrics.py`` (perplexity in torch and onnxruntime) -> ``onnx_lm.py`` / ``generate.py`` (KV-cache
generation with onnxruntime and the tokenizer only) -> ``speed.py`` (tokens/s, interleaved).
Only the config loads on import (no torch)."""
from leap_fx.tasks.causal_lm.config import CausalLMConfig

__all__ = ["CausalLMConfig"]
