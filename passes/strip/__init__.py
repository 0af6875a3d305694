"""Stage 3, strip: remove the heads and neurons a folded model zeroed, exactly, and verify it.

``strip.py`` (the checked entry point) -> ``remove.py`` (the pass) -> per family kind ``heads.py`` /
``neurons.py`` (what is removable) -> ``fold.py`` (constants into biases, placeholders) ->
``surgery.py`` / ``tp_backend.py`` (shapes) -> ``verify.py`` (self-check, culprit) -> ``report.py``
(``StripReport``). ``mha.py``: a head-prunable ``nn.MultiheadAttention``.
"""
from passes.strip.mha import SlimMultiheadAttention
from passes.strip.report import StripReport
from passes.strip.strip import BACKENDS, HANDLERS, StripError, strip, strip_copy

__all__ = ["SlimMultiheadAttention", "StripReport", "BACKENDS", "HANDLERS", "StripError", "strip", "strip_copy"]
