"""LM data: documents from .txt / .jsonl / .csv, bad rows named, split by document, packing within splits
(leap_fx/tasks/causal_lm/data.py)."""

import pytest
import torch

from leap_fx.tasks.causal_lm.data import (
    DEFAULT_CORPUS,
    SPLITS,
    load_lm_data,
    pack,
    read_documents,
    split_by_document,
)


class WordTokenizer:
    """Each distinct word one id (>= 3), EOS = 2: enough to trace every token back to its document."""

    eos_token_id = 2

    def __init__(self):
        self.vocab = {}

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[self.vocab.setdefault(w, 3 + len(self.vocab)) for w in t.split()] for t in texts]}


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("first doc line one\nline two\n\n\n  \nsecond doc\n\nthird\n", encoding="utf-8")
    docs, info = read_documents(str(p))
    assert docs == ["first doc line one\nline two", "second doc", "third"] and info["documents"] == 3


def test_jsonl_bad_rows_are_named_with_file_and_line(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text('{"text": "a fine doc"}\n{"text": "another"}\n{"text": ""}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"docs\.jsonl:3: no text in column 'text'"):
        read_documents(str(p))
    p.write_text('{"text": "a fine doc"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"docs\.jsonl:2: not valid JSON"):
        read_documents(str(p))
    docs, info = read_documents(str(p), drop_invalid=True)
    assert docs == ["a fine doc"] and info["rows_skipped"] == 1 and info["skipped"][0]["line"] == 2


def test_csv_text_column_and_bad_rows(tmp_path):
    p = tmp_path / "docs.csv"
    p.write_text('id,body\n1,"hello there"\n2,"two, with comma"\n3,\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"docs\.csv:4: no text in column 'body'"):
        read_documents(str(p), text_column="body")
    with pytest.raises(ValueError, match=r"docs\.csv:2: .*is the text column 'text'"):
        read_documents(str(p))
    p.write_text('id,body\n1,"hello there"\n2,"two, with comma"\n', encoding="utf-8")
    assert read_documents(str(p), text_column="body")[0] == ["hello there", "two, with comma"]


def test_split_by_document_is_a_partition_with_every_split_filled():
    lengths = [int(x) for x in torch.randint(5, 500, (40,), generator=torch.Generator().manual_seed(0))]
    split = split_by_document(lengths, seed=3)
    everything = [d for s in SPLITS for d in split[s]]
    assert sorted(everything) == list(range(40))  # each document in exactly one split
    assert all(split[s] for s in SPLITS)
    share = sum(lengths[d] for d in split["train"]) / sum(lengths)
    assert 0.55 < share < 0.85
    assert split_by_document(lengths, seed=3) == split and split_by_document(lengths, seed=4) != split
    assert all(split_by_document([1, 1, 1, 1], seed=s)[n] for s in range(5) for n in SPLITS)
    with pytest.raises(ValueError, match="3 documents cannot fill 4 splits"):
        split_by_document([10, 10, 10])


def test_pack_joins_with_eos_and_drops_the_tail():
    blocks, dropped = pack([[5, 6, 7], [8, 9]], eos_id=2, block_size=3)
    assert blocks.tolist() == [[5, 6, 7], [2, 8, 9]] and dropped == 1


def test_packing_never_crosses_splits(tmp_path):
    docs = [" ".join(f"d{i}w{j}" for j in range(20 + 7 * (i % 5))) for i in range(30)]  # words unique per doc
    p = tmp_path / "corpus.txt"
    p.write_text("\n\n".join(docs), encoding="utf-8")
    tok = WordTokenizer()
    data = load_lm_data(tok, str(p), block_size=16, seed=1)
    owner = {tok.vocab[w]: i for i, d in enumerate(docs) for w in d.split()}
    seen = {}
    for name in SPLITS:
        assert data.blocks[name].shape[1] == 16 and data.blocks[name].shape[0] > 0
        for t in data.blocks[name].flatten().tolist():
            if t != 2:
                assert owner[t] in data.documents[name], (name, t)
                seen.setdefault(owner[t], set()).add(name)
    assert all(len(s) == 1 for s in seen.values())
    assert not set(data.documents["train"]) & set(data.documents["test"])
    summary = data.summary()
    assert sum(v["documents"] for v in summary["splits"].values()) == 30


def test_too_little_text_for_a_block_is_refused(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text("a b\n\nc d\n\ne f\n\ng h\n", encoding="utf-8")
    with pytest.raises(ValueError, match="fewer than block_size=64 tokens"):
        load_lm_data(WordTokenizer(), str(p), block_size=64)


def test_default_corpus_is_the_convention_speeches():
    data = load_lm_data(WordTokenizer(), None, block_size=256, seed=0)
    assert data.source["name"] == DEFAULT_CORPUS and data.source["documents"] > 150
    assert all(data.blocks[s].shape[0] > 10 for s in SPLITS)
