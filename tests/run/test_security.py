"""Loading a run folder, a checkpoint, a cached teacher or a slim model never runs code from it, and
content that changed (flipped bytes, a swapped file, other data on --resume) is refused, named.

Every hostile file below carries a payload that would create a marker file if it ran; each test
asserts the refusal *and* that the marker was never created.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import replace

import pytest
import torch

import leap_fx
from leap_fx.methods.request import resolve
from leap_fx.spec.train import TrainConfig
from leap_fx.train import train
from leap_fx.train.checkpoint import FORMAT, VERSION, read_checkpoint, save_checkpoint
from passes.export.slim_io import MANIFEST, load_slim, save_slim
from tests import models
from tests.conftest import tiny_bert
from tests.helpers import ROOT, toy_data

LEAP = leap_fx.LeapConfig(target_density=0.5)


class Payload:
    """Unpickling this calls ``os.mkdir(path)``: what an attacker's checkpoint would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _cfg(**kw):
    return TrainConfig(**{**dict(max_steps=10, batch_size=16, checkpoint_every=3, eval_every=100, log_every=1,
                                 fold=False, lr=1e-3), **kw})


# -- the package never unpickles arbitrary objects -----------------------------------------------------
def test_no_unsafe_loading_anywhere_in_the_package():
    offenders = []
    for top in ("leap_fx", "passes"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for f in (f for f in files if f.endswith(".py")):
                text = open(os.path.join(folder, f), encoding="utf-8").read()
                rel = os.path.relpath(os.path.join(folder, f), ROOT)
                if re.search(r"weights_only\s*=\s*False", text):
                    offenders.append(f"{rel}: weights_only=False")
                if re.search(r"^\s*(import pickle|from pickle|import dill|import cloudpickle)", text, re.M):
                    offenders.append(f"{rel}: pickle")
                if re.search(r"trust_remote_code\s*=\s*True", text):
                    offenders.append(f"{rel}: trust_remote_code=True")
                for call in re.findall(r"torch\.load\([^)]*\)", text):
                    if "weights_only=True" not in call:
                        offenders.append(f"{rel}: {call}")
    assert offenders == []


# -- checkpoints -------------------------------------------------------------------------------------------
def test_checkpoint_with_a_pickled_callable_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    out = tmp_path / "run"
    out.mkdir()
    evil = {"format": FORMAT, "version": VERSION, "tensors": {"model": tiny_bert().state_dict()},
            "meta": "{}", "sha256": "0" * 64, "hook": Payload(marker)}
    torch.save(evil, str(out / "checkpoint.pt"))
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint.pt cannot be read safely.*GLOBAL posix.mkdir.*"
                                         r"refused before anything in it ran.*delete it"):
        train(tiny_bert(), None, toy_data(32), None, _cfg(), LEAP, out_dir=str(out), quiet=True)
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "step": Payload(marker)}, str(out / "checkpoint.pt"))
    with pytest.raises(ValueError, match="cannot be read safely"):
        read_checkpoint(str(out / "checkpoint.pt"))
    assert not marker.exists()
    torch.load(str(out / "checkpoint.pt"), weights_only=False)  # the test can fail: plain unpickling runs it
    assert marker.is_dir()


def test_run_resume_refuses_a_hostile_teacher_checkpoint(tmp_path):
    """``run_prune --resume`` on a run folder whose teacher fine-tune checkpoint was replaced."""
    from leap_fx.run.job import run_prune
    from tests.helpers import tiny_options, write_tiny_corpus
    csv_path, tok = write_tiny_corpus(str(tmp_path))
    model_dir = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out, marker = tmp_path / "out", tmp_path / "payload_ran"
    opts = tiny_options(csv_path, out, model=str(model_dir), use_cache=False)
    prepare_out_dir(str(out), resolve(opts))  # the run had started ...
    (out / "teacher").mkdir()
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "step": 1, "x": Payload(marker)},
               str(out / "teacher" / "checkpoint.pt"))  # ... and its checkpoint was swapped
    with pytest.raises(ValueError, match=r"teacher/checkpoint.pt cannot be read safely"):
        run_prune(replace(opts, resume=True))
    assert not marker.exists()


