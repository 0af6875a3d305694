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
from .files import load_text_file
from .rotten_tomatoes import LABEL_NAMES, load_rotten_tomatoes
from .splits import example_inputs, flop_inputs, load_data, split_file, subset

__all__ = ["DatasetSplits", "TextSplit", "as_tensors", "batches_per_epoch", "iterate_batches",
           "num_examples", "trim", "load_text_file", "LABEL_NAMES", "load_rotten_tomatoes", "example_inputs",
           "flop_inputs", "load_data", "split_file", "subset"]
