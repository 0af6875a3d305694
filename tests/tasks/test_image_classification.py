"""Image classification: a folder of class sub-folders, a .jsonl of paths and labels, the digits of the
scikit-learn wheel; unreadable images named by file (folder) or file and line (.jsonl); pixels through the
model's image processor or the config's normalisation; top-1 against a hand count; one CLI run end to end
(LEAP on a tiny ViT, ONNX parity, ``leap-fx eval`` == the report, preprocessing in the metadata)."""
import json
import os

import numpy as np
import pytest
import torch

from leap_fx.tasks.image_classification.data import (
    class_names,
    read_digits,
    read_images,
)
from leap_fx.tasks.image_classification.handler import top1
from leap_fx.tasks.image_classification.preprocess import image_prep
from passes.export.metadata import read_metadata
from tests.tasks.builders import image_folder, vit_folder, write_jsonl
from tests.tasks.conftest import cli, eval_metric, prune


def test_folder_and_jsonl_read_the_same_images(tmp_path):
    root = image_folder(tmp_path / "imgs", per_class=3)
    (tmp_path / "imgs" / "red" / "notes.txt").write_text("not an image")
    a = read_images(root)
    assert len(a) == 9 and class_names(a) == ["blue", "green", "red"] and a.source["other_files_not_read"] == 1
    lines = [{"image": os.path.relpath(r["path"], tmp_path), "label": r["label"]} for r in a.rows]
    b = read_images(write_jsonl(tmp_path / "imgs.jsonl", lines))
    assert [r["path"] for r in b.rows] == [r["path"] for r in a.rows]


def test_unreadable_images_are_named(tmp_path):
    root = image_folder(tmp_path / "imgs", per_class=2)
    bad = tmp_path / "imgs" / "green" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken.png.*not a readable image"):
        read_images(root)
    assert len(read_images(root, drop_invalid=True)) == 6
    path = write_jsonl(tmp_path / "x.jsonl", [{"image": "imgs/red/0.png", "label": "red"},
                                               {"image": "imgs/red/missing.png", "label": "red"}])
    with pytest.raises(ValueError, match=r"x.jsonl:2: image file .*missing.png' not found"):
        read_images(path)
    path = write_jsonl(tmp_path / "y.jsonl", [{"image": "imgs/red/0.png", "label": "red"}, {"image": "imgs/red/1.png"}])
    with pytest.raises(ValueError, match=r"y.jsonl:2: missing, empty or null label"):
        read_images(path)


def test_digits_from_the_scikit_learn_wheel():
    train, val, test = read_digits(seed=0)
    assert len(train) + len(val) + len(test) == 1797 and class_names(train) == [str(d) for d in range(10)]
    assert train.rows[0]["pixels"].shape == (8, 8) and train.rows[0]["pixels"].max() <= 255


def test_pixels_follow_the_processor_or_the_config(tmp_path):
    from transformers import AutoConfig, ViTImageProcessor
    rows = read_images(image_folder(tmp_path / "imgs", per_class=1)).rows
    with_proc = vit_folder(tmp_path, processor=True)
    prep = image_prep(with_proc, AutoConfig.from_pretrained(with_proc))
    want = ViTImageProcessor.from_pretrained(with_proc)([__import__("PIL").Image.open(r["path"]).convert("RGB")
                                                         for r in rows], return_tensors="pt")["pixel_values"]
    assert prep.source == "preprocessor_config.json" and torch.equal(prep.pixels(rows), want)
    assert prep.settings()["image_mean"] == [0.4, 0.5, 0.6] and prep.settings()["image_size"] == [16, 16]
    plain = vit_folder(tmp_path)
    prep = image_prep(plain, AutoConfig.from_pretrained(plain))
    px = prep.pixels(rows[:1])
    assert prep.source == "config" and tuple(px.shape) == (1, 3, 16, 16)
    assert float(px.min()) >= -1.0 - 1e-6 and float(px.max()) <= 1.0 + 1e-6  # (x/255 - 0.5) / 0.5


