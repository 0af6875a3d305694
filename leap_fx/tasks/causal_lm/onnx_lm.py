"""A KV-cache decoder graph (``passes.export.decoder``'s) in an onnxruntime session, numpy in and out.

``OnnxLM(path)`` reads the layout from the graph itself (layers, kv heads and head sizes per layer from
the ``past_key_values.*`` input shapes) and the metadata (tokenizer folder, EOS ids); ``forward(ids,
mask, past)`` runs one call (position ids from the mask: left padding gets position 0) and returns
``(logits, presents)``; ``empty_past(batch)`` is the cache of a prefill. No torch here.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from passes.export.metadata import read_metadata


class OnnxLM:
    def __init__(self, path: str, threads: Optional[int] = None, optimize: bool = True, spin: bool = True):
        """``spin=False``: intra-op threads wait passively (on a machine shared with other jobs, spinning
        threads of 2 fought for 2 busy cores: SmolLM2 decode at load ~8 ran 2.9 tokens/s spinning, 5.1 not)."""
        import onnxruntime as ort
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model not found: {path!r}")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        self.path = os.path.abspath(path)
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        need = {"input_ids", "attention_mask", "position_ids"}
        if need <= set(inputs) and "past_key_values.0.key" not in inputs:
            raise ValueError(f"{path} has no KV cache: no attention layer is left in the model (every attention "
                             f"sub-layer was removed), so it cannot generate from a context")
        if not need <= set(inputs):
            raise ValueError(f"{path} is not a KV-cache decoder graph (inputs {sorted(inputs)}); export it with "
                             f"passes.export.decoder.export_decoder")
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.num_layers = len(self.past_names) // 2
        self.past_shapes = [tuple(inputs[n].shape[1:]) for n in self.past_names]  # (heads, past, dim)
        self.dtype = np.float16 if "float16" in inputs["past_key_values.0.key"].type else np.float32
        self.metadata = read_metadata(self.session)
        self.vocab_size = int(self.session.get_outputs()[0].shape[-1])

    @property
    def kv_heads(self) -> list[int]:
        return [int(s[0]) for s in self.past_shapes[::2]]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, int(h), 0, int(d)), dtype=self.dtype) for h, _, d in self.past_shapes]

    def forward(self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list]:
        """One call: ``ids`` ``[B, S]`` new tokens, ``mask`` ``[B, past + S]``; ``(logits [B, S, V], presents)``."""
        ids = np.asarray(ids, dtype=np.int64)
        mask = np.asarray(mask, dtype=np.int64)
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)[:, -ids.shape[1]:]
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos.astype(np.int64)}
        feeds.update(zip(self.past_names, past))
        out = self.session.run(None, feeds)
        return out[0], out[1:]

    def eos_ids(self) -> list[int]:
        ids = self.metadata.get("eos_token_ids")
        return [int(i) for i in ids] if isinstance(ids, list) else []

    def tokenizer_dir(self) -> Optional[str]:
        name = self.metadata.get("tokenizer")
        return os.path.join(os.path.dirname(self.path), name) if isinstance(name, str) else None
