"""`leap-fx eval` and `leap-fx export` on models someone touched (issue 27): an edited slim folder needs
--trust-edited, ONNX metadata that disagrees with the run's report.json is refused until --settings-from
chooses, an edited max_length is one line naming it, no other model's tokenizer is ever used and the one
used must know the words, --drop-invalid (which eval's own error advises) exists, and the output names the
majority-class rate and the data's notes."""
import json
import os
import shutil

import pytest

from leap_fx import cli
from passes.export.metadata import read_metadata, write_metadata
from passes.export.slim_io import MANIFEST
from tests.conftest import tiny_bert
from tests.helpers import tiny_options, write_tiny_corpus


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run (the teacher fine-tuned from the injected model)."""
    from leap_fx.run.job import run_prune
    folder = tmp_path_factory.mktemp("hostile_eval")
    csv_path, tok = write_tiny_corpus(str(folder))
    out = folder / "run"
    rep = run_prune(tiny_options(csv_path, out, epochs=1), model=tiny_bert(), tokenizer=tok)
    return folder, out, csv_path, rep


def one_line(capsys, code, argv):
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) <= 1 and "Traceback" not in err, err
    return err if code else captured.out


def lone_onnx(run, tmp_path, **meta):
    """The run's model.onnx alone in a folder, its metadata changed by ``meta``."""
    path = tmp_path / "alone" / "model.onnx"
    path.parent.mkdir()
    shutil.copy(run[1] / "model.onnx", path)
    if meta:
        write_metadata(str(path), meta)
    return path


def data_args(run):
    return ["--data", run[2], "--text-column", "review", "--label-column", "sentiment"]


# -- an edited slim folder --------------------------------------------------------------------------------
def _edited_slim(run, tmp_path):
    copy = shutil.copytree(run[1], tmp_path / "run")
    man = json.loads((copy / "slim" / MANIFEST).read_text())
    man["config"]["layer_norm_eps"] = 1e-3
    (copy / "slim" / MANIFEST).write_text(json.dumps(man))
    return copy


def test_export_of_an_edited_slim_folder_needs_trust_edited(run, tmp_path, capsys):
    copy = _edited_slim(run, tmp_path)
    target = tmp_path / "m.onnx"
    err = one_line(capsys, 2, ["export", str(copy / "slim"), "--out", str(target)])
    assert "manifest.json changed since save_slim wrote it" in err and not target.exists()
    assert "wrote " in one_line(capsys, 0, ["export", str(copy / "slim"), "--out", str(target), "--trust-edited"])
    assert target.is_file()


def test_eval_of_an_edited_slim_folder_needs_trust_edited(run, tmp_path, capsys):
    copy = _edited_slim(run, tmp_path)
    assert "manifest.json changed since save_slim wrote it" in one_line(capsys, 2, ["eval", str(copy / "slim")])
    out = one_line(capsys, 0, ["eval", str(copy / "slim"), "--trust-edited"])
    assert out.startswith("test accuracy ") and "(pytorch, " in out


# -- metadata and report.json ----------------------------------------------------------------------------
def test_metadata_that_disagrees_with_the_report_is_refused_until_one_is_chosen(run, tmp_path, capsys):
    _, out, _, rep = run
    copy = shutil.copytree(out, tmp_path / "run")
    write_metadata(str(copy / "model.onnx"), {"label_names": ["pos", "neg"]})  # reversed by hand
    err = one_line(capsys, 2, ["eval", str(copy)])
    assert (f"{copy}/model.onnx metadata and {copy}/report.json disagree (label_names ['pos', 'neg'] in the "
            f"metadata, ['neg', 'pos'] in report.json): one of them was edited since the run. Pass --settings-from "
            f"report") in err
    text = one_line(capsys, 0, ["eval", str(copy), "--settings-from", "report"])
    assert text.startswith(f"test accuracy {rep['accuracy']['pruned']['test']:.4f} on 16 rows")
    assert f"run settings from {copy}/report.json (--settings-from report; they disagree: label_names" in text
    flipped = one_line(capsys, 0, ["eval", str(copy), "--settings-from", "onnx"])
    assert flipped.startswith(f"test accuracy {1 - rep['accuracy']['pruned']['test']:.4f} on 16 rows")


