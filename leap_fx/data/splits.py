"""The job's data: the named dataset or the user's files, split and subsampled to the run's budget."""
from __future__ import annotations

import random
from typing import Optional

from leap_fx.data.batches import DatasetSplits, TextSplit, iterate_batches
from leap_fx.data.files import load_text_file
from leap_fx.data.labels import check_classification
from leap_fx.data.rotten_tomatoes import load_rotten_tomatoes

RT_NAMES = ("rotten_tomatoes", "rotten-tomatoes", "rt")


def _pick(split: TextSplit, idx: list[int]) -> TextSplit:
    take = (lambda xs: None if xs is None else [xs[i] for i in idx])
    return TextSplit(texts=take(split.texts), labels=take(split.labels), label_names=split.label_names,
                     text_pairs=take(split.text_pairs), groups=take(split.groups), source=split.source)


def sample_positions(total: int, n: Optional[int], seed: int) -> Optional[list[int]]:
    """Seeded ``n`` of ``range(total)`` in file order, or None when ``n`` is None or not below ``total``."""
    if n is None or total <= n:
        return None
    return sorted(random.Random(seed).sample(range(total), int(n)))


def split_positions(n: int, seed: int, where: str = "", fractions=(0.8, 0.1, 0.1)) -> list[list[int]]:
    """The seeded 80/10/10 split of ``range(n)`` (file order kept within each part); fewer than 10 rows is an
    error (``where``: what has them)."""
    if n < 10:
        raise ValueError(f"{where or f'the data file has only {n} rows'}; need at least 10 to split 80/10/10 (or "
                         f"pass --validation-data and --test-data)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    return [sorted(idx) for idx in (order[:a], order[a:b], order[b:])]


def subset(split: TextSplit, n: Optional[int], seed: int) -> TextSplit:
    """A seeded random subset of ``n`` examples (file order kept), or ``split`` itself."""
    keep = sample_positions(len(split), n, seed)
    return split if keep is None else _pick(split, keep)


def split_file(split: TextSplit, seed: int, fractions=(0.8, 0.1, 0.1)) -> list[TextSplit]:
    """Seeded 80/10/10 split of one file's rows (file order kept within each part)."""
    return [_pick(split, idx) for idx in split_positions(len(split), seed, fractions=fractions)]


def load_data(opts, allow_many_classes: bool = False) -> DatasetSplits:
    """``DatasetSplits`` (not tokenised) for ``opts.data``, subsampled to the mode's budget. Training labels
    that cannot be a classification task are refused (``labels.check_classification``) unless
    ``allow_many_classes``."""
    if opts.data is None or opts.data in RT_NAMES:
        data = load_rotten_tomatoes(seed=opts.split_seed)
    else:
        kw = dict(text_column=opts.text_column, text_pair_column=opts.text_pair_column,
                  label_column=opts.label_column, drop_invalid=opts.drop_invalid,
                  tsv_quotes=opts.tsv_quotes)
        train = load_text_file(opts.data, **kw)
        check_classification(train, opts.data, opts.label_column, (opts.text_column, opts.text_pair_column),
                             allow_many_classes)
        if (opts.validation_data is None) != (opts.test_data is None):
            raise ValueError("pass both --validation-data and --test-data, or neither (then the data "
                             "file is split 80/10/10)")
        if opts.validation_data is None:
            train, val, test = split_file(train, opts.split_seed)
        else:
            val = load_text_file(opts.validation_data, labels=train.label_names, **kw)
            test = load_text_file(opts.test_data, labels=train.label_names, **kw)
        if len(train.label_names) < 2:
            raise ValueError(f"{opts.data}: column {opts.label_column!r} has a single label value "
                             f"{train.label_names}; a classifier needs at least two")
        data = DatasetSplits(train, val, test, label_names=list(train.label_names))
    return DatasetSplits(subset(data.train, opts.max_train_examples, opts.split_seed),
                         subset(data.validation, opts.max_eval_examples, opts.split_seed + 1),
                         subset(data.test, opts.max_eval_examples, opts.split_seed + 2),
                         label_names=list(data.label_names), full_rows={k: len(s) for k, s in data.items()})


def data_summary(data: DatasetSplits) -> dict:
    """What the run trained and was scored on: rows per split (and the split's rows before a random subset,
    when one was taken), the file each came from with its rows read and skipped, the label set and the
    label counts per split (``report.json["data"]``)."""
    out = {"label_names": list(data.label_names), "splits": {}}
    for name, split in data.items():
        counts = [split.labels.count(i) for i in range(len(data.label_names))]
        full = (data.full_rows or {}).get(name)
        out["splits"][name] = {"rows": len(split), "label_counts": dict(zip(data.label_names, counts)),
                               **({"rows_before_subset": full} if full and full != len(split) else {}),
                               **({"file": split.source} if split.source else {})}
    return out


def example_inputs(split, n: int = 2) -> dict:
    """The first ``n`` examples as model inputs (no labels), trimmed to their longest row."""
    batch = next(iterate_batches(split, n))
    return {k: v for k, v in batch.items() if k != "labels"}


def flop_inputs(split) -> dict:
    """One example at the full tokenised length (what FLOPs are counted on)."""
    return {k: v[:1].clone() for k, v in split.features.items() if k != "labels"}
