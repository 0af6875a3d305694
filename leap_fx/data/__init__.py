"""Data: Rotten Tomatoes (offline, movie-grouped split), user CSV/JSONL files, batching."""
from .batches import (
                      DatasetSplits,
                      TextSplit,
                      as_tensors,
                      batches_per_epoch,
                      iterate_batches,
                      num_examples,
                      trim,
)
from .files import DataWarning, load_text_file
from .labels import check_classification, normalise_label
from .rotten_tomatoes import LABEL_NAMES, load_rotten_tomatoes
from .splits import example_inputs, flop_inputs, load_data, split_file, subset
from .vocab import check_tokenizer

__all__ = ["DatasetSplits", "TextSplit", "as_tensors", "batches_per_epoch", "iterate_batches",
           "num_examples", "trim", "DataWarning", "load_text_file", "check_classification", "normalise_label",
           "check_tokenizer", "LABEL_NAMES", "load_rotten_tomatoes", "example_inputs",
           "flop_inputs", "load_data", "split_file", "subset"]
