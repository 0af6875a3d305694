"""``leap-fx generate RUN_OR_ONNX "prompt"``: text from a slim language model, onnxruntime + tokenizer only,
streamed to the terminal as it is decoded (``leap_fx.tasks.causal_lm.generate``)."""
from __future__ import annotations

import sys

from leap_fx.tasks.causal_lm.generate import GenerationConfig, generate, load_generator

__all__ = ["generate_command"]


def generate_command(args) -> int:
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, sample=args.sample, temperature=args.temperature,
                              top_p=args.top_p, seed=args.seed)
    config.check()
    lm, tokenizer = load_generator(args.model, threads=args.threads or None)
    result = generate(lm, tokenizer, args.prompt, config, chat=args.chat,
                      stream=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    sys.stdout.write("\n")
    rate = len(result.token_ids) / result.seconds if result.seconds > 0 else float("nan")
    print(f"[leap-fx] {len(result.token_ids)} tokens in {result.seconds:.1f} s ({rate:.1f} tokens/s)"
          f"{', stopped at EOS' if result.stopped_at_eos else ''}", file=sys.stderr)
    return 0