def test_top1_matches_a_hand_count():
    logits = np.array([[3.0, 1.0, 0.0], [0.0, 0.1, 0.2], [1.0, 5.0, 1.0], [2.0, 2.5, 0.0]])
    assert top1(logits, np.array([0, 2, 0, 1])) == 0.75


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("img")
    data = image_folder(folder / "imgs")
    model = vit_folder(folder)
    out = folder / "run"
    report, res = prune(out, "--model", model, "--data", data, "--epochs", "6")
    return out, report, res


@pytest.mark.slow
def test_cli_run_end_to_end(image_run):
    out, report, res = image_run
    assert report["task"] == "image-classification" and report["onnx"]["inputs"] == ["pixel_values"]
    assert report["onnx"]["parity_max_abs_diff"] <= 1e-4 and report["parameters"]["slim"] < report["parameters"]["dense"]
    assert abs(report["target"]["achieved"] - 0.5) <= 0.05
    assert report["metrics"]["dense"]["test"]["accuracy"] > 0.6
    pruned = report["metrics"]["pruned"]
    assert pruned["validation"]["accuracy"] == pruned["validation_torch"]["accuracy"]
    meta = read_metadata(str(out / "model.onnx"))
    assert meta["label_names"] == ["blue", "green", "red"] and meta["image_size"] == [16, 16]
    assert meta["image_mean"] == [0.5, 0.5, 0.5] and meta["preprocessing"] == "config"
    assert not os.path.exists(out / "tokenizer")


@pytest.mark.slow
def test_eval_equals_the_report(image_run):
    out, report, _ = image_run
    split, acc, n = eval_metric(cli("eval", str(out / "model.onnx")), "accuracy")
    assert split == "test" and n == report["data"]["test"]
    assert acc == pytest.approx(report["metrics"]["pruned"]["test"]["accuracy"], abs=1e-9)
    assert json.loads((out / "report.json").read_text())["task"] == "image-classification"


@pytest.mark.slow
def test_eval_of_another_folder_honours_split_and_limit(image_run, tmp_path):
    from transformers import AutoConfig

    from leap_fx.methods.request import task_config
    from leap_fx.spec.options import PruneOptions
    from leap_fx.tasks.registry import build_task
    from leap_fx.tasks.rows import split_rows
    from leap_fx.tasks.supervised import TaskData
    out, report, _ = image_run
    known = set(PruneOptions.__dataclass_fields__)
    opts = PruneOptions.from_dict({k: v for k, v in report["resolved_options"].items() if k in known})
    task = build_task(task_config(opts))
    other = image_folder(tmp_path / "other", per_class=10, seed=3)
    test = split_rows(read_images(other), opts.split_seed)[2]  # the job's split rule, applied directly
    source = report["model"]["source"]  # pixels as the job made them: the model folder's preprocessing
    prep = image_prep(source, AutoConfig.from_pretrained(source))
    split = task.encode(TaskData({"test": test}, report["data"]["label_names"]), prep, opts)[0]["test"]
    direct = task.score_onnx(str(out / "model.onnx"), split)
    res = cli("eval", str(out), "--data", other, "--split", "test")
    assert eval_metric(res, "accuracy") == ("test", pytest.approx(direct["accuracy"], abs=1e-9), len(test))
    assert len(test) == 3 and f"the test split (seed {opts.split_seed}) of {other}" in res.stdout
    assert eval_metric(cli("eval", str(out), "--data", other, "--limit", "5"), "accuracy")[::2] == ("all", 5)
    assert eval_metric(cli("eval", str(out / "slim"), "--limit", "4"), "accuracy")[::2] == ("test", 4)
    res = cli("eval", str(out), "--data", other, "--text-column", "t", "--tokenizer", "x", "--label-column", "y")
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert all(f"{flag} (" in res.stderr for flag in ("--text-column", "--tokenizer", "--label-column"))
