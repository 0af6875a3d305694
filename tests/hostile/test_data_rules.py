"""Hostile data files (issue 12): nothing changes the dataset silently. A row without its text or label is
an error naming the file and line (or skipped and counted with drop_invalid); numeric labels are one class
however they are written; TSV quotes are characters; bad bytes, BOMs, directories are named."""
import json

import pytest

from leap_fx.data import load_data, load_text_file
from leap_fx.data.files import label_value
from leap_fx.data.lengths import choose_max_length, describe, model_limit
from leap_fx.data.splits import data_summary
from leap_fx.spec.options import PruneOptions


def _w(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return str(path)


def _jsonl(tmp_path, rows, name="d.jsonl"):
    return _w(tmp_path, name, "".join(json.dumps(r) + "\n" for r in rows))


# -- the cases -----------------------------------------------------------------------------
def test_csv_row_without_its_label_is_an_error_naming_file_and_line(tmp_path):
    path = _w(tmp_path, "d.csv", "text,label\ngood,pos\nno label here\nbad,neg\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: no 'label' value; fix the row, or pass --drop-invalid"):
        load_text_file(path)


def test_csv_empty_label_is_an_error(tmp_path):
    path = _w(tmp_path, "d.csv", "text,label\ngood,pos\nbad,\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: missing, empty or null label in column 'label' \(''\)"):
        load_text_file(path)


def test_jsonl_null_label_is_an_error(tmp_path):
    path = _jsonl(tmp_path, [{"text": "a", "label": 1}, {"text": "b", "label": None}])
    with pytest.raises(ValueError, match=rf"^{path}:2: missing, empty or null label in column 'label' \(None\)"):
        load_text_file(path)


def test_jsonl_labels_1_and_1_0_are_one_class(tmp_path):
    path = _jsonl(tmp_path, [{"text": "a", "label": 1}, {"text": "b", "label": 1.0}, {"text": "c", "label": 0},
                             {"text": "d", "label": "1"}, {"text": "e", "label": "0.0"}])
    split = load_text_file(path)
    assert split.label_names == ["0", "1"] and split.labels == [1, 1, 0, 1, 0]


def test_tsv_unbalanced_quote_does_not_swallow_rows(tmp_path):
    rows = ['"so it begins\tpos'] + [f"row {i}\t{'pos' if i % 2 else 'neg'}" for i in range(149)]
    path = _w(tmp_path, "d.tsv", "text\tlabel\n" + "\n".join(rows) + "\n")
    split = load_text_file(path)
    assert len(split) == 150 and split.texts[0] == '"so it begins'  # the quote is a character
    assert split.source == {"path": path, "rows_read": 150, "rows_skipped": 0, "skipped": []}
    with pytest.raises(ValueError):  # asked for CSV quoting: the quote opens a field that swallows the file
        load_text_file(path, tsv_quotes=True)


def test_drop_invalid_skips_and_counts_and_the_summary_names_them(tmp_path):
    path = _w(tmp_path, "d.csv", "text,label\n" + "".join(f"t{i},{'pos' if i % 2 else 'neg'}\n" for i in range(20))
              + "oops,\n,neg\n")
    split = load_text_file(path, drop_invalid=True)
    assert len(split) == 20
    assert split.source["rows_read"] == 22 and split.source["rows_skipped"] == 2
    assert [s["line"] for s in split.source["skipped"]] == [22, 23]
    assert "empty or null text" in split.source["skipped"][1]["reason"]
    data = load_data(PruneOptions(data=path, drop_invalid=True))
    summary = data_summary(data)
    assert summary["label_names"] == ["neg", "pos"]
    assert sum(s["rows"] for s in summary["splits"].values()) == 20
    assert all(s["file"]["rows_skipped"] == 2 for s in summary["splits"].values())


# -- more of the same spirit -------------------------------------------------------------------------
def test_unquoted_comma_shifting_the_label_is_an_error(tmp_path):
    path = _w(tmp_path, "d.csv", "text,label\ngreat, really great,pos\n")
    with pytest.raises(ValueError, match=rf"{path}:2: 3 fields but the header has 2 \(a comma inside an unquoted"):
        load_text_file(path)


def test_duplicate_header_column_is_refused(tmp_path):
    path = _w(tmp_path, "d.csv", "text,label,label\na,pos,neg\n")
    with pytest.raises(ValueError, match=r":1: column\(s\) \['label'\] appear more than once"):
        load_text_file(path)


def test_non_utf8_byte_names_file_and_line(tmp_path):
    path = _w(tmp_path, "d.csv", b"text,label\ngood,pos\ncaf\xe9,neg\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: byte 0xe9 is not UTF-8; re-save the file as UTF-8"):
        load_text_file(path)


def test_utf8_bom_is_read_not_blamed_on_the_column_name(tmp_path):
    path = _w(tmp_path, "d.csv", "\ufefftext,label\ngood,pos\nbad,neg\n".encode("utf-8"))
    assert load_text_file(path).texts == ["good", "bad"]
    jl = _w(tmp_path, "d.jsonl", "\ufeff{\"text\": \"a\", \"label\": 0}\n".encode("utf-8"))
    assert load_text_file(jl).texts == ["a"]


def test_data_path_is_a_directory(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(ValueError, match="is a directory; pass a .csv, .tsv or .jsonl file"):
        load_text_file(str(tmp_path / "dir.csv"))


def test_null_or_blank_text_is_an_error(tmp_path):
    path = _jsonl(tmp_path, [{"text": None, "label": 1}])
    with pytest.raises(ValueError, match=":1: empty or null text in column 'text'"):
        load_text_file(path)
    path = _w(tmp_path, "b.csv", "text,label\n   ,pos\n")
    with pytest.raises(ValueError, match=":2: empty or null text"):
        load_text_file(path)


@pytest.mark.parametrize("raw", ["nan", "NaN", "None", "null", "  "])
def test_missing_value_spellings_are_missing_labels(raw, tmp_path):
    path = _w(tmp_path, "d.csv", f"text,label\na,pos\nb,{raw}\n")
    with pytest.raises(ValueError, match=":3: missing, empty or null label"):
        load_text_file(path)


def test_float_nan_and_list_labels_in_json_are_invalid(tmp_path):
    path = _w(tmp_path, "d.jsonl", '{"text": "a", "label": NaN}\n{"text": "b", "label": [1]}\n')
    with pytest.raises(ValueError, match=":1: missing, empty or null label"):
        load_text_file(path)
    with pytest.raises(ValueError, match=r"none of its 2 rows is valid \(line 1"):
        load_text_file(path, drop_invalid=True)


def test_label_normalisation_table():
    assert [label_value(v) for v in (1, 1.0, "1", " 1.0 ", "01", 2.5, "2.50", True, False, "pos", " pos ")] == \
        ["1", "1", "1", "1", "1", "2.5", "2.5", "true", "false", "pos", "pos"]
    assert [label_value(v) for v in (None, float("nan"), float("inf"), "", "NULL", [1], {"a": 1})] == [None] * 7


def test_whitespace_around_labels_and_windows_line_endings(tmp_path):
    path = _w(tmp_path, "d.csv", b"text,label\r\ngood, pos\r\nbad,neg \r\nfine,pos\r\n")
    split = load_text_file(path)
    assert split.label_names == ["neg", "pos"] and split.labels == [1, 0, 1]


def test_quoted_newline_keeps_line_numbers_right(tmp_path):
    path = _w(tmp_path, "d.csv", 'text,label\n"two\nlines",pos\nok,\n')
    with pytest.raises(ValueError, match=rf"^{path}:4: missing, empty or null label"):
        load_text_file(path)


def test_unseen_label_in_the_validation_file_names_its_line(tmp_path):
    train = _w(tmp_path, "train.csv", "text,label\n" + "".join(f"t{i},{'a' if i % 2 else 'b'}\n" for i in range(12)))
    val = _w(tmp_path, "val.csv", "text,label\nx,a\ny,c\n")
    with pytest.raises(ValueError, match=rf"{val}:3: label value\(s\) \['c'\] not in labels=\['a', 'b'\]"):
        load_data(PruneOptions(data=train, validation_data=val, test_data=val))


def test_numeric_validation_labels_match_training_labels_written_differently(tmp_path):
    train = _jsonl(tmp_path, [{"text": f"t{i}", "label": i % 2} for i in range(12)], "train.jsonl")
    val = _w(tmp_path, "val.csv", "text,label\nx,1.0\ny,0\n")
    data = load_data(PruneOptions(data=train, validation_data=val, test_data=val))
    assert data.label_names == ["0", "1"] and data.validation.labels == [1, 0]


def test_blank_lines_are_not_rows(tmp_path):
    path = _w(tmp_path, "d.csv", "text,label\n\na,pos\n\n\nb,neg\n")
    split = load_text_file(path)
    assert len(split) == 2 and split.source["rows_read"] == 2


def test_bad_jsonl_line_is_skippable_and_counted(tmp_path):
    path = _w(tmp_path, "d.jsonl",
              '{"text": "a", "label": 0}\n{"text": "b", "label"\n[1, 2]\n{"text": "c", "label": 1}\n')
    split = load_text_file(path, drop_invalid=True)
    assert split.texts == ["a", "c"] and split.source["rows_skipped"] == 2
    assert "expected a JSON object, got list" in split.source["skipped"][1]["reason"]


def test_wrong_column_name_is_not_blamed_on_rows(tmp_path):
    path = _w(tmp_path, "d.csv", "review,sentiment\na,pos\n")
    with pytest.raises(ValueError, match=r"column\(s\) \['text', 'label'\] not found in the header; available: "
                                         r"\['review', 'sentiment'\]. Choose others with --text-column"):
        load_text_file(path, drop_invalid=True)


# -- max_length from the data ------------------------------------------------------------------------
class WordTokenizer:
    """Whitespace tokenizer: CLS + words (+ SEP + pair words) + SEP."""
    model_max_length = 10 ** 30

    def __call__(self, texts, pairs=None, truncation=False, padding=False):
        ids = []
        for i, t in enumerate(texts):
            n = 2 + len(t.split()) + (1 + len(pairs[i].split()) if pairs is not None else 0)
            ids.append(list(range(n)))
        return {"input_ids": ids}


def _split(lengths, pairs=None):
    from leap_fx.data import TextSplit
    return TextSplit(texts=["w " * (n - 2) for n in lengths], labels=[0] * len(lengths), label_names=["a"],
                     text_pairs=pairs)


def test_max_length_is_the_95th_percentile_pairs_included_and_capped():
    lengths = list(range(10, 110))  # 100 rows, 10..109 tokens
    info = choose_max_length(_split(lengths), WordTokenizer(), limit=512)
    assert info["max_length"] == 104 and info["chosen_from_data"] and info["longest"] == 109
    assert info["truncated_fraction"] == 0.05
    paired = choose_max_length(_split(lengths, pairs=["p " * 20] * 100), WordTokenizer(), limit=512)
    assert paired["max_length"] == 104 + 21 and paired["pairs"]
    capped = choose_max_length(_split(lengths), WordTokenizer(), limit=64)
    assert capped["max_length"] == 64 and capped["truncated_fraction"] == pytest.approx(0.45)
    assert "95th percentile of 100 tokenised training examples; longest 109, model limit 64; 45.0% of " \
           "examples cut" in describe(capped)


def test_max_length_given_above_the_model_limit_is_refused():
    with pytest.raises(ValueError, match="--max-length 600 exceeds the model's position limit 512; pass at most 512"):
        choose_max_length(_split([10, 12]), WordTokenizer(), limit=512, given=600)
    info = choose_max_length(_split([10, 30]), WordTokenizer(), limit=512, given=16)
    assert info["max_length"] == 16 and not info["chosen_from_data"] and info["truncated_fraction"] == 0.5


def test_model_limit_reads_positions_and_tokenizer():
    from transformers import BertConfig, RobertaConfig
    assert model_limit(BertConfig(max_position_embeddings=64), WordTokenizer()) == 64
    assert model_limit(RobertaConfig(max_position_embeddings=514), WordTokenizer()) == 512
    tok = WordTokenizer()
    tok.model_max_length = 128
    assert model_limit(BertConfig(max_position_embeddings=512), tok) == 128
    assert model_limit(None, WordTokenizer()) is None
