"""Labels and tokenizers that silently change the task (issue 27): labels are normalised with a warning
naming the variants, label columns that cannot be classes are refused (allow_many_classes overrides),
a tokenizer that turns most of the data into its unknown token is refused, long CSV fields are read or
named, and a text column the user did not name is noted."""
import json
import random

import pytest

from leap_fx.data import DataWarning, check_tokenizer, load_data, load_text_file
from leap_fx.spec import PruneOptions
from tests.helpers import write_tiny_corpus


def _csv(tmp_path, rows, header="text,label", name="d.csv"):
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    return str(path)


def _opts(path, **kw):
    return PruneOptions(data=path, **kw)


def test_zero_width_space_does_not_make_new_classes_and_is_named(tmp_path):
    rows = [f"film {i},{lab}" for i, lab in enumerate(["neg", "neg\u200b", "pos", "pos\u200b"] * 10)]
    with pytest.warns(DataWarning) as rec:
        split = load_text_file(_csv(tmp_path, rows))
    path = tmp_path / "d.csv"
    assert [str(w.message) for w in rec] == [
        f"{path}: labels 'neg', 'neg\\u200b' differ only by invisible characters or spacing: read as one label 'neg'",
        f"{path}: labels 'pos', 'pos\\u200b' differ only by invisible characters or spacing: read as one label 'pos'"]
    assert split.label_names == ["neg", "pos"] and split.labels[:4] == [0, 0, 1, 1]
    assert len(split.source["warnings"]) == 2


def test_nfd_and_nfc_spellings_are_one_label(tmp_path):
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    rows = [f"t{i},{nfc if i % 2 else nfd}" for i in range(10)] + [f"u{i},other" for i in range(10)]
    with pytest.warns(DataWarning, match="differ only by invisible characters or spacing"):
        split = load_text_file(_csv(tmp_path, rows))
    assert split.label_names == ["caf\u00e9", "other"]


def test_labels_that_differ_only_in_case_are_warned_about(tmp_path):
    rows = [f"t{i},{lab}" for i, lab in enumerate(["Pos", "pos", "neg"] * 5)]
    with pytest.warns(DataWarning, match=r"labels 'Pos', 'pos' differ only in case and are kept as 2 classes"):
        split = load_text_file(_csv(tmp_path, rows))
    assert split.label_names == ["Pos", "neg", "pos"]


def test_a_label_column_that_is_the_text_column_is_refused(tmp_path):
    path, _ = write_tiny_corpus(str(tmp_path))
    with pytest.raises(ValueError, match=r"the label column 'review' is also the text column"):
        load_data(_opts(path, text_column="review", label_column="review"))


def test_one_class_per_row_is_refused_naming_the_override(tmp_path):
    path, _ = write_tiny_corpus(str(tmp_path))
    copy = tmp_path / "copy.csv"
    lines = open(path).read().splitlines()
    copy.write_text("\n".join(["review,sentiment,again"] + [f"{ln},{ln.split(',')[0]} {i}" for i, ln in
                                                           enumerate(lines[1:])]) + "\n")
    with pytest.raises(ValueError, match=r"column 'again' cannot be the labels of a classifier: nearly every row is "
                                         r"its own class \(160 labels for 160 rows\).*--allow-many-classes "
                                         r"\(allow_many_classes=True\)"):
        load_data(_opts(str(copy), text_column="review", label_column="again"))
    data = load_data(_opts(str(copy), text_column="review", label_column="again"), allow_many_classes=True)
    assert len(data.label_names) == 160


def test_continuous_labels_are_refused(tmp_path):
    rng = random.Random(0)
    rows = [f"film {i},{round(rng.random(), 1)}" for i in range(200)]
    with pytest.raises(ValueError, match=r"they look like continuous values .*regression targets, not classes"):
        load_data(_opts(_csv(tmp_path, rows)))


def test_more_classes_than_a_tenth_of_the_rows_is_refused(tmp_path):
    rows = [f"film {i},genre{i % 30}" for i in range(200)]
    with pytest.raises(ValueError, match=r"30 classes for 200 rows is more than one class per 10 rows"):
        load_data(_opts(_csv(tmp_path, rows)))
    ok = [f"film {i},{['a', 'b', 'c'][i % 3]}" for i in range(200)]  # a real 3-class task passes
    assert load_data(_opts(_csv(tmp_path, ok, name="ok.csv"))).label_names == ["a", "b", "c"]


def test_a_csv_field_over_128k_characters_is_read(tmp_path):
    long = "word " * 40000  # 200k characters: past the csv module's default limit
    path = _csv(tmp_path, [f"{long},pos", "short,neg"])
    split = load_text_file(path)
    assert len(split.texts[0]) == len(long) and split.label_names == ["neg", "pos"]


def test_a_field_over_the_limit_names_file_and_line(tmp_path, monkeypatch):
    import leap_fx.data.files as files
    monkeypatch.setattr(files, "FIELD_LIMIT", 1000)
    path = _csv(tmp_path, ["a,pos", "b,neg", '"never closed,pos'] + [f"row {i},neg" for i in range(300)])
    with pytest.raises(ValueError, match=rf"^{path}:4: a field longer than 1,000 characters starts in this row "
                                         r"\(an unbalanced quote"):
        load_text_file(path)
    import csv
    assert csv.field_size_limit() == 131072  # the process-wide limit is restored


def test_an_unused_text_column_is_named(tmp_path):
    rows = [json.dumps({"claim": f"the film {i} is good", "evidence": f"critics wrote about film {i} at length",
                        "id": i, "label": i % 2}) for i in range(20)]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.warns(DataWarning, match=r"column 'evidence' also holds text .* pass --text-pair-column evidence"):
        split = load_text_file(str(path), text_column="claim")
    assert len(split.source["notes"]) == 1  # 'id' (numbers) is not text
    assert "notes" not in load_text_file(str(path), text_column="claim", text_pair_column="evidence").source


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path):
    from leap_fx.hf.models import load_tokenizer
    from tests.conftest import tiny_bert
    tiny_bert().save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'm'} has no tokenizer files .*tokenizer.save_pretrained"):
        load_tokenizer(str(tmp_path / "m"))


def test_a_tokenizer_that_does_not_know_the_words_is_refused(tmp_path):
    from transformers import BertTokenizerFast
    path, tok = write_tiny_corpus(str(tmp_path))
    split = load_text_file(path, text_column="review", label_column="sentiment")
    assert check_tokenizer(tok, split, "tiny") == 0.0
    five = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])})
    with pytest.raises(ValueError, match=r"the tokenizer of m \(BertTokenizer\w*, 5 entries\) turns 100% of the "
                                         rf"tokens of {path} into its unknown token '\[UNK\]'"):
        check_tokenizer(five, split, "m")


def test_run_prune_refuses_a_tokenizer_that_does_not_fit_before_out(tmp_path):
    from transformers import BertTokenizerFast

    from leap_fx.run import run_prune
    from tests.conftest import tiny_bert
    from tests.helpers import tiny_options
    path, _ = write_tiny_corpus(str(tmp_path))
    other = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                                  "le", "film", "est", "bon"])})
    with pytest.raises(ValueError, match=r"the tokenizer of run_prune\(tokenizer=...\) .* turns 9\d% of the tokens"):
        run_prune(tiny_options(path, tmp_path / "out"), model=tiny_bert(), tokenizer=other, teacher=tiny_bert(seed=3))
    assert not (tmp_path / "out").exists()
