"""The teacher cache under a hostile machine (issue 27): an unwritable cache is refused before anything is
trained, a writer killed mid-entry leaves nothing that survives the next start, an entry being written
by a live process is left alone, and a folder in the cache that leap-fx did not write is never replaced."""
import os
import signal
import subprocess
import sys

import pytest

from leap_fx.data import DatasetSplits, load_text_file, split_file
from leap_fx.spec.train import TrainConfig
from leap_fx.train.teacher import check_cache_writable, teacher_key, train_teacher
from passes.io import clean_stale
from tests.conftest import tiny_bert
from tests.helpers import write_tiny_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = TrainConfig(epochs=1, batch_size=16, lr=2e-3, alpha=0.0)


@pytest.fixture
def setup(tmp_path):
    csv_path, tok = write_tiny_corpus(str(tmp_path), rows=80)
    model_dir = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    split = load_text_file(csv_path, text_column="review", label_column="sentiment")
    data = DatasetSplits(*split_file(split, 0), label_names=split.label_names)
    return str(model_dir), data


def _no_training(monkeypatch):
    import leap_fx.train.loop as loop

    def trained(*a, **k):
        raise AssertionError("the teacher was trained before the cache was checked")
    monkeypatch.setattr(loop, "train", trained)


def test_a_read_only_home_is_refused_before_any_training(setup, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("a file where the cache folder would go")  # unwritable, even for root
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LEAP_FX_CACHE", raising=False)
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match=rf"^the teacher cache {home}/.cache/leap-fx/teachers is not writable "
                                         r"\(.*\); set LEAP_FX_CACHE to a writable folder, pass --cache-dir DIR"):
        train_teacher(setup[0], setup[1], config=CFG, max_length=8, quiet=True)


def test_an_unwritable_cache_dir_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"the teacher cache /proc/leap-fx-teachers is not writable"):
        check_cache_writable("/proc/leap-fx-teachers")
    assert check_cache_writable(str(tmp_path / "new" / "teachers")) == str(tmp_path / "new" / "teachers")


WRITER = """
import sys, time
from leap_fx.train import teacher
from tests.conftest import tiny_bert


class SlowTokenizer:
    def save_pretrained(self, folder):
        print("weights written", flush=True)
        time.sleep(300)


teacher._save(tiny_bert(), SlowTokenizer(), sys.argv[1], {"key": "k", "metrics": {}})
"""


@pytest.mark.slow  # a subprocess (~15 s under load)
def test_a_writer_killed_mid_entry_leaves_nothing_after_the_next_start(tmp_path):
    root = tmp_path / "teachers"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root / "0123abcd")], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert proc.stdout.readline().strip() == "weights written"
        temps = os.listdir(root)
        assert len(temps) == 1 and temps[0].startswith(".0123abcd.tmp-")
        assert os.path.isfile(root / temps[0] / "model.safetensors")  # a full model copy, being written
        assert clean_stale(str(root)) == [] and os.listdir(root) == temps  # a live writer's: left alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert os.listdir(root) == temps  # what the kill left ...
    check_cache_writable(str(root))
    assert os.listdir(root) == []  # ... is gone at the next start; no entry was ever half there


def test_a_folder_in_the_cache_that_leap_fx_did_not_write_is_never_replaced(setup, tmp_path, capsys):
    from leap_fx.hf.models import load_tokenizer
    model_dir, data = setup
    data.tokenize(load_tokenizer(model_dir), 8)
    entry = tmp_path / "cache" / teacher_key(model_dir, data, CFG, 8)
    entry.mkdir(parents=True)
    (entry / "mine.txt").write_text("not a teacher")
    res = train_teacher(model_dir, data, config=CFG, max_length=8, cache_dir=str(tmp_path / "cache"), quiet=True)
    assert not res.cached and os.listdir(entry) == ["mine.txt"]
    assert f"cached teacher {entry} holds files leap-fx did not write (mine.txt)" in capsys.readouterr().err
