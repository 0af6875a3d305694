"""bench/pareto.py on a tiny config-built BERT and a synthetic CSV: rows from the registry, int8, timing,
plot, README table, resume (fast)."""
import json

import pytest

from bench import pareto
from tests.bench.runs import bench_main, first_run

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it

ROWS = "dense,leap-structured-flops0.5,l2-oneshot-structured-flops0.5,magnitude-unstructured-density0.2"
TARGETS = ["flops:0.5", "density:0.2"]


def run(folder, csv_path, tok, *extra):
    argv = ["--quick", "--targets", ",".join(TARGETS), "--rows", ROWS, "--epochs", "6", "--timing-batch", "4",
            "--timing-seq", "16", *extra]
    return bench_main(pareto, folder, csv_path, tok, "pareto", argv)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    return first_run(tmp_path_factory, "pareto", run)


def test_rows_come_from_the_registry_structured_methods():
    methods = pareto.structured_methods()
    assert ("leap", "structured") in methods and ("l2-oneshot", "structured") in methods
    assert not [m for m, _ in methods if m in ("magnitude", "movement")]  # unstructured in their papers
    names = [r.name for r in pareto.all_rows(["flops:0.7", "flops:0.25", "density:0.1"])]
    assert names[0] == "dense" and "leap-structured-flops0.25" in names
    assert names[1 + 2 * len(methods):] == ["sparsebert-unstructured-density0.1", "magnitude-unstructured-density0.1"]


def test_rows_have_accuracy_int8_and_interleaved_timing(bench_run, capsys):
    folder, _, _, result = bench_run
    saved = json.loads((folder / "pareto.json").read_text())
    rows = {r["row"]: r for r in saved["rows"]}
    assert list(rows) == [r.name for r in pareto.all_rows(TARGETS) if r.name in ROWS.split(",")]  # registry order
    assert set(rows) == set(ROWS.split(",")) and all(r["status"] == "complete" for r in rows.values())
    for name, r in rows.items():
        t = r["timing"]
        assert (t["batch"], t["seq"]) == (4, 16) and t["reps"] == pareto.TIMING_REPS["quick"][1]
        assert ("slim" in t["ms"]) == (name != "dense") and ("int8" in t["ms"]) == (r["int8"]["status"] == "ok")
        assert 0 <= r["int8"]["agreement"] <= 1 and r["int8"]["rows"] == 16
    leap = rows["leap-structured-flops0.5"]
    assert leap["target"] == "flops:0.5" and leap["target_result"]["achieved"] == leap["flops_fraction"]
    assert leap["flops_fraction"] < 1.0 and leap["timing"]["speedup"]["slim"]["median"] > 0
    assert rows["l2-oneshot-structured-flops0.5"]["flops_fraction"] == pytest.approx(0.5, abs=0.1)
    assert (folder / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    cells = pareto.table_rows(saved["rows"])
    assert cells[0]["row"] == "dense" and cells[0]["drop"] == 0.0 and cells[0]["speedup"] == 1.0
    leap_cell = next(c for c in cells if c["row"] == "leap-structured-flops0.5")
    assert leap_cell["drop"] == pytest.approx(100 * (leap["test_acc"] - rows["dense"]["test_acc"]))
    assert saved["settings"]["methods"] == [list(m) for m in pareto.structured_methods()]
    sparse = next(c for c in cells if c["row"] == "magnitude-unstructured-density0.2")
    assert rows["magnitude-unstructured-density0.2"]["density"] == pytest.approx(0.2, abs=0.01)
    assert sparse["file"] < 0.9 and cells[0]["file"] == 1.0  # zeros stored compactly; the dense file is 1x
    packed = rows["magnitude-unstructured-density0.2"]["int8"]["compact"]  # int8 compacted as well
    assert len(packed["tensors"]) == 12 and max(packed["max_abs_diff"].values()) == 0.0
    assert all(t["bytes"] < 0.5 * t["dense_bytes"] for t in packed["tensors"].values())


def test_second_call_skips_finished_rows(bench_run, monkeypatch, capsys):
    folder, csv_path, tok, first = bench_run

    def boom(*a, **k):
        raise AssertionError("a finished row was run again")
    monkeypatch.setattr(pareto, "pruned_row", boom)
    monkeypatch.setattr(pareto, "dense_row", boom)
    again = run(folder, csv_path, tok)
    out = capsys.readouterr().out
    assert out.count("with the same settings, skipped") == 4
    assert "\n| row | target | encoder FLOPs | test acc (ORT) |" in out  # the README table
    assert [r["test_acc"] for r in again["rows"]] == [r["test_acc"] for r in first["rows"]]
