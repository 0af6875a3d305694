"""Run a leap-fx slim model with onnxruntime alone: python examples/run_slim_onnx.py OUT/model.onnx "text" ...
(sentence pairs: "first text ||| second text"). Everything needed is in the ONNX file's metadata."""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

path, texts = sys.argv[1], sys.argv[2:]
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map  # label_names, max_length, tokenizer, density, ...
labels, max_length = json.loads(meta["label_names"]), int(meta["max_length"])
tokenizer = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(path), meta["tokenizer"]),
                                          trust_remote_code=False)
pairs = [t.split(" ||| ") for t in texts] if meta["text_pair"] == "true" else [[t] for t in texts]
enc = tokenizer(*map(list, zip(*pairs)), truncation=True, max_length=max_length, padding=True, return_tensors="np")
logits = session.run(["logits"], {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
probs = np.exp(logits - logits.max(-1, keepdims=True))
probs /= probs.sum(-1, keepdims=True)
for text, p in zip(texts, probs):
    print(json.dumps({"text": text, "label": labels[int(p.argmax())], "probability": round(float(p.max()), 4)}))
