"""Generate text from a slim language model: onnxruntime, numpy and the tokenizer, nothing from leap-fx.

    python examples/generate_slim_onnx.py runs/lm/model.onnx "What is the capital of France?" --chat
    python examples/generate_slim_onnx.py model.onnx "Once upon a time" --sample --temperature 0.8 --top-p 0.9

The graph takes ``input_ids``, ``attention_mask``, ``position_ids`` and ``past_key_values.{i}.key`` /
``.value`` and returns ``logits`` and ``present.{i}.key`` / ``.value`` (each layer with its own
number of kv heads, read from the input shapes). Its metadata names the tokenizer folder (relative to
the file) and the EOS ids. The prompt is run once (empty cache), then one token per call, the cache
fed back; tokens are printed as they come.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer


def pick(logits, args, rng):
    if not args.sample:
        return int(logits.argmax())
    z = logits.astype(np.float64) / args.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    n = min(len(p), int(np.searchsorted(np.cumsum(p[order]), args.top_p) + 1))
    keep = order[:n]
    return int(keep[rng.choice(n, p=p[keep] / p[keep].sum())])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model"), ap.add_argument("prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    ap.add_argument("--tokenizer", help="tokenizer folder (default: the one named in the model's metadata)")
    args = ap.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    folder = args.tokenizer or os.path.join(os.path.dirname(os.path.abspath(args.model)), meta.get("tokenizer", "tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    eos = set(json.loads(meta["eos_token_ids"])) if "eos_token_ids" in meta else {tokenizer.eos_token_id}
    if args.chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                            tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    else:
        ids = tokenizer(args.prompt)["input_ids"]

    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32)
            for i in session.get_inputs() if i.name.startswith("past_key_values.")}
    outputs = [o.name for o in session.get_outputs()]
    tokens, mask, new, shown = np.array([ids], dtype=np.int64), np.ones((1, len(ids)), dtype=np.int64), [], ""
    rng = np.random.default_rng(args.seed)
    for _ in range(args.max_new_tokens):
        position = np.arange(mask.shape[1] - tokens.shape[1], mask.shape[1], dtype=np.int64)[None]
        result = session.run(None, {"input_ids": tokens, "attention_mask": mask, "position_ids": position, **past})
        past = {name.replace("present.", "past_key_values."): value for name, value in zip(outputs[1:], result[1:])}
        token = pick(result[0][0, -1], args, rng)
        new.append(token)
        text = tokenizer.decode(new, skip_special_tokens=True)
        if not text.endswith("\ufffd"):
            print(text[len(shown):], end="", flush=True)
            shown = text
        if token in eos:
            break
        tokens, mask = np.array([[token]], dtype=np.int64), np.concatenate([mask, [[1]]], axis=1)
    print(tokenizer.decode(new, skip_special_tokens=True)[len(shown):])  # any tail held back
    return 0


if __name__ == "__main__":
    sys.exit(main())
