"""The causal-LM task: packed text blocks split by document (``data``), LM loss and top-k distillation
(``kd``), perplexity in torch and onnxruntime (``metrics``), KV-cache generation with onnxruntime and
the tokenizer only (``onnx_lm``, ``generate``) and tokens/s of ONNX graphs interleaved (``speed``)."""
from leap_fx.tasks.causal_lm.data import DEFAULT_CORPUS, SPLITS, LmData, load_lm_data, pack, split_by_document
from leap_fx.tasks.causal_lm.generate import GenerationConfig, GenerationResult, generate, generate_ids, load_generator
from leap_fx.tasks.causal_lm.kd import TeacherTopK, kd_loss, lm_loss, teacher_topk
from leap_fx.tasks.causal_lm.metrics import perplexity_onnx, perplexity_torch
from leap_fx.tasks.causal_lm.onnx_lm import OnnxLM
from leap_fx.tasks.causal_lm.speed import lm_speed

__all__ = ["DEFAULT_CORPUS", "SPLITS", "LmData", "load_lm_data", "pack", "split_by_document", "GenerationConfig",
           "GenerationResult", "generate", "generate_ids", "load_generator", "TeacherTopK", "kd_loss", "lm_loss",
           "teacher_topk", "perplexity_onnx", "perplexity_torch", "OnnxLM", "lm_speed"]
