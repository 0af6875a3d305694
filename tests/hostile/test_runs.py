"""Whole runs, as a hostile user drives them (issue 12): the old run survives a bad --overwrite, half
precision folders train in float32, a useless result is flagged, the report says what data it used,
one file mode per run, and a failed new run does not block the same command."""
import json
import os
import shutil

import pytest
import torch

from leap_fx.run.job import run_prune
from leap_fx.run.rundir import MANIFEST
from tests.conftest import tiny_bert
from tests.hostile.runs import opts
from tests.hostile.test_rundir import snapshot


@pytest.fixture(scope="module")
def base_run(setup):
    out = setup[0] / "base"
    return out, run_prune(opts(setup, out))


def copy_run(base_run, dest):
    shutil.copytree(base_run[0], dest)
    return dest


def test_overwrite_with_a_model_folder_without_weights_keeps_the_old_run(setup, base_run, tmp_path):
    out = copy_run(base_run, tmp_path / "run")
    before = snapshot(out)
    empty = tmp_path / "no-weights"
    empty.mkdir()
    shutil.copy(setup[2] / "config.json", empty)
    with pytest.raises(ValueError, match=rf"--model '{empty}' has no weights \(none of model.safetensors"):
        run_prune(opts(setup, out, overwrite=True, model=str(empty)))
    assert snapshot(out) == before


def test_overwrite_with_data_that_does_not_parse_keeps_the_old_run(setup, base_run, tmp_path):
    out = copy_run(base_run, tmp_path / "run")
    before = snapshot(out)
    bad = tmp_path / "bad.csv"
    bad.write_text("review,sentiment\n" + "".join(f"good film {i},pos\n" for i in range(20)) + "bad film,\n")
    with pytest.raises(ValueError, match=rf"{bad}:22: missing, empty or null label"):
        run_prune(opts(setup, out, overwrite=True, data=str(bad)))
    assert snapshot(out) == before