def _flip_a_tensor_byte(path):
    """Flip one bit in the middle of the largest tensor record of a torch zip checkpoint."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset)
        name_len, extra_len = struct.unpack("<HH", fh.read(30)[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len + info.file_size // 2)
        byte = fh.read(1)[0]
        fh.seek(-1, 1)
        fh.write(bytes([byte ^ 0x10]))


def test_flipped_bytes_in_a_checkpoint_tensor_are_refused(tmp_path):
    train(tiny_bert(), None, toy_data(), None, _cfg(), LEAP, out_dir=str(tmp_path), quiet=True, stop_after=3)
    path = str(tmp_path / "checkpoint.pt")
    assert read_checkpoint(path)["step"] == 3
    _flip_a_tensor_byte(path)
    torch.load(path, weights_only=True)  # torch itself reads the damaged tensor without complaint
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint.pt fails its checksum.*not loaded"):
        read_checkpoint(path)
    model = tiny_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="fails its checksum"):
        train(model, None, toy_data(), None, _cfg(), LEAP, out_dir=str(tmp_path), quiet=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()
               if k in before)  # nothing was loaded into the model


def test_a_swapped_tensor_with_the_old_checksum_is_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, model, opt, sched, 5, {"note": "plain"})
    state = torch.load(path, weights_only=True)
    state["tensors"]["model"]["weight"] = torch.zeros(2, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match="fails its checksum"):
        read_checkpoint(path)


def test_checkpoint_metadata_must_be_plain_json(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    path = str(tmp_path / "checkpoint.pt")
    with pytest.raises(TypeError, match=r"\['method_state'\]\['s'\] is a Tensor.*buffers"):
        save_checkpoint(path, model, opt, sched, 1, {"method_state": {"s": torch.ones(1)}})
    with pytest.raises(TypeError, match=r"key 1 is a int"):
        save_checkpoint(path, model, opt, sched, 1, {"loop": {1: 2.0}})
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_resume_from_a_clean_checkpoint_gives_the_same_final_weights(tmp_path):
    torch.set_num_threads(1)
    full = tiny_bert()
    train(full, tiny_bert(seed=1), toy_data(), None, _cfg(), LEAP, out_dir=str(tmp_path / "a"), quiet=True)
    part = tiny_bert()
    res = train(part, tiny_bert(seed=1), toy_data(), None, _cfg(), LEAP, out_dir=str(tmp_path / "b"), quiet=True,
                stop_after=5)
    assert res.metrics["step"] == 5 and read_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["step"] == 3
    resumed = tiny_bert(seed=4)  # other initial weights: everything must come from the checkpoint
    train(resumed, tiny_bert(seed=1), toy_data(), None, _cfg(), LEAP, out_dir=str(tmp_path / "b"), quiet=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_resume_refuses_other_training_data_or_teacher(tmp_path):
    out = str(tmp_path)
    train(tiny_bert(), tiny_bert(seed=1), toy_data(), None, _cfg(), LEAP, out_dir=out, quiet=True, stop_after=3)
    other = toy_data()
    other["labels"] = 1 - other["labels"]
    with pytest.raises(ValueError, match=r"written for other training data.*resume=False"):
        train(tiny_bert(), tiny_bert(seed=1), other, None, _cfg(), LEAP, out_dir=out, quiet=True)
    with pytest.raises(ValueError, match=r"written for other teacher weights"):
        train(tiny_bert(), tiny_bert(seed=2), toy_data(), None, _cfg(), LEAP, out_dir=out, quiet=True)
    res = train(tiny_bert(), tiny_bert(seed=1), toy_data(), None, _cfg(), LEAP, out_dir=out, quiet=True)
    assert res.metrics["step"] == 10  # the same content resumes


# -- --resume of a run whose data or model files changed -----------------------------------------------
@pytest.fixture
def started_run(tmp_path):
    """A run folder whose options.json was written (the run had started), its CSV and model folder."""
    from tests.helpers import tiny_options, write_tiny_corpus
    csv_path, tok = write_tiny_corpus(str(tmp_path))
    model_dir = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    opts = resolve(tiny_options(csv_path, tmp_path / "out", model=str(model_dir)))
    prepare_out_dir(opts.out, opts)
    return opts, csv_path, model_dir


def test_options_json_records_content_hashes(started_run):
    from leap_fx.spec.options import PruneOptions
    from passes.io import sha256_file
    opts, csv_path, model_dir = started_run
    recorded = json.loads(open(os.path.join(opts.out, "options.json")).read())
    assert recorded["content"]["data"] == {"path": os.path.abspath(csv_path), "sha256": sha256_file(csv_path)}
    files = recorded["content"]["model"]["files"]
    assert files["model.safetensors"] == sha256_file(str(model_dir / "model.safetensors"))
    assert {"config.json", "tokenizer_config.json"} <= set(files)
    assert set(files) == {f for f in os.listdir(model_dir) if f.endswith((".json", ".safetensors", ".txt"))}
    assert PruneOptions.from_dict(recorded) == opts  # a run's options.json still reads as options


def test_resume_refuses_a_changed_data_file_naming_it(started_run):
    opts, csv_path, _ = started_run
    resume = replace(opts, resume=True)
    assert prepare_out_dir(opts.out, resume) is None  # unchanged: resumes
    with open(csv_path, "a") as fh:
        fh.write("great fine movie,pos\n")
    with pytest.raises(ValueError, match=rf"cannot --resume .*: {re.escape(csv_path)} changed since the run started"):
        prepare_out_dir(opts.out, resume)
    cmd = [sys.executable, "-m", "leap_fx", "prune", "--options", os.path.join(opts.out, "options.json"),
           "--out", opts.out, "--resume"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{csv_path} changed since the run started" in res.stderr and "--overwrite" in res.stderr


def test_resume_refuses_changed_model_weights_naming_the_file(started_run):
    opts, _, model_dir = started_run
    tiny_bert(seed=9).save_pretrained(model_dir)
    with pytest.raises(ValueError, match=rf"{re.escape(str(model_dir / 'model.safetensors'))} changed"):
        prepare_out_dir(opts.out, replace(opts, resume=True))


# -- the teacher cache ------------------------------------------------------------------------------------
def _teacher_setup(tmp_path):
    from leap_fx.data import DatasetSplits, TextSplit
    from tests.helpers import _tiny_model_dir
    g = torch.Generator().manual_seed(0)
    pos, neg = ["good", "great", "fun"], ["bad", "dull", "awful"]

    def split(n):
        idx = torch.randint(0, 3, (n, 2), generator=g).tolist()
        y = torch.randint(0, 2, (n,), generator=g).tolist()
        return TextSplit([f"the {(pos if c else neg)[i]} film {(pos if c else neg)[j]}"
                          for (i, j), c in zip(idx, y)], y, ["neg", "pos"])
    data = DatasetSplits(split(64), split(16), split(16), ["neg", "pos"])
    return _tiny_model_dir(tmp_path), data, TrainConfig(epochs=2, batch_size=16, lr=2e-3, alpha=0.0)


def test_a_swapped_cached_teacher_is_retrained_not_loaded(tmp_path, capsys):
    from leap_fx.train.teacher import entry_problem, train_teacher
    model_dir, data, cfg = _teacher_setup(tmp_path)
    kw = dict(config=cfg, max_length=8, cache_dir=str(tmp_path / "cache"), quiet=True)
    first = train_teacher(model_dir, data, **kw)
    weights = os.path.join(first.path, "model.safetensors")
    planted = tiny_bert(seed=7)
    planted.save_pretrained(tmp_path / "planted")
    shutil.copyfile(tmp_path / "planted" / "model.safetensors", weights)  # same shapes, other values
    capsys.readouterr()
    second = train_teacher(model_dir, data, **kw)
    assert not second.cached and second.path == first.path
    assert f"cached teacher {first.path} is not loaded: model.safetensors in it fails" in capsys.readouterr().err
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # trained again (deterministically), not the planted one
    assert not torch.equal(b["classifier.weight"], planted.state_dict()["classifier.weight"])
    assert entry_problem(first.path, os.path.basename(first.path)) is None  # the entry was rewritten, verified
    assert train_teacher(model_dir, data, **kw).cached
    with open(weights, "ab") as fh:
        fh.write(b"\0")
    assert "fails the recorded checksum" in entry_problem(first.path, os.path.basename(first.path))


def test_teacher_cache_keys_on_model_content_not_path(tmp_path):
    from leap_fx.train.teacher import teacher_key
    model_dir, data, cfg = _teacher_setup(tmp_path)
    from leap_fx.hf.models import load_tokenizer
    data.tokenize(load_tokenizer(model_dir), 8)
    key = teacher_key(model_dir, data, cfg, 8)
    copy_dir = tmp_path / "copy"
    shutil.copytree(model_dir, copy_dir)
    assert teacher_key(str(copy_dir), data, cfg, 8) == key  # same content elsewhere: the same teacher
    tiny_bert(seed=3).save_pretrained(copy_dir)
    assert teacher_key(str(copy_dir), data, cfg, 8) != key  # swapped weights at the same path: another key


# -- slim models ----------------------------------------------------------------------------------------------
@pytest.fixture
def hostile_module(tmp_path, monkeypatch):
    """A module on sys.path whose import would create a marker file."""
    marker = tmp_path / "module_imported"
    (tmp_path / "evil_slim_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport torch\n\n\nclass Model(torch.nn.Module):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("evil_slim_mod", None)


def _edit_manifest(folder, **changes):
    path = folder / MANIFEST
    man = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "model_type":
            man["config"]["model_type"] = value
        else:
            man[key] = value
    path.write_text(json.dumps(man))


@pytest.mark.parametrize("changes", [
    dict(model_class="evil_slim_mod:Model", config=None),  # a non-HF class by module path
    dict(model_class="evil_slim_mod:Model"),                # an HF config, but the class named by the file
    dict(model_class="evil_slim_mod:Model", model_type="evil_slim_mod"),
])
def test_slim_manifest_naming_a_module_is_refused_before_import(changes, hostile_module, tmp_path):
    folder = tmp_path / "slim"
    save_slim(tiny_bert(), folder)
    _edit_manifest(folder, **changes)
    with pytest.raises(ValueError, match=r"manifest.json changed since save_slim wrote it"):
        load_slim(folder)  # an edited manifest is refused first; trusted, its class is still never imported
    with pytest.raises(ValueError, match=r"never imports a class from outside transformers.*model_class=TheClass"):
        load_slim(folder, trust_edited=True)
    assert not hostile_module.exists() and "evil_slim_mod" not in sys.modules
    import importlib
    importlib.import_module("evil_slim_mod")  # the test can fail: importing it does run it
    assert hostile_module.exists()


def test_slim_hf_class_comes_from_the_transformers_registry(hostile_module, tmp_path):
    """A manifest may say where the class lives; only its name is used, looked up for the config's type."""
    model = tiny_bert()
    save_slim(model, tmp_path / "s")
    _edit_manifest(tmp_path / "s", model_class="evil_slim_mod:BertForSequenceClassification")
    loaded = load_slim(tmp_path / "s", trust_edited=True)
    assert type(loaded).__module__ == "transformers.models.bert.modeling_bert"
    assert not hostile_module.exists() and "evil_slim_mod" not in sys.modules
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_slim_model_class_passed_by_the_caller(tmp_path):
    from transformers import BertForSequenceClassification, GPT2LMHeadModel
    model = tiny_bert()
    save_slim(model, tmp_path / "b")
    loaded = load_slim(tmp_path / "b", model_class=BertForSequenceClassification)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="manifest is for BertForSequenceClassification"):
        load_slim(tmp_path / "b", model_class=GPT2LMHeadModel)
    with pytest.raises(ValueError, match="not both"):
        load_slim(tmp_path / "b", model, model_class=BertForSequenceClassification)
    hand, _ = models.hand_block()
    save_slim(hand, tmp_path / "h")
    loaded = load_slim(tmp_path / "h", model_class=models.HandModel)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in hand.state_dict().items())


@pytest.mark.parametrize("field, value, match", [
    ("dtype", "load", "'load' is not a torch dtype"),
    ("attribute", "forward", "not a size or count"),
])
def test_slim_manifest_values_are_data_only(field, value, match, tmp_path):
    save_slim(tiny_bert(), tmp_path / "s")
    path = tmp_path / "s" / MANIFEST
    man = json.loads(path.read_text())
    if field == "dtype":
        man["modules"]["classifier"]["params"]["weight"]["dtype"] = value
    else:
        man["attributes"]["bert.encoder.layer.0.attention.self"] = {value: 3}
    path.write_text(json.dumps(man))
    with pytest.raises(ValueError, match=match):
        load_slim(tmp_path / "s", trust_edited=True)


def prepare_out_dir(out, opts):
    """Prepare ``out`` as a run's start would (lock, check, manifest, options.json), then release it."""
    from leap_fx.run.rundir import RunDir
    rundir = RunDir(str(out), opts)
    try:
        return rundir.open()
    finally:
        rundir.close()
