"""A slim model's integrity (issue 27): save_slim records the SHA-256 of its files, load_slim and
`leap-fx export` refuse a folder changed since, by name (trust_edited=True for an edit made on purpose),
and weights that do not fit the manifest, mixed dtypes or a wrong model_class are one-line errors."""
import json
import os

import pytest
import torch
from torch import nn

from leap_fx import cli
from passes.export.slim_io import MANIFEST, WEIGHTS, load_slim, save_slim
from passes.io import MARKER, sha256_file
from tests.conftest import bert_inputs, tiny_bert


@pytest.fixture
def slim(tmp_path):
    model = tiny_bert()
    return model, save_slim(model, tmp_path / "slim")


def _edit(folder, fn):
    path = os.path.join(folder, MANIFEST)
    man = json.loads(open(path).read())
    fn(man)
    with open(path, "w") as fh:
        json.dump(man, fh)


def _one_line(err):
    return len(str(err).splitlines()) == 1


def test_marker_records_the_sha256_of_manifest_and_weights(slim):
    model, folder = slim
    rec = json.loads(open(os.path.join(folder, MARKER)).read())
    assert rec["files"] == {f: sha256_file(os.path.join(folder, f)) for f in (MANIFEST, WEIGHTS)}
    loaded = load_slim(folder)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_an_edited_manifest_is_refused_by_name_and_loads_when_trusted(slim):
    _, folder = slim
    _edit(folder, lambda m: m["config"].update(layer_norm_eps=1e-3))
    with pytest.raises(ValueError, match=rf"^{folder}: manifest.json changed since save_slim wrote it .*"
                                         r"trust_edited=True\) \(leap-fx export / eval: --trust-edited\)") as err:
        load_slim(folder)
    assert _one_line(err.value)
    assert load_slim(folder, trust_edited=True).config.layer_norm_eps == 1e-3  # the edit, on purpose


def test_an_edited_head_count_is_refused(slim):
    _, folder = slim
    _edit(folder, lambda m: m["attributes"].setdefault("bert.encoder.layer.0.attention.self", {}).update(
        num_attention_heads=2))
    with pytest.raises(ValueError, match="manifest.json changed since save_slim wrote it"):
        load_slim(folder)


def test_changed_weight_bytes_are_refused(slim):
    _, folder = slim
    path = os.path.join(folder, WEIGHTS)
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 0x01  # one bit of the last tensor's data
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=rf"{folder}: model.safetensors changed since save_slim wrote it"):
        load_slim(folder)


def test_a_folder_without_checksums_is_refused_unless_trusted(slim):
    _, folder = slim
    os.remove(os.path.join(folder, MARKER))
    with pytest.raises(ValueError, match=rf"{folder}: no {MARKER} .*re-save it with save_slim, or if you trust it"):
        load_slim(folder)
    assert isinstance(load_slim(folder, trust_edited=True), nn.Module)


def test_shapes_that_disagree_with_the_weights_are_one_line(slim):
    _, folder = slim
    _edit(folder, lambda m: m["modules"]["classifier"]["params"]["weight"].update(shape=[3, 32]))
    with pytest.raises(ValueError, match=rf"^{folder}: model.safetensors holds classifier.weight as \[2, 32\] F32, "
                                         r"manifest.json says \[3, 32\] float32; the folder was edited") as err:
        load_slim(folder, trust_edited=True)
    assert _one_line(err.value)


def test_a_float16_weight_among_float32_is_refused_at_load(tmp_path):
    model = tiny_bert()
    model.classifier.half()
    folder = save_slim(model, tmp_path / "s")
    with pytest.raises(ValueError, match=rf"{folder}: classifier.(weight|bias) is float16 while the other weights "
                                         r"are float32: the forward would fail .*model.to\(torch.float32\)"):
        load_slim(folder)
    with pytest.raises(RuntimeError):  # what loading it as is would give: a forward that fails
        model(**bert_inputs())


def test_a_float16_tensor_where_the_manifest_says_float32(slim):
    from safetensors.torch import load_file, save_file
    _, folder = slim
    path = os.path.join(folder, WEIGHTS)
    state = load_file(path)
    state["classifier.weight"] = state["classifier.weight"].half()
    save_file(state, path)
    with pytest.raises(ValueError, match=r"holds classifier.weight as \[2, 32\] F16, manifest.json says \[2, 32\] "
                                         r"float32"):
        load_slim(folder, trust_edited=True)


def test_model_class_of_another_kind_is_one_line(slim):
    _, folder = slim
    with pytest.raises(ValueError, match=rf"^{folder}: manifest is for BertForSequenceClassification, model_class "
                                         r"is Linear; pass model_class=BertForSequenceClassification"):
        load_slim(folder, model_class=nn.Linear)


class Hand(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, 2)


def test_model_class_that_cannot_be_built_is_one_line(tmp_path):
    folder = save_slim(Hand(4), tmp_path / "h")
    with pytest.raises(ValueError, match=rf"^{folder}: the dense Hand could not be built \(.*width.*\); pass "
                                         r"model_or_factory"):
        load_slim(folder, model_class=Hand)
    assert load_slim(folder, lambda: Hand(4)).lin.weight.shape == (2, 4)


def test_truncated_weights_are_named(slim):
    _, folder = slim
    path = os.path.join(folder, WEIGHTS)
    open(path, "r+b").truncate(200)
    with pytest.raises(ValueError, match=rf"{path} cannot be read"):
        load_slim(folder, trust_edited=True)


def test_cli_export_of_an_edited_slim_folder_is_refused(slim, tmp_path, capsys):
    _, folder = slim
    _edit(folder, lambda m: m["config"].update(layer_norm_eps=1e-3))
    target = tmp_path / "m.onnx"
    assert cli.main(["export", folder, "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "manifest.json changed since save_slim wrote it" in err
    assert not target.exists()
