"""bench/accuracy.py on a tiny config-built BERT and a synthetic CSV: rows, JSON, resume (fast)."""
import json
import os

import pytest

from bench import accuracy
from tests.bench.runs import bench_main, first_run

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it

ROWS = "dense,leap-structured-0.5,magnitude-unstructured-0.3"


def run(folder, csv_path, tok, *extra):
    return bench_main(accuracy, folder, csv_path, tok, "accuracy", ["--quick", "--rows", ROWS, "--epochs", "6", *extra])


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    return first_run(tmp_path_factory, "acc", run)


def test_row_names_and_selection():
    rows = accuracy.all_rows([0.5, 0.3])
    names = [r.name for r in rows]
    per_density = sum(len(accuracy.bench_granularities(m)) for m in accuracy.pruning_methods())
    assert len(names) == len(set(names)) == 1 + 2 * per_density and per_density >= 3 + 2 + 1
    assert names[0] == "dense" and "leap-structured-0.5" in names and "movement-unstructured-0.3" in names
    assert "l2-oneshot-structured-0.5" in names  # every registered method gets rows
    assert {r.granularity for r in rows if r.method in ("magnitude", "movement")} == {"unstructured"}
    picked = accuracy.select(rows, ["dense", "leap-*-0.3"])
    assert [r.name for r in picked] == ["dense", "leap-structured-0.3", "leap-hybrid-0.3",
                                        "leap-unstructured-0.3"]
    with pytest.raises(ValueError, match="matches no row.*leap-hybrid-0.5"):
        accuracy.select(rows, ["leap-blocky-0.5"])
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--densities", "1.5"])


def test_rows_report_density_accuracy_and_size(bench_run):
    folder, _, _, result = bench_run
    saved = json.loads((folder / "accuracy.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp")]  # atomic write left nothing
    rows = {r["row"]: r for r in saved["rows"]}
    assert list(rows) == ROWS.split(",") and all(r["status"] == "complete" for r in rows.values())
    for r in rows.values():
        assert 0.0 <= r["val_acc"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
        assert r["parity"] <= 1e-4
    dense, leap, mag = rows["dense"], rows["leap-structured-0.5"], rows["magnitude-unstructured-0.3"]
    # the dense ONNX graph scores the test split exactly like the PyTorch teacher
    assert dense["test_acc"] == pytest.approx(dense["teacher"]["metrics"]["test_accuracy"], abs=1e-6)
    assert dense["test_acc"] >= 0.8  # the words decide the label
    assert mag["density"] == pytest.approx(0.3, abs=0.01)  # cubic schedule (Eq. 1) ends on the target
    assert leap["density"] == pytest.approx(0.5, abs=0.1)
    assert mag["params_fraction"] == 1.0 and mag["onnx_speedup"]["ideal"] == 1.0  # unstructured: nothing stripped,
    assert mag["onnx_speedup"]["speedup"] > 0  # timed all the same
    assert dense["onnx_fraction"] == 1.0 and mag["onnx_fraction"] < 0.9  # its zeros are stored compactly
    assert leap["params_fraction"] < 1.0 and leap["flops_fraction"] < 1.0
    sp = leap["onnx_speedup"]
    assert sp["batch"] == 32 and sp["seq"] == 16 and sp["speedup"] > 0
    assert sp["ideal"] == pytest.approx(1 / leap["flops_fraction"])
    assert len(sp["samples_ms"]["dense"]) == accuracy.TIMING_REPS["quick"][1]
    s = saved["settings"]
    assert s["mode"] == "quick" and s["epochs"] == 6 and s["data_sizes"] == {"train": 128, "validation": 16,
                                                                             "test": 16}
    assert leap["settings"]["epochs"] == 6 and "epochs" not in dense["settings"]
    assert "torch" in saved["env"] and "loadavg_1_5_15" in saved["machine_load"]["before"]


def test_second_call_skips_rows_and_changed_settings_rerun(bench_run, monkeypatch, capsys):
    folder, csv_path, tok, first = bench_run

    def boom(*a, **k):
        raise AssertionError("a finished row was run again")
    monkeypatch.setattr(accuracy, "run_prune", boom)
    monkeypatch.setattr(accuracy, "dense_row", boom)
    again = run(folder, csv_path, tok)
    assert [r["test_acc"] for r in again["rows"]] == [r["test_acc"] for r in first["rows"]]
    assert capsys.readouterr().out.count("with the same settings, skipped") == 3

    monkeypatch.undo()
    calls = []
    real = accuracy.run_prune
    monkeypatch.setattr(accuracy, "run_prune", lambda o, **kw: calls.append(o) or real(o, **kw))
    changed = run(folder, csv_path, tok, "--rows", "magnitude-*-0.3", "--epochs", "3")
    assert [o.epochs for o in calls] == [3.0] and calls[0].overwrite  # other options -> a new run there
    rows = {r["row"]: r for r in changed["rows"]}
    assert rows["magnitude-unstructured-0.3"]["settings"]["epochs"] == 3
    assert rows["leap-structured-0.5"] == json.loads(json.dumps(first["rows"][1]))  # kept as it was
    assert "leap-structured-0.5 *" in capsys.readouterr().out  # marked: other settings


def test_table_script_merges_files_in_readme_order(bench_run, tmp_path, capsys):
    from bench import accuracy_table
    folder = bench_run[0]
    saved = json.loads((folder / "accuracy.json").read_text())
    dense, leap, mag = saved["rows"][:3]  # split into two files, low density first
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({**saved, "rows": [mag, dense]}))
    second.write_text(json.dumps({**saved, "rows": [leap, dense]}))  # same dense row twice: merged
    text = accuracy_table.main([str(first), str(second), "--markdown"])
    lines = text.splitlines()
    assert lines[0].startswith("| row | target | achieved density") and set(lines[1]) <= {"|", "-"}
    assert [ln.split(" | ")[0].strip("| ") for ln in lines[2:]] == ["dense", leap["row"], mag["row"]]
    assert f"{leap['onnx_speedup']['speedup']:.2f}x" in lines[3]
    assert f"{mag['onnx_speedup']['speedup']:.2f}x (ideal 1.00x)" in lines[4]
    assert capsys.readouterr().out.strip() == text
    second.write_text(json.dumps({**saved, "rows": [{**dense, "settings": {"seed": 1}}]}))
    with pytest.raises(ValueError, match="different settings"):
        accuracy_table.main([str(first), str(second)])
    with pytest.raises(ValueError, match="no such file"):
        accuracy_table.main([str(tmp_path / "none.json")])
