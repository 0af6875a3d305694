"""Shared fixtures: tiny models built from configs (no downloads)."""
import os

import pytest
import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # pytest-xdist: one core per worker
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# the longest files (minutes each: real-model runs), started first so no worker is left with one at the end
# (``--dist loadfile`` hands out files in collection order)
LONGEST_FIRST = ("tests/test_e2e_real.py", "tests/test_examples.py", "tests/train/test_resume.py",
                 "tests/train/test_distributed.py", "tests/tasks/causal_lm/test_real_smollm2.py",
                 "tests/bench/test_soak.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist >= 3.6 hands out files with most tests first
        config.option.loadscopereorder = False      # unless told not to: keep the order below


def pytest_collection_modifyitems(config, items):
    rank = {f: i for i, f in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest as collected


def tiny_bert(num_labels=2, layers=2, heads=4, hidden=32, ffn=64, seed=0):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=64,
                     num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval()


def bert_inputs(batch=2, seq=8, vocab=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.fixture
def bert():
    return tiny_bert()


@pytest.fixture
def bert_batch():
    return bert_inputs()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny BERT + tokenizer and a tiny CSV (shared by the CLI, SparseBERT and bench tests)."""
    from tests.helpers import tiny_model_folder  # here, not at the top: tests.helpers imports this module
    folder = tmp_path_factory.mktemp("cli")
    csv_path, tok, model_dir = tiny_model_folder(folder)
    return folder, csv_path, model_dir
