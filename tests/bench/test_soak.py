"""bench/soak.py on the smallest setting: two kill + --resume cycles end bit-exact, with no stray files."""
import json

import pytest

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it


@pytest.mark.slow
def test_soak_two_cycles(tmp_path):
    from bench import soak
    out = tmp_path / "soak.json"
    res = soak.main(["--cycles", "2", "--work-dir", str(tmp_path / "work"), "--epochs", "1", "--teacher-epochs", "1",
                     "--step-delay", "0.01", "--out", str(out)])
    assert res["verdict"] == "PASS" and json.loads(out.read_text())["verdict"] == "PASS"
    assert res["compare"]["bit_exact"] and res["compare"]["stray_files"] == [] and len(res["rows"]) == 2


def test_progress_and_compare_see_what_they_should(tmp_path):
    import torch
    from safetensors.torch import save_file

    from bench import soak
    for name, w in (("a", 1.0), ("b", 1.0), ("c", 2.0)):
        run = tmp_path / name
        (run / "slim").mkdir(parents=True)
        (run / "train").mkdir()
        save_file({"w": torch.full((2,), w)}, str(run / "slim" / "model.safetensors"))
        (run / "report.json").write_text(json.dumps({"accuracy": {"pruned": {"test": w}}, "density": {"achieved": w}}))
        (run / "train" / "history.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    assert soak.progress(str(tmp_path / "a")) == 2 + 5 * 2  # two history lines, slim/ and report.json
    assert soak.compare(str(tmp_path / "a"), str(tmp_path / "b"))["bit_exact"]
    (tmp_path / "b" / ".model.onnx.x.tmp.onnx").write_text("half")
    bad = soak.compare(str(tmp_path / "a"), str(tmp_path / "c"))
    assert not bad["bit_exact"] and bad["max_abs_weight_diff"] == 1.0
    assert soak.compare(str(tmp_path / "a"), str(tmp_path / "b"))["stray_files"] == [".model.onnx.x.tmp.onnx"]