def test_a_truncated_weights_file_is_named_and_the_old_run_kept(setup, base_run, tmp_path):
    out = copy_run(base_run, tmp_path / "run")
    before = snapshot(out)
    broken = shutil.copytree(setup[2], tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(ValueError, match=rf"the model in {broken} cannot be loaded .*truncated or damaged"):
        run_prune(opts(setup, out, overwrite=True, model=str(broken)))
    assert snapshot(out) == before


def test_report_and_summary_record_rows_labels_and_length(base_run, capsys):
    out, rep = base_run
    data = rep["data"]
    assert data["label_names"] == ["neg", "pos"]
    assert [data["splits"][s]["rows"] for s in ("train", "validation", "test")] == [128, 16, 16]
    assert data["splits"]["train"]["file"]["rows_read"] == 160 and data["splits"]["test"]["file"]["rows_skipped"] == 0
    assert sum(data["splits"]["train"]["label_counts"].values()) == 128
    assert data["max_length"]["max_length"] == 16 and not data["max_length"]["chosen_from_data"]
    from leap_fx.run.summary import summary_table
    text = " ".join(summary_table(rep).split())
    assert "rows train / val / test 128 / 16 / 16 (reviews.csv: read 160, skipped 0)" in text
    assert "labels neg, pos" in text and "max length 16 (set by --max-length" in text
    assert json.loads((out / MANIFEST).read_text())["complete"] is True


def test_files_of_one_run_share_one_mode(base_run):
    out = base_run[0]
    files, dirs = set(), set()
    for root, ds, fs in os.walk(out):
        dirs.update(os.stat(os.path.join(root, d)).st_mode & 0o777 for d in ds)
        files.update(os.stat(os.path.join(root, f)).st_mode & 0o777 for f in fs)
    umask = os.umask(0)
    os.umask(umask)
    assert files == {0o666 & ~umask} and dirs == {0o777 & ~umask}


def test_no_stray_files_after_a_run(base_run):
    out = base_run[0]
    assert sorted(os.listdir(out)) == sorted([".leap-fx.lock", MANIFEST, "curves.png", "density.png", "model.onnx",
                                              "options.json", "report.json", "slim", "structure.png", "teacher",
                                              "tokenizer", "train"])


@pytest.mark.slow
def test_max_length_is_chosen_from_the_data_when_unset(setup, tmp_path):
    out = tmp_path / "auto"
    rep = run_prune(opts(setup, out, max_length=None, continue_anyway=True), model=tiny_bert(), tokenizer=setup[3],
                    teacher=tiny_bert(seed=3))
    info = rep["data"]["max_length"]
    assert info["chosen_from_data"] and info["max_length"] == 8 == rep["resolved_options"]["max_length"]  # 6 words + 2
    assert json.loads((out / "options.json").read_text())["max_length"] is None  # chosen again on --resume


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_model_folders_train_and_export_in_float32(setup, tmp_path, dtype):
    model_dir = tmp_path / f"tiny-{dtype}"
    tiny_bert().to(getattr(torch, dtype)).save_pretrained(model_dir)
    setup[3].save_pretrained(model_dir)
    rep = run_prune(opts(setup, tmp_path / "out", model=str(model_dir), teacher_epochs=2, continue_anyway=True))
    assert rep["model"]["notes"] == [f"{model_dir} holds {dtype} weights: loaded as float32 (training and export "
                                     f"run in float32)"]
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4 and rep["status"] == "complete"
    from safetensors import safe_open
    with safe_open(str(tmp_path / "out" / "slim" / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float32}


@pytest.mark.parametrize("what", ["model", "teacher"])
def test_injected_half_model_is_refused_before_out(setup, tmp_path, what):
    kw = dict(model=tiny_bert(), teacher=tiny_bert(seed=3))
    kw[what] = kw[what].half()
    with pytest.raises(ValueError, match=rf"the {what}'s parameters are float16: leap-fx trains and exports in "
                                         rf"float32; pass {what}.float\(\)"):
        run_prune(opts(setup, tmp_path / "o", model=None), tokenizer=setup[3], **kw)
    assert not (tmp_path / "o").exists()


def test_meta_device_model_is_refused(setup, tmp_path):
    with torch.device("meta"):
        model = tiny_bert()
    with pytest.raises(ValueError, match="parameters on the meta device .* it holds no weights"):
        run_prune(opts(setup, tmp_path / "o", model=None), model=model, tokenizer=setup[3])
    assert not (tmp_path / "o").exists()


def test_max_length_above_the_model_limit_is_refused_before_out(setup, tmp_path):
    with pytest.raises(ValueError, match="--max-length 100 exceeds the model's position limit 64"):
        run_prune(opts(setup, tmp_path / "o", max_length=100))
    assert not (tmp_path / "o").exists()


def test_out_inside_the_model_folder_is_refused(setup):
    with pytest.raises(ValueError, match="is inside the model directory"):
        run_prune(opts(setup, setup[2] / "run"))
    assert not (setup[2] / "run").exists()


@pytest.mark.slow
def test_useless_teacher_is_flagged_loudly(setup, tmp_path, capsys):
    import random
    rng = random.Random(1)
    noise = tmp_path / "noise.csv"  # labels unrelated to the text: nothing can beat the majority class
    noise.write_text("review,sentiment\n" + "".join(f"{rng.choice(['good', 'bad'])} film,{rng.choice(['pos', 'neg'])}\n"
                                                    for _ in range(160)))
    rep = run_prune(opts(setup, tmp_path / "o", model=None, data=str(noise), continue_anyway=True),
                    model=tiny_bert(), tokenizer=setup[3], teacher=tiny_bert(seed=3))
    assert rep["status"] == "complete"
    teacher = [w for w in rep["warnings"] if w.startswith("the dense teacher scores") and "on validation" in w]
    assert len(teacher) == 1 and "not clearly above the majority-class rate" in teacher[0]
    assert "Try: more teacher epochs (--teacher-epochs, now 6)" in teacher[0]
    assert json.loads((tmp_path / "o" / "report.json").read_text())["warnings"] == rep["warnings"]
    captured = capsys.readouterr()
    assert "WARNING the dense teacher scores" in " ".join(captured.out.split())
    assert "leap-fx: WARNING: the dense teacher" in captured.err


def test_a_teacher_that_learned_is_not_flagged(base_run):
    assert not [w for w in base_run[1]["warnings"] if "dense teacher" in w]


@pytest.mark.slow
def test_a_failure_after_out_was_prepared_does_not_block_the_same_command(setup, tmp_path, monkeypatch):
    import sys
    out = tmp_path / "o"

    def broken(*a, **k):
        raise RuntimeError("analysis exploded")
    monkeypatch.setattr(sys.modules["leap_fx.run.job"], "analyze", broken)
    kw = dict(model=tiny_bert(), tokenizer=setup[3], teacher=tiny_bert(seed=3))
    with pytest.raises(RuntimeError, match="analysis exploded"):
        run_prune(opts(setup, out, model=None, continue_anyway=True), **kw)
    assert not out.exists()
    monkeypatch.undo()
    assert run_prune(opts(setup, out, model=None, continue_anyway=True), **kw)["status"] == "complete"


def test_five_classes_on_a_two_label_head_gets_a_new_head(setup, tmp_path):
    from leap_fx.hf.models import load_classifier, load_notes
    m = tiny_bert()
    m.config.architectures = ["BertForSequenceClassification"]
    m.save_pretrained(tmp_path / "two")
    setup[3].save_pretrained(tmp_path / "two")
    model, _ = load_classifier(str(tmp_path / "two"), num_labels=5, label_names=list("abcde"))
    assert model.classifier.out_features == 5
    assert load_notes(str(tmp_path / "two"), 5) == [
        f"the classifier head of {tmp_path / 'two'} has 2 labels and the data 5: a new 5-label head is initialised "
        f"(the dense teacher is fine-tuned on the data)"]
