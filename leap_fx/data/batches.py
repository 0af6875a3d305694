"""Text splits, tokenisation and deterministic mini-batching.

A :class:`TextSplit` holds raw texts and integer labels; :meth:`TextSplit.tokenize` turns it into a
dict of tensors padded to ``max_length``. :func:`iterate_batches` walks such a dict in a seeded
permutation and trims each batch to its longest row (right padding), so short reviews cost
little. Everything is deterministic given ``seed`` and ``epoch``, which makes resuming exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Union

import torch

Tensors = dict[str, torch.Tensor]


@dataclass
class TextSplit:
    """One split: ``texts[i]`` (and ``text_pairs[i]``) labelled ``labels[i]`` (index into ``label_names``)."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    text_pairs: Optional[list[str]] = None
    groups: Optional[list[str]] = None  # e.g. the movie of each review (group-split datasets)
    source: Optional[dict] = None  # the file read: path, rows_read, rows_skipped, skipped (first lines)
    features: Optional[Tensors] = field(default=None, repr=False)  # set by tokenize()

    def __len__(self) -> int:
        return len(self.texts)

    def tokenize(self, tokenizer, max_length: int = 64) -> "TextSplit":
        """Fill ``features`` (input_ids, attention_mask, [token_type_ids], labels); returns self."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        enc = tokenizer(self.texts, self.text_pairs, truncation=True, max_length=max_length,
                        padding="max_length", return_tensors="pt")
        feats = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        feats["labels"] = torch.tensor(self.labels, dtype=torch.long)
        self.features = feats
        return self


@dataclass
class DatasetSplits:
    """train / validation / test splits sharing ``label_names``."""

    train: TextSplit
    validation: TextSplit
    test: TextSplit
    label_names: list[str]

    max_length: Optional[int] = field(default=None, repr=False)  # set by tokenize()
    tokenizer: object = field(default=None, repr=False, compare=False)
    full_rows: Optional[dict] = field(default=None, repr=False)  # rows per split before a random subset

    def items(self):
        return (("train", self.train), ("validation", self.validation), ("test", self.test))

    def tokenize(self, tokenizer, max_length: int = 64) -> "DatasetSplits":
        """Tokenise every split, once: the same tokenizer at the same length again does nothing."""
        if self.tokenizer is tokenizer and self.max_length == max_length:
            return self
        for _, split in self.items():
            split.tokenize(tokenizer, max_length)
        self.max_length, self.tokenizer = max_length, tokenizer
        return self


def as_tensors(data: Union[TextSplit, Mapping[str, torch.Tensor]]) -> Tensors:
    """The tensor dict behind ``data`` (a tokenised TextSplit or a dict with a ``labels`` tensor)."""
    if isinstance(data, TextSplit):
        if data.features is None:
            raise ValueError("TextSplit is not tokenised: call split.tokenize(tokenizer, max_length) first")
        data = data.features
    if not isinstance(data, Mapping) or "labels" not in data:
        raise ValueError("data must be a tokenised TextSplit or a dict of tensors with a 'labels' key")
    n = {int(v.shape[0]) for v in data.values()}
    if len(n) != 1:
        raise ValueError(f"all tensors in data must share the first dimension, got sizes {sorted(n)}")
    return dict(data)


TARGET_KEYS = ("labels", "start_positions", "end_positions")  # what HF heads read for their loss, not inputs


def model_inputs(batch: Mapping) -> dict:
    """The batch without its loss targets (``TARGET_KEYS``): what the model's forward takes."""
    return {k: v for k, v in batch.items() if k not in TARGET_KEYS}


def num_examples(data) -> int:
    return int(as_tensors(data)["labels"].shape[0])


def trim(batch: Tensors) -> Tensors:
    """Drop trailing all-padding columns (right padding): same outputs, less compute."""
    mask = batch.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return batch
    length = max(1, int(mask.sum(1).max()))
    return {k: (v[:, :length] if v.dim() == 2 and v.shape[1] == mask.shape[1] else v)
            for k, v in batch.items()}


def permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The example order of ``epoch``: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def lengths(tensors: Tensors) -> Optional[torch.Tensor]:
    """Tokens per example (attention mask sum), or None for data without an attention mask."""
    mask = tensors.get("attention_mask")
    return mask.sum(1) if mask is not None and mask.dim() == 2 else None


def batch_indices(data, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                  group_by_length: bool = False, drop_last: bool = False,
                  mega: int = 50) -> list[torch.Tensor]:
    """Example indices of every batch of one epoch (a function of seed and epoch only).

    ``group_by_length``: the shuffled order is cut into chunks of ``mega`` batches, each chunk is
    sorted by length and split into batches, and the batch order is shuffled again, so a batch holds
    examples of similar length and trimming removes most padding (like HF's group_by_length).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tensors = as_tensors(data)
    n = int(tensors["labels"].shape[0])
    order = permutation(n, seed, epoch) if shuffle else torch.arange(n)
    if drop_last:
        order = order[:n - n % batch_size]
    lens = lengths(tensors) if group_by_length else None
    if lens is None:
        return list(order.split(batch_size))
    batches = []
    for chunk in order.split(batch_size * mega):
        chunk = chunk[torch.argsort(lens[chunk], descending=True, stable=True)]
        batches.extend(chunk.split(batch_size))
    if shuffle:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) + 7)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def iterate_batches(data, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                    start: int = 0, drop_last: bool = False, group_by_length: bool = False) -> Iterator[Tensors]:
    """Yield trimmed batches of ``data``; ``start`` skips the first batches (for resuming mid-epoch)."""
    tensors = as_tensors(data)
    for idx in batch_indices(tensors, batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                             group_by_length=group_by_length, drop_last=drop_last)[start:]:
        yield trim({k: v[idx] for k, v in tensors.items()})


def batches_per_epoch(data, batch_size: int, drop_last: bool = False) -> int:
    n = num_examples(data)
    return n // batch_size if drop_last else -(-n // batch_size)
