"""The causal-LM task's hooks, called by the language-model job (``leap_fx.run.lm_job``).

- ``load_model(opts)``: a model folder, a ``.gguf`` file (converted once, cached) or the embedded default
  LM, in float32, eval mode, without its KV cache (analysis traces the plain forward);
- ``load_data(opts, tokenizer)``: documents -> blocks of ``block_size`` tokens per split, by document
  (``data.py``), the train / evaluation blocks capped at the mode's budget (``max_*_examples``);
- ``tensors(blocks)``: a split as the loop's batches (``input_ids``, an all-ones mask, ``labels``);
- ``task_loss()``: next-token cross-entropy and top-k distillation (``loss.py``);
- ``evaluate(model, tensors)``: validation loss and perplexity, the loop's metric;
- ``export(model, path, tokenizer, ...)``: ONNX with a KV cache, parity checked (``passes.export.decoder``).
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
from torch import nn

from leap_fx.hf.gguf import resolve_lm
from leap_fx.hf.models import load_tokenizer, quiet_from_pretrained
from leap_fx.tasks.causal_lm.config import CausalLMConfig
from leap_fx.tasks.causal_lm.data import LmData, capped, load_lm_data
from leap_fx.tasks.causal_lm.loss import NextTokenLoss
from leap_fx.tasks.causal_lm.metrics import perplexity_torch
from leap_fx.tasks.registry import register_task
from passes.export.decoder import DecoderExportReport, LmMetadata, export_decoder

__all__ = ["CausalLM", "block_tensors", "embedding_parameters"]


def block_tensors(blocks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Blocks ``[n, L]`` as the loop's data: every position real, the labels the inputs themselves."""
    return {"input_ids": blocks, "attention_mask": torch.ones_like(blocks), "labels": blocks}


def embedding_parameters(model: nn.Module) -> int:
    """Parameters of the input embedding and (if not tied to it) the output projection: a floor that no
    head or neuron pruning touches."""
    seen, total = set(), 0
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is None:
            continue
        for p in mod.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


@register_task(CausalLMConfig)
class CausalLM:
    """The causal-LM task (module docstring); ``config``: its ``CausalLMConfig``."""

    name = "causal-lm"
    config_class = CausalLMConfig

    def __init__(self, config: CausalLMConfig):
        self.config = config

    def model_folder(self, model: Optional[str], cache_dir: Optional[str] = None) -> str:
        return resolve_lm(model, cache_dir)

    def load_model(self, folder: str) -> tuple[nn.Module, object]:
        """``(model, tokenizer)`` of a model folder (``model_folder``), float32, eval mode, no KV cache."""
        from transformers import (
            AutoModelForCausalLM,  # import weight: transformers' model classes
        )
        tokenizer = load_tokenizer(folder)
        model = quiet_from_pretrained(AutoModelForCausalLM, folder, dtype=torch.float32)
        model.config.use_cache = False
        return model.eval(), tokenizer

    def load_data(self, opts, tokenizer) -> LmData:
        data = load_lm_data(tokenizer, opts.data, self.config.block_size,
                            seed=opts.split_seed, text_column=opts.text_column, drop_invalid=opts.drop_invalid)
        caps = {"train": opts.max_train_examples, "validation": opts.max_eval_examples,
                "test": opts.max_eval_examples, "calibration": self.config.calibration_blocks}
        for split, cap in caps.items():
            data.blocks[split] = capped(data.blocks[split], cap, opts.split_seed)
        return data

    def tensors(self, blocks: torch.Tensor) -> dict[str, torch.Tensor]:
        return block_tensors(blocks)

    def task_loss(self) -> NextTokenLoss:
        return NextTokenLoss(self.config.kd_top_k)

    def evaluate(self, model: nn.Module, data, batch_size: int = 8) -> dict:
        """The loop's validation metric: next-token loss and perplexity."""
        blocks = data["input_ids"] if isinstance(data, dict) else data
        res = perplexity_torch(model, blocks, batch_size=max(1, min(batch_size, 8)))
        return {"val_loss": res["nll"], "val_perplexity": res["perplexity"]}

    def example_inputs(self, data: LmData, n: int = 2) -> dict[str, torch.Tensor]:
        ids = data.blocks["train"][:n]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def export(self, model: nn.Module, path: str, tokenizer, tokenizer_dir: str, extra: dict) -> DecoderExportReport:
        """``model.onnx`` with a KV cache, parity checked; metadata names the tokenizer and EOS ids."""
        eos = tokenizer.eos_token_id
        ids = [int(eos)] if eos is not None else []
        gen = getattr(model, "generation_config", None)  # HF models carry one; extra EOS ids live there
        more = getattr(gen, "eos_token_id", None) if gen is not None else None
        ids += [int(i) for i in (more if isinstance(more, (list, tuple)) else [more]) if i is not None and i not in ids]
        meta = LmMetadata(os.path.relpath(tokenizer_dir, os.path.dirname(os.path.abspath(path))), ids,
                          bool(getattr(tokenizer, "chat_template", None)), extra)
        return export_decoder(model, path, metadata=meta)

    @staticmethod
    def perplexity_ratio(slim: float, dense: float) -> float:
        return slim / dense if dense and math.isfinite(dense) else float("nan")
