"""Multi-process training: torchrun + DDP (gloo, 127.0.0.1) matches one process with the same global batch.

``examples/ddp_tiny.py`` trains a config-built BERT on synthetic data (97 examples, global batch 16:
the last batch of an epoch has one row, so rank 1 gets an empty shard). A 2-process run must give
the same σ gradients at every step, the same loss / R trajectory and the same final σ and S as one
process, write every history record once (only rank 0 writes), and resume a 1-process checkpoint.
"""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import leap_fx
from leap_fx.train.distributed import Dist
from tests.helpers import ROOT

ARGS = ["--examples", "97", "--steps", "20", "--checkpoint-every", "4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(out, *extra, nproc=1, timeout=240):
    if nproc == 1:
        cmd = [sys.executable, SCRIPT]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", SCRIPT]
    res = subprocess.run(cmd + ["--out", str(out), *ARGS, *extra], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    with open(os.path.join(out, "result.json")) as fh:
        return json.load(fh)


def assert_close_runs(a, b, steps, rel=1e-5):
    """Same σ grads at ``steps``, same loss/R there, same final σ and |S| sums."""
    for s in map(str, steps):
        ga, gb = a["grads"][s], b["grads"][s]
        assert ga["sigma"].keys() == gb["sigma"].keys() and ga["sigma"]
        for k, v in ga["sigma"].items():
            assert gb["sigma"][k] == pytest.approx(v, rel=rel, abs=1e-9), (s, k)
        for k, v in ga["scores_abs"].items():
            assert gb["scores_abs"][k] == pytest.approx(v, rel=rel), (s, k)
    hist_a = {r["step"]: r for r in a["history"]}
    hist_b = {r["step"]: r for r in b["history"]}
    for s in steps:
        assert hist_b[s]["loss"] == pytest.approx(hist_a[s]["loss"], rel=rel, abs=1e-6), s
        assert hist_b[s]["R"] == pytest.approx(hist_a[s]["R"], rel=rel, abs=1e-6), s
    for k, v in a["sigma"].items():
        assert b["sigma"][k] == pytest.approx(v, rel=rel)
    for k, v in a["scores_abs"].items():
        assert b["scores_abs"][k] == pytest.approx(v, rel=rel)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return run_script(tmp_path_factory.mktemp("one"))


def test_two_processes_match_one(one_process, tmp_path):
    two = run_script(tmp_path, nproc=2)
    assert two["world"] == 2 and one_process["world"] == 1
    assert [r["step"] for r in one_process["history"]] == list(range(1, 21))
    sig0 = one_process["grads"]["1"]["sigma"]
    assert all(abs(v) > 0 for v in sig0.values())  # σ does get gradient
    assert one_process["history"][-1]["R"] < 0.9 * one_process["history"][0]["R"]  # σ moved
    assert_close_runs(one_process, two, range(1, 21))
    assert two["density"] == pytest.approx(one_process["density"], abs=1e-3)
    with open(tmp_path / "train" / "history.jsonl") as fh:  # rank 0 alone wrote: each step once
        steps = [json.loads(line)["step"] for line in fh]
    assert steps == list(range(1, 21))


def test_two_processes_resume_a_one_process_checkpoint(one_process, tmp_path):
    part = run_script(tmp_path, "--stop-after", "10")
    assert part["step"] == 10
    resumed = run_script(tmp_path, nproc=2)  # loads the step-8 checkpoint on both ranks
    assert resumed["world"] == 2 and min(map(int, resumed["grads"])) == 9
    assert_close_runs(one_process, resumed, range(9, 21))
    assert [r["step"] for r in resumed["history"]] == list(range(1, 21))


def test_movement_baseline_with_scheduled_k_matches(tmp_path):
    """Movement pruning: no σ (k from the cubic schedule), S learned through DDP; the
    model also holds a parameter its forward never uses (DDP's find_unused_parameters, detected)."""
    args = ("--method", "movement", "--steps", "12", "--extra-unused")
    one = run_script(tmp_path / "one", *args)
    two = run_script(tmp_path / "two", *args, nproc=2)
    assert all(not g["sigma"] for g in one["grads"].values())  # no σ: k is scheduled
    for s in map(str, range(1, 13)):
        for k, v in one["grads"][s]["scores_abs"].items():
            assert v > 0 and two["grads"][s]["scores_abs"][k] == pytest.approx(v, rel=1e-5)
    assert two["scores_abs"] == pytest.approx(one["scores_abs"], rel=1e-5)
    assert [r["loss"] for r in two["history"]] == pytest.approx([r["loss"] for r in one["history"]], rel=1e-5)
    assert two["density"] == one["density"] < 0.5


def test_unused_parameters_are_detected_without_side_effects():
    from leap_fx.masks import owners
    from leap_fx.objectives.outputs import logits_of
    from leap_fx.train.distributed import unused_parameters
    from tests.conftest import bert_inputs, tiny_bert
    model = leap_fx.prepare(tiny_bert(), leap_fx.LeapConfig(target_density=0.5)).train()
    inputs = bert_inputs()
    state = torch.get_rng_state()
    assert unused_parameters(model, inputs, logits_of) == []  # σ and S are on the forward's path
    assert owners(model)
    model.extra = torch.nn.Parameter(torch.zeros(3))  # trainable but not on the forward's path
    assert unused_parameters(model, inputs, logits_of) == ["extra"]
    assert model.training and torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())


def test_shard_scales_make_the_global_mean():
    batch = {"labels": torch.arange(7), "x": torch.arange(7.0)[:, None]}
    shards = [Dist(r, 3).shard(batch) for r in range(3)]
    assert [len(s["labels"]) for s, _ in shards] == [3, 2, 2]
    # sum over ranks of scale * local mean / world == global mean (what DDP's averaging computes)
    total = sum(scale * s["x"].mean() / 3 for s, scale in shards)
    assert float(total) == pytest.approx(float(batch["x"].mean()))
    tiny = [Dist(r, 3).shard({"labels": torch.arange(2)}) for r in range(3)]
    assert [scale for _, scale in tiny] == [1.5, 1.5, 0.0]  # rank 2: a placeholder row, weight 0
    assert len(tiny[2][0]["labels"]) == 1
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        Dist(0, 3).check_batch_size(16)
    assert Dist().shard(batch)[1] == 1.0 and not Dist().active


# -- the command line under torchrun ----------------------------------------------------------------
from tests.helpers import SCRIPT, _env
from tests.train.cli_runs import assert_same_report

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it


def test_cli_prune_under_torchrun_matches_one_process(cli_setup, cli_reference):
    """``torchrun --nproc_per_node 2 -m leap_fx prune``: distributed teacher fine-tune (no cache) and
    pruning; rank 0 alone writes the report, the ONNX file and the history."""
    folder, common = cli_setup
    out = folder / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "leap_fx", *common, "--out", str(out), "--no-cache"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("achieved density") == 1  # one summary: rank 0's
    rep = json.loads((out / "report.json").read_text())
    assert_same_report(cli_reference, rep)
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4
    with open(out / "train" / "history.jsonl") as fh:
        steps = [json.loads(line)["step"] for line in fh if '"train"' in line]
    assert steps == list(range(1, rep["train"]["steps"] + 1))
