"""Tasks: what a job trains and measures (data + loss + metric + ONNX I/O), one package per task.

``causal_lm``: decoder-only language models (packed text blocks, next-token loss and distillation,
perplexity, KV-cache generation and tokens/s).
"""
