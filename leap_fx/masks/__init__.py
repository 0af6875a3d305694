"""Masks: one parametrization (``carrier.GranuleMask``) over mask owners, on any Plan geometry.

``leap_fx.spec.mask`` (what to mask: granularities; plain data) -> ``owner.py`` (the owner protocol, ``FixedMask``)
-> ``topk.py`` (``LeapScores``: LEAP's learnable Top-K; ``ScheduledTopK``: magnitude / movement),
``hard_concrete.py`` (``HardConcrete``: CoFi's L0 gates)
-> ``carrier.py`` (granule grids -> weight masks) -> ``lifecycle.py`` (prepare / fold / freeze) ->
``prune_api.py`` (``LeapPruning``, the ``torch.nn.utils.prune`` face).
"""
from leap_fx.masks.carrier import BlockSegment, GranuleMask, TiedSegment, granule_sums
from leap_fx.masks.hard_concrete import HardConcrete
from leap_fx.masks.owner import FixedMask, MaskOwner
from leap_fx.masks.lifecycle import (
                                   carriers,
                                   densities,
                                   fold,
                                   freeze,
                                   magnitudes,
                                   original,
                                   owners,
                                   param_groups,
                                   prepare,
                                   prunable,
                                   zero_granules,
)
from leap_fx.masks.prune_api import LeapPruning, leap_prune
from leap_fx.masks.topk import LeapScores, ScheduledTopK, keep_count, topk_mask

__all__ = ["BlockSegment", "GranuleMask", "TiedSegment", "granule_sums", "HardConcrete", "FixedMask", "MaskOwner", "carriers",
           "densities", "fold", "freeze", "magnitudes", "original", "owners", "param_groups", "prepare",
           "prunable", "zero_granules", "LeapPruning", "leap_prune",
           "LeapScores", "ScheduledTopK", "keep_count", "topk_mask"]
