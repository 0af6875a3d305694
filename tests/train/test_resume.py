"""Resume: a run killed with SIGKILL (mid-training or mid-save) resumes from its last checkpoint and ends
where an uninterrupted run with the same seed ends; checkpoints are atomic; corrupt ones are named.

Subprocess runs use ``examples/ddp_tiny.py`` (config-built BERT, synthetic data, 24 steps, a
checkpoint every 4 steps); ``--step-delay`` slows the forward so the test can kill it mid-run.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import leap_fx
from leap_fx.methods.magnitude.config import MagnitudeConfig
from leap_fx.spec.train import TrainConfig
from leap_fx.train import train
from leap_fx.train.checkpoint import read_checkpoint, save_checkpoint
from tests.conftest import tiny_bert
from tests.helpers import owners_state, toy_data

STEPS, EVERY = 24, 4
ARGS = ["--steps", str(STEPS), "--checkpoint-every", str(EVERY)]


def script(out, *extra, timeout=240):
    res = subprocess.run([sys.executable, SCRIPT, "--out", str(out), *ARGS, *extra], capture_output=True,
                         text=True, timeout=timeout, cwd=ROOT, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    with open(os.path.join(out, "result.json")) as fh:
        return json.load(fh)


def start(out, *extra):
    return subprocess.Popen([sys.executable, SCRIPT, "--out", str(out), *ARGS, *extra], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(cond, proc, timeout=120.0):
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the kill: {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def history_steps(train_dir):
    path = os.path.join(train_dir, "history.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line)["step"] for line in fh if line.endswith("\n")]


def assert_same_run(ref, got):
    assert [r["step"] for r in got["history"]] == list(range(1, STEPS + 1))  # nothing lost or doubled
    assert abs(got["density"] - ref["density"]) <= 1e-3  # within 0.1 pt (here: identical)
    for a, b in zip(ref["history"], got["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6) and b["R"] == pytest.approx(a["R"], rel=1e-6)
    for k, v in ref["sigma"].items():
        assert got["sigma"][k] == pytest.approx(v, rel=1e-6)
    assert got["scores_abs"] == pytest.approx(ref["scores_abs"], rel=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = script(tmp_path_factory.mktemp("ref"))
    assert ref["history"][-1]["R"] < 0.5 < ref["history"][0]["R"]  # σ travelled: resuming matters
    return ref


def test_sigkill_mid_training_resumes_like_an_uninterrupted_run(reference, tmp_path):
    train_dir = tmp_path / "train"
    proc = start(tmp_path, "--step-delay", "0.15")
    ckpt = train_dir / "checkpoint.pt"
    wait_for(lambda: ckpt.exists() and max(history_steps(train_dir), default=0) >= EVERY + 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    saved = read_checkpoint(str(ckpt))["step"]
    done = max(history_steps(train_dir))
    assert saved % EVERY == 0 and 0 < saved < STEPS and done - saved <= EVERY  # lost < one interval
    assert done > saved  # the kill really landed between checkpoints
    assert_same_run(reference, script(tmp_path))


def test_sigkill_mid_save_keeps_the_previous_checkpoint(reference, tmp_path):
    train_dir = tmp_path / "train"
    proc = start(tmp_path, "--hang-at-save", "2")  # 2nd save (step 8) writes half a file, then hangs
    wait_for(lambda: (tmp_path / "saving").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    temps = [f for f in os.listdir(train_dir) if f.endswith(".tmp")]
    assert temps, "the half-written temp file should be there"
    assert read_checkpoint(str(train_dir / "checkpoint.pt"))["step"] == EVERY  # the previous one, intact
    assert_same_run(reference, script(tmp_path))
    assert not [f for f in os.listdir(train_dir) if f.endswith(".tmp")]  # stale temp cleaned up


# -- in-process ------------------------------------------------------------------------------------
def _state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    model, opt, sched = _state()
    save_checkpoint(path, model, opt, sched, 1)
    real = torch.save

    def half_then_crash(obj, fh, *a, **k):
        import io
        buf = io.BytesIO()
        real(obj, buf)
        fh.write(buf.getvalue()[:100])
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt, sched, 2)
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # the temp file is gone too


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    cfg = TrainConfig(max_steps=2, batch_size=16)
    with pytest.raises(ValueError, match="checkpoint .* cannot be read.*delete it"):
        train(tiny_bert(), None, toy_data(32), None, cfg, leap_fx.LeapConfig(target_density=0.5),
              out_dir=str(out), quiet=True)
    torch.save({"weights": 1}, str(out / "checkpoint.pt"))
    with pytest.raises(ValueError, match="not a leap-fx training checkpoint"):
        read_checkpoint(str(out / "checkpoint.pt"))


def _magnitude(out_dir, **kw):
    cfg = TrainConfig(epochs=100, max_steps=14, batch_size=16, lr=1e-3, log_every=3, checkpoint_every=5,
                      eval_every=100, fold=False)
    model = tiny_bert()
    res = train(model, None, toy_data(), None, cfg,
                MagnitudeConfig(target_density=0.3, granularity="block", block_size=8, prune_warmup_ratio=0.0,
                                prune_cooldown_ratio=0.3),
                out_dir=out_dir, quiet=True, **kw)
    return model, res


def test_baseline_resume_restores_schedule_state_and_log_means(tmp_path, monkeypatch):
    """Magnitude pruning re-ranks under the previous step's mask (the owners' scheduled ``k``, a buffer
    in the checkpoint); the log means span the checkpoint (log_every=3, checkpoint_every=5)."""
    from leap_fx.masks import owners
    from leap_fx.methods.magnitude.handler import Magnitude
    torch.set_num_threads(1)
    seen = []  # (step, scheduled k of every owner when that step starts)
    real = Magnitude.on_step

    def spy(self, model, step):
        seen.append((step, sorted(float(o.k) for o in owners(model).values())))
        return real(self, model, step)
    monkeypatch.setattr(Magnitude, "on_step", spy)
    full, res_full = _magnitude(str(tmp_path / "a"))
    uninterrupted = dict(seen)
    seen.clear()
    _, part = _magnitude(str(tmp_path / "b"), stop_after=8)
    assert part.metrics["step"] == 8
    with open(tmp_path / "b" / "history.jsonl", "a") as fh:
        fh.write('{"type": "train", "step": 9, "lo')  # a record cut short by a kill
    seen.clear()
    resumed, res = _magnitude(str(tmp_path / "b"))
    assert seen[0][0] == 5 and seen[0][1] == uninterrupted[5] and uninterrupted[5][0] < 1.0
    a, b = owners_state(full), owners_state(resumed)
    for k in a:
        assert torch.equal(a[k][1], b[k][1]), k  # identical magnitude scores (same masks)
    for name, p in full.named_parameters():
        assert torch.allclose(p, dict(resumed.named_parameters())[name], atol=1e-6), name
    logs = lambda h: [(r["step"], round(r["loss"], 6)) for r in h if r["type"] == "train"]  # noqa: E731
    assert logs(res.history) == logs(res_full.history) and len(logs(res.history)) == 5


# -- the command line: leap-fx prune, SIGKILL, leap-fx prune --resume ---------------------------------


def test_cli_prune_killed_then_resumed_matches_an_uninterrupted_run(cli_setup, cli_reference):
    folder, common = cli_setup
    out = folder / "killed"
    proc = _cli([*common, "--out", str(out)], slow="student", wait=False)
    train_dir = out / "train"
    wait_for(lambda: (train_dir / "checkpoint.pt").exists() and
             max(history_steps(train_dir), default=0) > read_checkpoint(str(train_dir / "checkpoint.pt"))["step"],
             proc, timeout=240)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not (out / "report.json").exists() and not (out / "model.onnx").exists()
    again = _cli([*common, "--out", str(out)])
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    resumed = _cli([*common, "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = cli_reference, json.loads((out / "report.json").read_text())
    assert_same_report(a, b)
    with open(train_dir / "history.jsonl") as fh:
        steps = [json.loads(line)["step"] for line in fh if '"train"' in line]
    assert steps == sorted(set(steps)) and steps[-1] == a["train"]["steps"]  # nothing doubled


def test_cli_killed_during_the_teacher_fine_tune_resumes_it(cli_setup, cli_reference):
    folder, common = cli_setup
    out = folder / "killed_teacher"
    args = [*common, "--out", str(out), "--no-cache"]  # the teacher is trained here, checkpointed in OUT/teacher
    proc = _cli(args, slow="teacher", wait=False)
    ckpt = out / "teacher" / "checkpoint.pt"
    wait_for(ckpt.exists, proc, timeout=240)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert 0 < read_checkpoint(str(ckpt))["step"] < 16 and not (out / "train").exists()
    resumed = _cli([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_report(cli_reference, json.loads((out / "report.json").read_text()))


def test_time_based_checkpoints(tmp_path):
    cfg = dict(epochs=100, max_steps=6, batch_size=16, checkpoint_every=1000, eval_every=1000)
    leap = leap_fx.LeapConfig(target_density=0.5)
    train(tiny_bert(), None, toy_data(), None, TrainConfig(**cfg), leap, out_dir=str(tmp_path / "a"),
          quiet=True, stop_after=3)
    assert not (tmp_path / "a" / "checkpoint.pt").exists()  # 1000 steps, no time limit: none yet
    train(tiny_bert(), None, toy_data(), None, TrainConfig(**cfg, checkpoint_minutes=1e-9), leap,
          out_dir=str(tmp_path / "b"), quiet=True, stop_after=3)
    assert read_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["step"] == 3


# at the end: tests.test_distributed imports this module's fixtures (either may be imported first)
from tests.helpers import ROOT, SCRIPT, _env
from tests.train.cli_runs import _cli, assert_same_report

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it
