"""``leap-fx analyze --model DIR`` on any model directory transformers can load (issue 11, class 8)."""
import json

import pytest

from leap_fx import cli
from tests import models


def _saved(tmp_path, name, **config):
    model, _ = models.ALL[name]()
    for k, v in config.items():
        setattr(model.config, k, v)
    path = tmp_path / name
    model.save_pretrained(str(path))
    return str(path)


def test_vision_model_without_tokenizer(tmp_path, capsys):
    path = _saved(tmp_path, "vit")
    assert cli.main(["analyze", "--model", path]) == 0
    out = capsys.readouterr().out
    assert "Plan for ViTForImageClassification: 2 attention, 2 feed-forward families" in out
    assert cli.main(["analyze", "--model", path, "--input-shape", "pixel_values=1,3,32,32", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["families"]) == 4


def test_decoder_without_tokenizer_and_task_override(tmp_path, capsys):
    path = _saved(tmp_path, "llama_gqa")
    assert cli.main(["analyze", "--model", path]) == 0
    assert "Plan for LlamaModel" in capsys.readouterr().out
    assert cli.main(["analyze", "--model", path, "--task", "causal-lm"]) == 0
    assert "Plan for LlamaForCausalLM: 2 attention" in capsys.readouterr().out


def test_audio_and_encoder_decoder(tmp_path, capsys):
    for name, cls in (("whisper_encoder", "WhisperForAudioClassification"), ("bart", "BartModel")):
        assert cli.main(["analyze", "--model", _saved(tmp_path, name)]) == 0
        assert f"Plan for {cls}" in capsys.readouterr().out


def test_unmatched_sites_warn_and_strict_fails(tmp_path, capsys, monkeypatch):
    """Latent attention with its matcher switched off (buffers filled in parts not read): two sites missed."""
    from passes.analyze import channels
    from tests import models_attn
    model, _ = models_attn.deepseek_v3()
    path = str(tmp_path / "mla")
    model.save_pretrained(path)
    monkeypatch.setattr(channels, "FILL_OPS", frozenset())
    assert cli.main(["analyze", "--model", path]) == 0
    captured = capsys.readouterr()
    assert "0 attention, 2 feed-forward families" in captured.out
    assert captured.err.count("leap-fx analyze: warning: attention site") == 2 and "--strict" in captured.err
    assert "new_empty" in captured.err
    assert cli.main(["analyze", "--model", path, "--strict"]) == 2
    assert "strict=True" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--input-shape", "pixel_values=1,x"], "use NAME=B,S,..."),
    (["--input-shape", "not_an_input=1,3"], "has no input 'not_an_input'"),
    (["--task", "translation"], "invalid choice"),
])
def test_bad_analyze_arguments(tmp_path, capsys, argv, needle):
    path = _saved(tmp_path, "vit")
    capsys.readouterr()  # save_pretrained's progress bar
    with pytest.raises(SystemExit) if "invalid choice" in needle else _nothing():
        assert cli.main(["analyze", "--model", path, *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_missing_directory_is_one_line(tmp_path, capsys):
    assert cli.main(["analyze", "--model", str(tmp_path / "nope")]) == 2
    assert "model directory not found" in capsys.readouterr().err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
