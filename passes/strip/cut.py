"""What strip does to one family (``Cut``) and the per-kind handler protocol.

``strip`` is the same for every family kind; what differs (which granules are removable, which
slice loses which indices, where constants fold, which attributes hold the counts) is a
``KindHandler``. ``passes/strip/heads.py`` handles attention, ``neurons.py`` feed-forward; the
table ``HANDLERS`` in ``checked.py`` maps a family kind to its handler.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from torch import nn

from passes.analyze.plan import Slice


class StripError(RuntimeError):
    """Stripping changed the model's outputs (or could not run); the model was left unchanged."""


@dataclass
class Cut:
    """What strip does to one family: granules removed, constants folded, a kept placeholder."""

    fqn: str
    kind: str
    layer: int
    granules: int
    remove: list[int] = field(default_factory=list)      # q heads / neurons
    kv_remove: list[int] = field(default_factory=list)   # kv heads (attention only)
    folds: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (granule, constant)
    placeholder: Optional[int] = None  # kept, zeroed granule when every granule is removable
    note: str = ""
    kept_zero: list[int] = field(default_factory=list)  # removable granules kept (GQA: not realisable)

    @property
    def kept(self) -> list[int]:
        gone = set(self.remove)
        return [g for g in range(self.granules) if g not in gone]


class KindHandler:
    """One family kind's strip rules (stateless; every method is a classmethod)."""

    kind: ClassVar[str]
    #: module class name -> ((attribute, quantity), ...) set after removal; other classes get the
    #: ``GENERIC`` attribute names whose current value equals the old quantity
    ATTRS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}
    GENERIC: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: quantity -> config attribute names a forward may read from its module's ``config`` (Phi-3:
    #: ``self.config.num_attention_heads``); the module then gets a config copy of its own (``surgery.py``)
    CONFIG: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: attributes strip never changes but a module may derive from a count when built again (Pixtral:
    #: ``head_dim = embed_dim // num_heads``, ``scaling = head_dim ** -0.5``): the slim manifest records them
    KEEP: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def decide(cls, model: nn.Module, fam, atol: float) -> Cut:
        """Which granules are provably removable, and the constants they leave."""
        raise NotImplementedError

    @classmethod
    def removed_by_role(cls, fam, cut: Cut) -> dict[str, tuple[list[int], int]]:
        """role -> (granules that slice loses, indices per granule)."""
        raise NotImplementedError

    @classmethod
    def fold_into(cls, fam) -> Slice:
        """The input-axis slice whose output bias receives folded constants."""
        raise NotImplementedError

    @classmethod
    def placeholder(cls, fam, cut: Cut) -> dict[str, list[int]]:
        """Emptied family: granules kept (and zeroed) per role; updates ``cut``."""
        raise NotImplementedError

    @classmethod
    def quantities(cls, fam, cut: Cut) -> tuple[dict, dict]:
        """(old, new) counts for the attribute update (heads, widths, ...)."""
        raise NotImplementedError

    @classmethod
    def shrunk(cls, fam, cut: Cut, slices: dict[str, Slice]):
        """The family as it is after removal (for the shrunk Plan)."""
        raise NotImplementedError

    @classmethod
    def record(cls, fam, cut: Cut) -> dict:
        """Kind-specific fields of the strip report's family entry."""
        return {}

    @classmethod
    def finish(cls, model: nn.Module, fam, cut: Cut) -> None:
        """After removal (e.g. the hidden dims drop the masked-norm hooks); default nothing."""
