"""The main job is slim and fast: its default (LEAP structured at flops:0.5), the in-run dense/slim latency,
file sizes, --quantize int8 and the target's report (leap_fx/run/speed.py)."""
import pytest

from leap_fx import cli
from leap_fx.methods.request import method_config, resolve
from leap_fx.run.job import run_prune
from leap_fx.run.speed import target_result
from leap_fx.run.summary import summary_table
from leap_fx.spec.options import PruneOptions
from leap_fx.spec.target import Target
from tests.conftest import tiny_bert
from tests.helpers import tiny_options, write_tiny_corpus


def test_the_default_job_is_leap_structured_at_half_the_flops():
    o = PruneOptions()
    r = resolve(o)
    assert (r.method, r.granularity, r.target) == ("leap", "structured", "flops:0.5")
    cfg = method_config(o)
    assert cfg.goal == Target("flops", 0.5) and cfg.structured and cfg.lambda_min == 80.0
    # a granularity that strips nothing falls back to the density default; a user's density wins
    assert method_config(PruneOptions(granularity="hybrid")).goal == Target("density", 0.3)
    assert resolve(PruneOptions(granularity="hybrid")).target_density == 0.3
    assert method_config(PruneOptions(target_density=0.4)).goal == Target("density", 0.4)
    assert method_config(PruneOptions(target="latency:0.5")).goal == Target("latency", 0.5)
    with pytest.raises(ValueError, match="granularity='structured'"):  # the request's check (needs the method)
        method_config(PruneOptions(target="flops:0.5", granularity="hybrid"))
    with pytest.raises(ValueError, match="quantize='int4'"):
        PruneOptions(quantize="int4")


def test_cli_target_errors_are_one_line(capsys):
    assert cli.main(["prune", "--target", "speed:0.5"]) == 2
    assert "use one of density, flops, latency" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["prune", "--quantize", "int4"])


def test_target_result_warns_on_a_miss():
    flops = {"slim_fraction": 0.53}
    res = target_result(Target("flops", 0.5), {}, flops, {}, 1)
    assert res["achieved"] == 0.53 and "missed" in res["warning"]
    assert "warning" not in target_result(Target("flops", 0.5), {}, {"slim_fraction": 0.505}, {}, 1)
    speed = {"latency": {"batches": {"b4": {"speedup": {"slim": {"median": 1.6}}}}}}
    res = target_result(Target("latency", 0.5), {}, flops, speed, 4)
    assert res["asked_speedup"] == 2.0 and res["measured_speedup"] == 1.6 and "warning" in res
    assert res["achieved"] == pytest.approx(1 / 1.6)


@pytest.mark.slow
def test_run_measures_dense_and_slim_latency_sizes_and_int8(tmp_path):
    path, tok = write_tiny_corpus(str(tmp_path))
    rep = run_prune(tiny_options(path, tmp_path / "o", target_density=None, target="flops:0.6", quantize="int8",
                                 epochs=1), model=tiny_bert(), tokenizer=tok)
    goal = rep["target"]
    assert goal["target"] == "flops:0.6" and goal["achieved"] == rep["flops"]["slim_fraction"]
    assert rep["density"]["target"] is None and rep["method_config"]["cost_seq"] == 16
    lat = rep["latency"]["batches"]
    assert set(lat) == {"b1", "b32"} and lat["b32"]["batch"] == 32 and lat["b32"]["seq"] == 16
    q = rep["quantized"]
    names = {"dense", "slim", "int8"} if q["status"] == "ok" else {"dense", "slim"}
    assert set(lat["b1"]["ms"]) == names and set(lat["b1"]["speedup"]) == names - {"dense"}
    assert rep["files"]["slim_bytes"] < rep["files"]["dense_bytes"] and rep["files"]["int8_bytes"] < rep["files"]["slim_bytes"]
    assert q["rows"] == 16 and 0 <= q["agreement"] <= 1 and (q["status"] == "ok") == (q["agreement"] >= q["bound"])
    assert q["test_fp32"] == rep["accuracy"]["pruned"]["test"]
    assert (tmp_path / "o" / ("model.int8.onnx" if q["status"] == "ok" else "model.int8.failed.onnx")).is_file()
    text = summary_table(rep)
    for needle in ("flops:0.6  (achieved", "ORT latency dense -> slim", "b32", "ONNX size dense -> slim -> int8", "int8"):
        assert needle in text, needle


@pytest.mark.slow
def test_latency_target_job_builds_the_table_once_and_reports_the_asked_speedup(tmp_path):
    path, tok = write_tiny_corpus(str(tmp_path))
    cache = tmp_path / "cache"
    rep = run_prune(tiny_options(path, tmp_path / "o", target_density=None, target="latency:0.9", epochs=1,
                                 cache_dir=str(cache)), model=tiny_bert(), tokenizer=tok)
    assert "latency table" in rep["timing"]["stages_s"]
    assert len(list((cache / "latency").iterdir())) == 1  # measured at the run's batch (16) and length (16)
    goal = rep["target"]
    assert goal["unit"] == "latency" and goal["asked_speedup"] == pytest.approx(1 / 0.9) and goal["batch"] == 16
    b16 = rep["latency"]["batches"]["b16"]
    assert goal["measured_speedup"] == b16["speedup"]["slim"]["median"] and (b16["batch"], b16["seq"]) == (16, 16)
    assert rep["method_config"]["cost_batch"] == 16
