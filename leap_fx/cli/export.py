"""``leap-fx export``: a saved slim model directory to ONNX, parity checked."""
from __future__ import annotations

from leap_fx.cli.command import Command

__all__ = ["Export"]


class Export(Command):
    name = "export"
    help = "export a saved slim model directory to ONNX (parity checked)"
    description = ("Export a slim model directory (a run's OUT/slim, written by save_slim) to ONNX; the file is "
                   "replaced only once onnxruntime parity is verified.")

    @classmethod
    def add_arguments(cls, p) -> None:
        p.add_argument("model", help="slim model directory (a run's OUT/slim, written by save_slim)")
        p.add_argument("--out", required=True, help="ONNX file to write (must end in .onnx)")
        p.add_argument("--tokenizer", help="tokenizer directory (default: <model>/../tokenizer; never another "
                                           "model's)")
        p.add_argument("--text", default="an example review for tracing", help="example input text")
        p.add_argument("--atol", type=float, default=1e-4, help="max |ORT - PyTorch| allowed (default: 1e-4)")
        p.add_argument("--trust-edited", action="store_true",
                       help="export a slim folder whose files changed since save_slim wrote them (edited on purpose)")

    @classmethod
    def run(cls, args) -> int:
        from leap_fx.run.commands.export import (
            export_command,  # import weight: torch, onnx
        )
        print(export_command(args.model, args.out, args.tokenizer, args.text, args.atol, args.trust_edited))
        return 0
