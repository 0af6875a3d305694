"""Progress without a terminal (nohup, CI, a log file): plain lines, not silence; --resume says where it starts."""
import io

from leap_fx.env.progress import Progress
from leap_fx.methods.magnitude.config import MagnitudeConfig
from leap_fx.spec.train import TrainConfig
from leap_fx.train import train
from tests.conftest import tiny_bert
from tests.helpers import toy_data


class _Log(io.StringIO):
    def isatty(self):
        return False


def test_progress_prints_plain_lines_when_not_a_tty():
    log = _Log()
    p = Progress(total=4, desc="leap", seconds=0.0, stream=log)
    for step in range(4):
        p.update(1, {"loss": 1.0 / (step + 1), "R": 0.5})
    p.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("[leap] step 1/4") and lines[-1].startswith("[leap] step 4/4")
    assert "loss 0.5" in lines[1] and "R 0.5" in lines[1] and "ETA" in lines[1]
    assert "\r" not in log.getvalue()  # no bar redraws in a log file


def test_progress_is_rate_limited_but_always_prints_the_end():
    log = _Log()
    p = Progress(total=50, desc="x", seconds=3600.0, stream=log)
    for _ in range(50):
        p.update(1)
    assert log.getvalue().splitlines() == [log.getvalue().splitlines()[-1]]
    assert log.getvalue().startswith("[x] step 50/50")
    quiet = _Log()
    Progress(total=2, desc="x", seconds=0.0, stream=quiet, disable=True).update(2)
    assert quiet.getvalue() == ""
    short = _Log()  # end_line=False: a loop shorter than `seconds` prints nothing, a long one its end too
    Progress(total=2, desc="x", seconds=3600.0, stream=short, end_line=False).update(2)
    assert short.getvalue() == ""
    long = _Log()
    p = Progress(total=2, desc="x", seconds=0.0, stream=long, end_line=False)
    p.update(1)
    p.update(1)
    assert long.getvalue().splitlines()[-1].startswith("[x] step 2/2  ETA")


def test_training_without_a_terminal_logs_steps(capsys):
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-3, progress_seconds=0.0)
    train(tiny_bert(), None, toy_data(96), None, cfg)  # capsys' stderr is not a TTY
    err = capsys.readouterr().err
    steps = [line for line in err.splitlines() if " step " in line]
    assert [s.split(" step ")[1].split()[0] for s in steps] == ["1/3", "2/3", "3/3"]


def test_resume_announces_the_step(tmp_path, capsys):
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-3, checkpoint_every=2, progress_seconds=1e9)
    method = MagnitudeConfig(target_density=0.5, granularity="structured")
    train(tiny_bert(), None, toy_data(96), None, cfg, method, out_dir=str(tmp_path), stop_after=4)
    capsys.readouterr()
    train(tiny_bert(), None, toy_data(96), None, cfg, method, out_dir=str(tmp_path), resume=True)
    out = capsys.readouterr().out
    assert "resuming from step 4 of 6" in out, out
