"""What a user gets from a run and uses afterwards (issue 17): an ONNX file that carries what is needed to
use it (output ``logits`` [batch, num_labels], metadata), ``leap-fx eval`` that agrees with the report on
held-out files (single text and sentence pairs, the run's label map), the onnxruntime example, visible
stages, checkpoints removed once the run is complete (kept with ``--keep-checkpoints``), the plots."""
import contextlib
import csv
import io
import json
import os
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest

from leap_fx import cli
from leap_fx.data import load_text_file
from leap_fx.run.evaluate import onnx_predict_logits
from leap_fx.run.job import run_prune
from passes.export.metadata import read_metadata, write_metadata
from tests.conftest import tiny_bert
from tests.helpers import NEG, NEUTRAL, POS, ROOT, tiny_options, write_tiny_corpus


class _Log(io.StringIO):
    def isatty(self):
        return False


def _run(out, data, tok, quiet=False, **kw):
    """run_prune with stdout and stderr captured as a log file would see them, and every warning kept."""
    log = _Log()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
            warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rep = run_prune(tiny_options(data, out, verbose=not quiet, **kw), model=tiny_bert(), tokenizer=tok)
    return rep, log.getvalue(), seen


def _held_out_corpus(folder):
    paths = {}
    for name, rows, seed in (("train", 160, 0), ("validation", 48, 1), ("test", 56, 2)):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        paths[name], tok = write_tiny_corpus(os.path.join(folder, name), rows=rows, seed=seed)
    return paths, tok