@pytest.mark.parametrize("value, needle", [
    ("abc", "max_length 'abc' in {path} metadata is not a whole number >= 2 (was the file edited?); pass "
            "--max-length N (the length the model was trained at)"),
    (100000, "max_length 100000 (from {path} metadata) exceeds the model's limit 64; pass --max-length N with N the "
             "length the model was trained at (at most 64)"),
])
def test_an_edited_max_length_is_one_line_naming_it(run, tmp_path, capsys, value, needle):
    path = lone_onnx(run, tmp_path, max_length=value)
    err = one_line(capsys, 2, ["eval", str(path), *data_args(run), "--tokenizer", str(run[1] / "tokenizer")])
    assert err == "leap-fx eval: error: " + needle.format(path=path)
    assert "accuracy" in one_line(capsys, 0, ["eval", str(path), *data_args(run), "--tokenizer",
                                              str(run[1] / "tokenizer"), "--max-length", "16"])


# -- tokenizers ------------------------------------------------------------------------------------------------
def test_a_lone_model_onnx_without_its_tokenizer_is_refused_not_given_another(run, tmp_path, capsys):
    path = lone_onnx(run, tmp_path)
    err = one_line(capsys, 2, ["eval", str(path), *data_args(run)])
    assert err == (f"leap-fx eval: error: no tokenizer found for {path} (no tokenizer files in {path.parent}, no "
                   f"tokenizer/ folder beside it): pass --tokenizer DIR, the tokenizer the model was trained with "
                   f"(a run's OUT/tokenizer)")


def test_a_tokenizer_that_does_not_know_the_words_is_refused(run, tmp_path, capsys):
    from transformers import BertTokenizerFast
    other = tmp_path / "other-tokenizer"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(40)]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(other)
    err = one_line(capsys, 2, ["eval", str(run[1]), "--tokenizer", str(other)])
    assert f"the tokenizer of {other} (" in err and \
        f", 45 entries) turns 100% of the tokens of {run[2]} into its unknown token '[UNK]'" in err


# -- rows -------------------------------------------------------------------------------------------------------
def test_drop_invalid_is_a_flag_of_eval_as_its_error_advises(run, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("review,sentiment\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(10))
                   + "a film,\n")
    err = one_line(capsys, 2, ["eval", str(run[1]), "--data", str(bad)])
    assert f"{bad}:22: missing, empty or null label" in err and "pass --drop-invalid" in err
    out = one_line(capsys, 0, ["eval", str(run[1]), "--data", str(bad), "--drop-invalid"])
    assert out.startswith("all accuracy ") and " on 20 rows: all rows of " in out
    assert f"{bad}: read 21 rows, skipped 1 (--drop-invalid), e.g. line 22: missing, empty or null label" in out


def test_eval_prints_the_majority_rate_and_flags_a_model_below_it(run, tmp_path, capsys):
    only_pos = tmp_path / "pos.csv"
    only_pos.write_text("review,sentiment\n" + "".join(f"good film,{'pos' if i % 4 else 'neg'}\n" for i in range(40)))
    out = one_line(capsys, 0, ["eval", str(run[1]), "--data", str(only_pos)])
    assert "  majority-class rate 0.7500 (the share of the most frequent label, 'pos')" in out
    first = out.splitlines()[0]
    acc = float(first.split(" accuracy ")[1].split()[0])
    assert acc <= 0.75 and "WARNING: " in out and "is not clearly above the majority-class rate" in out


def test_eval_prints_the_notes_of_the_data_it_read(run, tmp_path, capsys):
    extra = tmp_path / "extra.csv"
    extra.write_text("review,comment,sentiment\n" + "".join(f"good film,note number {i} by a critic,pos\n"
                                                            f"bad film,another note {i} by someone,neg\n"
                                                            for i in range(10)))
    out = one_line(capsys, 0, ["eval", str(run[1]), "--data", str(extra)])
    assert f"  note: {extra}: column 'comment' also holds text" in out


def test_the_run_records_how_its_data_was_read(run):
    meta = read_metadata(str(run[1] / "model.onnx"))["data_options"]
    assert meta["drop_invalid"] is False and meta["tsv_quotes"] is False and meta["allow_many_classes"] is False
    assert os.path.isabs(meta["data"])
