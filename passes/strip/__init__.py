"""Stage 3, strip: remove the heads and neurons a folded model zeroed, exactly, and verify it.

``checked.py`` (the checked entry point) -> ``remove.py`` (the pass) -> per family kind ``heads.py`` /
``neurons.py`` / ``hidden.py`` / ``experts.py`` (what is removable; hidden dims need ``masked_norm.py``;
removed experts are routed around for the self-check by ``routing.py``) -> ``fold.py``
(constants into biases, placeholders) -> ``surgery.py`` / ``tp_backend.py`` (shapes) -> ``verify.py``
(self-check, culprit) -> ``report.py`` (``StripReport``). ``mha.py``: a head-prunable
``nn.MultiheadAttention``; ``sublayers.py``: emptied sub-layers replaced by the constant they add
(``strip(sublayers=True)``). ``gqa.py``: which q-head sets a grouped-query layer can keep (``gqa_keep``).
"""
from passes.strip.gqa import GqaKeep, gqa_keep
from passes.strip.mha import SlimMultiheadAttention
from passes.strip.report import StripReport
from passes.strip.checked import BACKENDS, HANDLERS, StripError, strip, strip_copy
from passes.strip.sublayers import ConstantSublayer

__all__ = ["GqaKeep", "gqa_keep", "ConstantSublayer", "SlimMultiheadAttention", "StripReport", "BACKENDS", "HANDLERS", "StripError", "strip", "strip_copy"]