def _write_pairs(path, rows, seed):
    """Claim / evidence pairs: ``agree`` when both carry the same sentiment."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["claim", "evidence", "verdict"])
        for _ in range(rows):
            a, b = rng.random() < 0.5, rng.random() < 0.5
            side = (lambda pos: [rng.choice(POS if pos else NEG), rng.choice(NEUTRAL), rng.choice(NEUTRAL)])
            w.writerow([" ".join(side(a)), " ".join(side(b)), "agree" if a == b else "disagree"])
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    paths, tok = _held_out_corpus(str(folder))
    out = folder / "run"
    rep, log, seen = _run(out, paths["train"], tok, validation_data=paths["validation"], test_data=paths["test"])
    return out, rep, log, seen, paths


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    _, tok = write_tiny_corpus(str(folder), rows=10)
    paths = {n: _write_pairs(str(folder / f"{n}.csv"), r, s) for n, r, s in
             (("train", 160, 0), ("validation", 40, 1), ("test", 52, 2))}
    out = folder / "run"
    rep, _, _ = _run(out, paths["train"], tok, quiet=True, validation_data=paths["validation"],
                     test_data=paths["test"], text_column="claim", text_pair_column="evidence",
                     label_column="verdict")
    return out, rep, paths


def _eval(capsys, *argv):
    assert cli.main(["eval", *argv]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    return float(first.split(" accuracy ")[1].split()[0]), int(first.split(" on ")[1].split()[0]), out


# -- the ONNX file ---------------------------------------------------------------------------------
def test_output_is_logits_batch_by_num_labels(single):
    import onnx
    out, rep, *_ = single
    (output,) = onnx.load(str(out / "model.onnx")).graph.output
    dims = [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]
    assert output.name == "logits" and dims == ["batch", len(rep["data"]["label_names"])]


def test_metadata_carries_what_a_consumer_needs(single):
    import onnxruntime as ort
    out, rep, *_ = single
    meta = read_metadata(str(out / "model.onnx"))
    assert meta["label_names"] == rep["data"]["label_names"] == ["neg", "pos"]
    assert meta["max_length"] == 16 and meta["tokenizer"] == "tokenizer" and (out / "tokenizer").is_dir()
    assert meta["tokenizer_class"] and meta["leap_fx_version"] and meta["text_pair"] is False
    assert meta["target_density"] == 0.5 and meta["achieved_density"] == rep["density"]["achieved"]
    assert meta["flops_fraction"] == rep["flops"]["slim_fraction"] < 1
    assert meta["parity_max_abs_diff"] == rep["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert meta["data_options"]["text_column"] == "review" and os.path.isabs(meta["data_options"]["test_data"])
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["label_names"]) == ["neg", "pos"]
    assert rep["onnx"]["size_bytes"] == os.path.getsize(out / "model.onnx")


def test_write_metadata_changes_only_the_metadata(single, tmp_path):
    import onnx
    out, *_ = single
    copy = tmp_path / "m.onnx"
    copy.write_bytes((out / "model.onnx").read_bytes())
    write_metadata(str(copy), {"label_names": ["a", "b"], "note": "x", "skip": None})
    before, after = onnx.load(str(out / "model.onnx")), onnx.load(str(copy))
    assert before.graph.SerializeToString() == after.graph.SerializeToString()
    meta = read_metadata(str(copy))
    assert meta["label_names"] == ["a", "b"] and meta["note"] == "x" and "skip" not in meta
    assert meta["max_length"] == 16  # other keys kept
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left
    with pytest.raises(ValueError, match="not a readable ONNX"):
        (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
        read_metadata(str(tmp_path / "bad.onnx"))


@pytest.mark.slow
def test_example_runs_the_slim_model_with_onnxruntime(single, pairs):
    for (out, rep, *_), texts in ((single, ["good great film", "awful dull plot", "the movie"]),
                                  (pairs, ["good film ||| great plot", "good film ||| awful plot"])):
        res = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "run_slim_onnx.py"),
                              str(out / "model.onnx"), *texts], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"), cwd=str(out.parent))
        assert res.returncode == 0, res.stderr[-2000:]
        got = [json.loads(line) for line in res.stdout.splitlines()]
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
        split = [t.split(" ||| ") for t in texts]
        enc = tok(*map(list, zip(*split)), truncation=True, max_length=16, padding="max_length", return_tensors="pt")
        feats = {k: v for k, v in enc.items()}
        feats["labels"] = feats["input_ids"][:, 0] * 0
        want = onnx_predict_logits(str(out / "model.onnx"), feats).argmax(-1)
        assert [g["label"] for g in got] == [rep["data"]["label_names"][i] for i in want]
        assert all(0.5 <= g["probability"] <= 1 for g in got)


# -- eval agrees with the report ---------------------------------------------------------------------
def test_eval_scores_a_whole_held_out_file_like_the_report(single, capsys):
    out, rep, _, _, paths = single
    acc, n, text = _eval(capsys, str(out), "--data", paths["test"])  # run's columns and max length
    assert n == 56 == rep["data"]["test"] and text.startswith("all accuracy")
    assert acc == pytest.approx(rep["accuracy"]["pruned"]["test"], abs=5e-5)
    acc_torch, n_torch, _ = _eval(capsys, str(out / "slim"), "--data", paths["test"])
    assert n_torch == 56 and acc_torch == pytest.approx(acc, abs=5e-5)
    default, n_default, _ = _eval(capsys, str(out))  # no --data: the run's test data
    assert (default, n_default) == (acc, 56)


def test_eval_on_sentence_pairs_uses_the_runs_pair_column(pairs, capsys):
    out, rep, paths = pairs
    acc, n, _ = _eval(capsys, str(out / "model.onnx"), "--data", paths["test"])
    assert n == 52 and acc == pytest.approx(rep["accuracy"]["pruned"]["test"], abs=5e-5)
    same, _, _ = _eval(capsys, str(out), "--data", paths["test"], "--text-pair-column", "evidence")
    assert same == acc


def test_eval_uses_the_runs_label_map(single, capsys, tmp_path):
    out, rep, _, _, paths = single
    only_pos = tmp_path / "pos.csv"
    with open(paths["test"]) as fh:
        rows = [r for r in csv.DictReader(fh) if r["sentiment"] == "pos"]
    with open(only_pos, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["review", "sentiment"])
        w.writeheader()
        w.writerows(rows)
    acc, n, _ = _eval(capsys, str(out), "--data", str(only_pos))
    split = load_text_file(str(only_pos), "review", label_column="sentiment", labels=["neg", "pos"])
    from transformers import AutoTokenizer
    split.tokenize(AutoTokenizer.from_pretrained(str(out / "tokenizer")), 16)
    truth = float(np.mean(onnx_predict_logits(str(out / "model.onnx"), split).argmax(-1) == 1))
    assert n == len(rows) and acc == pytest.approx(truth, abs=5e-5) and truth > 0.5  # not 1 - truth


def test_eval_refuses_labels_the_model_never_saw(single, capsys, tmp_path):
    out, *_ = single
    bad = tmp_path / "meh.csv"
    bad.write_text("review,sentiment\ngood film,pos\nthe plot,meh\n")
    assert cli.main(["eval", str(out), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "['meh']" in err and "never seen" in err and "['neg', 'pos']" in err


# -- visible stages, quiet export, disk, plots ----------------------------------------------------------
def test_long_stages_are_visible_in_a_log_file(single):
    _, _, log, _, _ = single
    assert "[leap-fx] torch threads:" in log
    for stage in ("dense teacher", "strip + export", "evaluate + count"):
        assert f"[leap-fx] {stage} ..." in log and f"[leap-fx] {stage} done in" in log, stage
    assert "[dense] step" in log and "[leap] step" in log  # teacher fine-tune and pruning, as lines
    assert "[leap-fx] evaluate + count done in" in log


def test_known_harmless_export_warnings_are_not_shown(single):
    _, rep, _, seen, _ = single
    shown = [str(w.message) for w in seen]
    assert not [m for m in shown if "aten::index" in m or "Converting a tensor to a Python boolean" in m], shown
    assert any("known-harmless" in n for n in rep["onnx"]["notes"]), rep["onnx"]["notes"]


def test_checkpoints_removed_once_complete(single, tmp_path):
    out, rep, log, _, _ = single
    _, tok = write_tiny_corpus(str(tmp_path))  # the same word vocabulary
    for sub in ("train", "teacher"):
        left = os.listdir(out / sub)
        assert not [f for f in left if "checkpoint" in f], left
    assert "history.jsonl" in os.listdir(out / "train")
    disk = rep["disk"]
    assert disk["checkpoints"] == "removed" and disk["checkpoints_bytes"] > 0
    assert disk["run_bytes"] >= disk["files"]["model.onnx"] > 0
    assert "training checkpoints" in log and "removed" in log
    opts = rep["resolved_options"]
    again = run_prune(tiny_options(opts["data"], out, resume=True, validation_data=opts["validation_data"],
                                   test_data=opts["test_data"]), model=tiny_bert(), tokenizer=tok)
    assert again["status"] == "complete"  # a complete run needs no checkpoint to be resumed


@pytest.mark.slow
def test_keep_checkpoints_keeps_them(tmp_path):
    csv_path, tok = write_tiny_corpus(str(tmp_path))
    rep, log, _ = _run(tmp_path / "run", csv_path, tok, quiet=True, epochs=1, teacher_epochs=2,
                       keep_checkpoints=True)
    for sub in ("train", "teacher"):
        assert "checkpoint.pt" in os.listdir(tmp_path / "run" / sub)
    assert rep["disk"]["checkpoints"] == "kept" and rep["disk"]["checkpoints_bytes"] > 0
    assert "kept (--keep-checkpoints)" in log


def test_structure_plot_and_accuracy_curves(single):
    out, rep, *_ = single
    assert rep["plots"]["structure"] == str(out / "structure.png")
    for name in ("structure.png", "curves.png", "density.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
