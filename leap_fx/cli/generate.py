"""``leap-fx generate``: text from a language model run's slim ONNX (onnxruntime + tokenizer only)."""
from __future__ import annotations

from leap_fx.cli.command import Command

__all__ = ["Generate"]


class Generate(Command):
    name = "generate"
    help = "generate text with a language-model run's slim ONNX (onnxruntime + tokenizer only)"
    description = ("Greedy (default) or sampled decoding with the KV cache, streamed to the terminal. The "
                   "tokenizer is the folder the ONNX metadata names (the run's tokenizer/).")

    @classmethod
    def add_arguments(cls, p) -> None:
        p.add_argument("model", help="a language-model run directory (its model.onnx) or a model.onnx")
        p.add_argument("prompt", help="the prompt text")
        p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default: 64)")
        p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
        p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
        p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0 = off)")
        p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
        p.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
        p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default: 0 = its own)")

    @classmethod
    def run(cls, args) -> int:
        from leap_fx.run.commands.generate import (
            generate_command,  # import weight: onnxruntime, transformers
        )
        return generate_command(args)
