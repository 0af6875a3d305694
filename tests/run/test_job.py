"""run_prune end to end on a tiny config-built BERT and a synthetic sentiment CSV (fast)."""
import json
import os

import pytest

from leap_fx.data import load_data
from leap_fx.methods.request import check, resolve
from leap_fx.run.job import run_prune
from leap_fx.spec.options import MODES, PruneOptions
from tests.conftest import tiny_bert
from tests.helpers import (  # noqa: F401 - re-exported: older tests import them from here
    NEG,
    NEUTRAL,
    POS,
    tiny_model_folder,
    tiny_options,
    write_tiny_corpus,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def structured_run(corpus, tmp_path_factory):
    path, tok = corpus
    out = tmp_path_factory.mktemp("run") / "out"
    return out, run_prune(tiny_options(path, out), model=tiny_bert(), tokenizer=tok)


def test_run_writes_every_artifact(structured_run):
    out, rep = structured_run
    for name in ("report.json", "density.png", "curves.png", "model.onnx", "options.json", "slim",
                 "tokenizer", "train"):
        assert os.path.exists(out / name), name
    assert json.loads((out / "report.json").read_text())["density"] == json.loads(json.dumps(rep["density"]))
    assert not [f for f in os.listdir(out) if "tmp" in f]


def test_report_is_consistent(structured_run):
    _, rep = structured_run
    d = rep["density"]
    # masked weights are exact zeros after fold: the mask-measured density is the non-zero fraction
    assert d["achieved"] == pytest.approx(d["nonzero_in_plan"], abs=1e-6)
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4
    # ORT on the slim graph agrees with PyTorch on the slim model
    assert rep["accuracy"]["pruned"]["validation"] == pytest.approx(rep["accuracy"]["pruned"]["validation_torch"])
    # structured: a head's q rows are all kept or all zero -> q density = live heads / heads
    q = {r["layer"]: r["density"] for r in d["per_matrix"] if r["role"] == "q"}
    for h in rep["structure"]["heads"]:
        assert q[h["layer"]] == pytest.approx(h["live"] / h["before"])
    up = {r["layer"]: r["density"] for r in d["per_matrix"] if r["role"] == "up"}
    for n in rep["structure"]["neurons"]:
        assert up[n["layer"]] == pytest.approx(n["live"] / n["before"])
    assert rep["parameters"]["slim"] < rep["parameters"]["dense"]
    assert rep["flops"]["slim_encoder"] < rep["flops"]["dense_encoder"]
    assert rep["data"]["train"] + rep["data"]["validation"] + rep["data"]["test"] == 160
    assert 0.5 <= rep["data"]["majority_test"] <= 1.0
    assert rep["mask_lr"] > 1e-2  # auto: a short run needs a faster sigma than the paper's 1e-2
    acc = rep["accuracy"]
    for split in ("validation", "test"):  # pruned - dense on the same rows, with a paired bootstrap interval
        delta = acc["pruned"]["delta"][split]
        assert delta["delta_pt"] == pytest.approx(100 * (acc["pruned"][split] - acc["dense"][split]), abs=1e-9)
        assert delta["low_pt"] <= delta["delta_pt"] <= delta["high_pt"] and delta["rows"] == rep["data"][split]


def test_dense_teacher_learned_the_task(structured_run):
    _, rep = structured_run
    assert rep["accuracy"]["dense"]["validation"] >= 0.8  # the words decide the label


def test_existing_run_is_refused_then_overwritten_or_resumed(structured_run, corpus):
    out, rep = structured_run
    path, tok = corpus
    with pytest.raises(ValueError, match="already holds a leap-fx run.*--overwrite"):
        run_prune(tiny_options(path, out), model=tiny_bert(), tokenizer=tok)
    again = run_prune(tiny_options(path, out, resume=True), model=tiny_bert(), tokenizer=tok)
    assert again["timing"] == rep["timing"]  # finished run: its report, nothing re-run
    with pytest.raises(ValueError, match="different options.*target_density"):
        run_prune(tiny_options(path, out, resume=True, target_density=0.4), model=tiny_bert(), tokenizer=tok)


@pytest.mark.slow
def test_overwrite_and_baseline_method(corpus, tmp_path):
    path, tok = corpus
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "leap-fx-run.json").write_text('{"entries": ["report.json"]}')  # report.json is a run's (issue 12)
    (out / "mine.txt").write_text("user file")
    rep = run_prune(tiny_options(path, out, overwrite=True, method="magnitude", granularity="hybrid",
                                 mask_block_size=8, target_density=0.4), model=tiny_bert(), tokenizer=tok)
    assert (out / "mine.txt").read_text() == "user file"  # only leap-fx artifacts are replaced
    assert rep["density"]["achieved"] == pytest.approx(0.4, abs=0.02)  # cubic schedule hits the target
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert json.loads((out / "report.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_model_dir_teacher_is_cached(corpus, tmp_path):
    path, tok = corpus
    model_dir = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    kw = dict(model=str(model_dir), cache_dir=str(tmp_path / "cache"), epochs=1, teacher_epochs=1)
    first = run_prune(tiny_options(path, tmp_path / "a", **kw))
    second = run_prune(tiny_options(path, tmp_path / "b", **kw))
    assert not first["teacher"]["cached"] and second["teacher"]["cached"]
    assert second["accuracy"]["dense"] == first["accuracy"]["dense"]


@pytest.mark.slow
def test_injected_teacher_skips_fine_tuning(corpus, tmp_path):
    path, tok = corpus
    teacher = tiny_bert(seed=3)
    rep = run_prune(tiny_options(path, tmp_path / "t", epochs=1), model=tiny_bert(), tokenizer=tok,
                    teacher=teacher)
    assert rep["teacher"]["injected"]
    assert "dense teacher" in rep["timing"]["stages_s"]


def test_options_round_trip_and_modes():
    o = PruneOptions(target_density=0.2, quick=True, epochs=5)
    assert PruneOptions.from_dict(json.loads(json.dumps(o.to_dict()))) == o
    r = resolve(o)
    assert r.epochs == 5 and r.batch_size == MODES["quick"]["batch_size"]  # explicit value wins
    assert resolve(PruneOptions()).max_train_examples is None
    with pytest.raises(ValueError, match="unknown PruneOptions keys"):
        PruneOptions.from_dict({"target_flops": 0.3})  # ("target" is a field now: --target flops:0.5)


@pytest.mark.parametrize("kw, match", [
    (dict(target_density=1.5), "outside"), (dict(method="l0"), "use one of"),
    (dict(epochs=0), "must be > 0"), (dict(overwrite=True, resume=True), "exclude each other"),
    (dict(student_init="random"), "teacher"),
])
def test_bad_options_name_the_fix(kw, match):
    """Plain-data checks fail when the options are built; those needing the registries (a method's name,
    a target its config refuses) when the request is checked (``methods.request.check``, the job's first step)."""
    with pytest.raises(ValueError, match=match):
        check(PruneOptions(**kw))


def test_model_without_tokenizer_or_wrong_labels(corpus, tmp_path):
    path, tok = corpus
    with pytest.raises(ValueError, match="tokenizer"):
        run_prune(tiny_options(path, tmp_path / "x"), model=tiny_bert())
    with pytest.raises(ValueError, match="num_labels=3"):
        run_prune(tiny_options(path, tmp_path / "y"), model=tiny_bert(num_labels=3), tokenizer=tok)


def test_data_file_split_and_subsets(corpus, tmp_path):
    path, _ = corpus
    o = tiny_options(path, tmp_path)
    data = load_data(o)
    sizes = [len(s) for _, s in data.items()]
    assert sizes == [128, 16, 16]
    texts = [set(zip(s.texts, range(len(s)))) for _, s in data.items()]
    assert data.label_names == ["neg", "pos"]
    again = load_data(o)
    assert again.test.texts == data.test.texts  # deterministic
    small = load_data(tiny_options(path, tmp_path, max_train_examples=50, max_eval_examples=5))
    assert [len(s) for _, s in small.items()] == [50, 5, 5]
    assert set(small.train.texts) <= set(data.train.texts)
    assert texts
    with pytest.raises(ValueError, match="both --validation-data and --test-data"):
        load_data(tiny_options(path, tmp_path, validation_data=path))
    one = tmp_path / "one.csv"
    one.write_text("review,sentiment\n" + "".join(f"x{i},pos\n" for i in range(20)))
    with pytest.raises(ValueError, match="single label"):
        load_data(tiny_options(str(one), tmp_path))
