"""A run says what it knows when it knows it (issue 27, second half): a teacher no better than guessing
stops the run before pruning (--continue-anyway goes on), the test split is held to the majority-class
rate too, advice fits the run's target, the data's warnings and notes are printed and summarised, a
quick run says how many test rows it scored and how to score them all, Ctrl-C before the first
checkpoint leaves --out as found, the sizes printed agree, an unwritable teacher cache is refused before
--out is touched, and a cached latency table is used only for the shape and machine it was measured on."""
import contextlib
import io
import json
import os
import random
import shutil

import pytest

from leap_fx import cli
from leap_fx.data import DatasetSplits, TextSplit
from leap_fx.run.job import run_prune
from leap_fx.run.rundir import MANIFEST, RunDir
from leap_fx.run.summary import summary_table
from tests.conftest import bert_inputs, tiny_bert
from tests.hostile.runs import opts


def captured(fn):
    """``(result, stdout, stderr)`` of ``fn()``, as a log file would see them."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = fn()
    return result, out.getvalue(), err.getvalue()


def never_opened(monkeypatch):
    def opened(self):
        raise AssertionError(f"--out {self.out} was touched")
    monkeypatch.setattr(RunDir, "open", opened)


def write_noted_corpus(path, rows=200, seed=0):
    """Sentiment rows with a second text column the run is not told about and a label spelled with a
    zero-width space on some rows."""
    rng = random.Random(seed)
    lines = ["review,comment,sentiment"]
    for i in range(rows):
        pos = rng.random() < 0.5
        review = " ".join(rng.sample(["good", "great", "fine"] if pos else ["bad", "awful", "poor"], 2) + ["film"])
        label = ("pos" if pos else "neg") + ("\u200b" if i % 7 == 0 else "")
        lines.append(f"{review},the critic number {i} wrote this note,{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def noted_run(setup):
    """A quick run on a file with an unnamed text column and invisible label variants, scoring 8 test rows."""
    folder = setup[0]
    data = write_noted_corpus(folder / "noted.csv")
    out = folder / "noted"
    rep, log, err = captured(lambda: run_prune(opts(setup, out, data=data, quick=True, max_eval_examples=8)))
    return out, rep, log, err, data


# -- say it when you know it -------------------------------------------------------------------------
def test_data_notes_and_warnings_are_printed_before_the_run_and_in_the_summary(noted_run):
    out, rep, log, err, data = noted_run
    note = f"{data}: column 'comment' also holds text"
    assert f"[leap-fx] note: {note}" in log and f"[leap-fx] WARNING: {data}: labels 'neg', 'neg\\u200b'" in err
    assert log.index(note) < log.index("method / granularity")  # announced before the summary
    summary = summary_table(rep)
    assert "data note" in summary and note in summary
    assert "data WARNING" in summary and "differ only by invisible characters" in summary


def test_quick_mode_says_how_many_test_rows_it_scored_and_how_to_score_all(noted_run, capsys):
    out, rep, *_ = noted_run
    assert rep["data"]["splits"]["test"] == {**rep["data"]["splits"]["test"], "rows": 8, "rows_before_subset": 20}
    line = next(x for x in summary_table(rep).splitlines() if x.startswith("test rows scored"))
    assert "8 of the test split's 20" in line and f"`leap-fx eval {out} --all-rows` scores every row" in line
    assert cli.main(["eval", str(out), "--all-rows"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("test accuracy ") and " on 20 rows: the run's test split (" in first
    assert first.endswith(f"every row (onnxruntime, {out / 'model.onnx'})")


def test_a_teacher_no_better_than_guessing_stops_before_pruning(setup, tmp_path, monkeypatch):
    rng = random.Random(1)
    noise = tmp_path / "noise.csv"  # labels unrelated to the text
    noise.write_text("review,sentiment\n" + "".join(f"{rng.choice(['good', 'bad'])} film,{rng.choice(['pos', 'neg'])}\n"
                                                    for _ in range(160)))
    import leap_fx.run.job as job

    def pruned(*a, **k):
        raise AssertionError("the run went on to prune a useless teacher")
    monkeypatch.setattr(job, "analyze", pruned)
    out = tmp_path / "o"
    with pytest.raises(RuntimeError, match=r"the dense teacher scores .* on validation, not clearly above the "
                                           r"majority-class rate .*The run stops before pruning; to prune this "
                                           r"teacher anyway, run again with --continue-anyway"):
        run_prune(opts(setup, out, model=None, data=str(noise), continue_anyway=False), model=tiny_bert(),
                  tokenizer=setup[3], teacher=tiny_bert(seed=3))
    assert not out.exists()  # nothing to resume: --out as it was


def test_a_stopped_run_with_a_trained_teacher_resumes_with_continue_anyway(setup, tmp_path):
    rng = random.Random(2)
    noise = tmp_path / "noise.csv"
    noise.write_text("review,sentiment\n" + "".join(f"{rng.choice(['good', 'bad'])} film,{rng.choice(['pos', 'neg'])}\n"
                                                    for _ in range(160)))
    out, kw = tmp_path / "o", dict(data=str(noise), teacher_epochs=2, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="--continue-anyway") as info:
        run_prune(opts(setup, out, continue_anyway=False, **kw))
    assert "keeps this run's checkpoints: --resume continues it" in " ".join(info.value.__notes__)
    rep = run_prune(opts(setup, out, resume=True, continue_anyway=True, **kw))
    assert rep["status"] == "complete" and rep["teacher"]["cached"]  # the teacher is not trained again
    assert any(w.startswith("the dense teacher scores") for w in rep["warnings"])


def _splits(val, test, names=("neg", "pos")):
    mk = (lambda labels: TextSplit(texts=["x"] * len(labels), labels=labels, label_names=list(names)))
    return DatasetSplits(mk([0, 1] * 8), mk(val), mk(test), label_names=list(names))


def _report(dense, pruned, target=None):
    return {"resolved_options": {"teacher_epochs": 2, "quick": False}, "target": target,
            "density": {"target": 0.3}, "accuracy": {"dense": dict(zip(("validation", "test"), dense)),
                                                     "pruned": dict(zip(("validation", "test"), pruned))}}


def test_the_test_split_is_held_to_the_majority_rate_too():
    from leap_fx.run.report import result_warnings
    data = _splits([0, 1] * 50, [1] * 63 + [0] * 37)  # majority 0.63 on test
    warnings = result_warnings(_report((0.9, 0.9), (0.9, 0.585)), data)
    assert len(warnings) == 1 and warnings[0].startswith("the pruned model scores 0.585 on test, not clearly above "
                                                         "the majority-class rate 0.630")


def test_advice_for_a_flops_target_speaks_of_flops():
    from leap_fx.run.report import result_warnings
    data = _splits([0, 1] * 50, [0, 1] * 50)
    (warning,) = result_warnings(_report((0.9, 0.9), (0.5, 0.9), {"unit": "flops", "value": 0.5}), data)
    assert "a higher --target flops:X (now flops:0.5; a higher X keeps more FLOPs)" in warning
    assert "--target-density" not in warning


def test_a_label_named_random_is_not_read_as_answering_at_random():
    from leap_fx.run.report import result_warnings
    data = _splits([0] * 70 + [1] * 30, [0] * 70 + [1] * 30, names=("random", "sarcastic"))
    (warning,) = result_warnings(_report((0.7, 0.95), (0.95, 0.95)), data)
    assert "always answering" not in warning
    assert "majority-class rate 0.700 (the share of the most frequent label, 'random';" in warning


# -- Ctrl-C --------------------------------------------------------------------------------------------
def _interrupt_after(monkeypatch, checkpoint: bool):
    import leap_fx.run.job as job

    def dense_teacher(opts, *a, work_dir=None, **k):
        if checkpoint:
            os.makedirs(work_dir, exist_ok=True)
            with open(os.path.join(work_dir, "checkpoint.pt"), "wb") as fh:
                fh.write(b"a checkpoint")
        raise KeyboardInterrupt
    monkeypatch.setattr(job, "dense_teacher", dense_teacher)


def test_ctrl_c_before_the_first_checkpoint_leaves_out_as_found(setup, tmp_path, monkeypatch):
    out = tmp_path / "o"
    _interrupt_after(monkeypatch, checkpoint=False)
    with pytest.raises(KeyboardInterrupt):
        run_prune(opts(setup, out))
    assert not out.exists()
    with pytest.raises(KeyboardInterrupt):  # the same command is not refused: it starts (and is stopped) again
        run_prune(opts(setup, out))


def test_ctrl_c_on_the_cli_says_what_was_kept(setup, tmp_path, monkeypatch, capsys):
    folder, csv_path, model_dir, _ = setup
    argv = ["prune", "--model", str(model_dir), "--data", csv_path, "--text-column", "review", "--label-column",
            "sentiment", "--max-length", "16", "--quiet", "--cache-dir", str(folder / "cache")]
    _interrupt_after(monkeypatch, checkpoint=False)
    assert cli.main(argv + ["--out", str(tmp_path / "a")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"leap-fx prune: interrupted (no checkpoint yet: --out {tmp_path / 'a'} was left as it was)"
    _interrupt_after(monkeypatch, checkpoint=True)
    assert cli.main(argv + ["--out", str(tmp_path / "b")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"leap-fx prune: interrupted ({tmp_path / 'b'} keeps this run's checkpoints: --resume continues it)"


def test_a_run_killed_before_any_checkpoint_does_not_block_the_same_command(tmp_path):
    from leap_fx.spec.options import PruneOptions
    out = tmp_path / "o"
    killed = RunDir(str(out), PruneOptions(out=str(out), verbose=False))
    killed.check()
    assert killed.open() is None
    os.close(killed.fd)  # SIGKILL: no fail(), no close(); the manifest and options.json stay
    assert json.loads((out / MANIFEST).read_text())["complete"] is False
    again = RunDir(str(out), PruneOptions(out=str(out), verbose=False))
    again.check()
    assert again.open() is None
    again.close()
    (out / "teacher").mkdir()
    (out / "teacher" / "checkpoint.pt").write_bytes(b"ckpt")  # now there is something to resume
    with pytest.raises(ValueError, match=r"\(unfinished, with checkpoints: .*--resume to continue it from its last "
                                         r"checkpoint"):
        RunDir(str(out), PruneOptions(out=str(out), verbose=False)).check()


# -- sizes ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def structured_run(setup):
    out = setup[0] / "structured"
    return out, run_prune(opts(setup, out))


def test_model_onnx_has_one_size_and_nothing_is_said_to_be_compacted(structured_run):
    from leap_fx.run.disk import fmt_bytes
    out, rep = structured_run
    text = summary_table(rep)
    size = fmt_bytes(os.path.getsize(out / "model.onnx"))
    assert "compacted" not in text
    rows = {line.split("  ")[0]: line for line in text.splitlines()}
    assert f"({size}, parity" in rows["ONNX"] and rows["ONNX size dense -> slim"].endswith(f"-> {size}")
    assert f"model.onnx {size}" in rows["disk"]


def test_compaction_is_named_only_when_it_happened():
    onnx = {"path": "/r/model.onnx", "size_bytes": 2048, "exported_size_bytes": 8192, "parity_max_abs_diff": 0.0}
    assert "sparse matrices compacted from 8.0 KB" in summary_table({"onnx": {**onnx, "compact": {"bytes": 2048}}})
    assert "compacted" not in summary_table({"onnx": {**onnx, "compact": None}})


def test_the_runs_tokenizer_folder_records_its_files(structured_run):
    from passes.io import MARKER, dir_changes
    out, _ = structured_run
    assert (out / "tokenizer" / MARKER).is_file() and dir_changes(out / "tokenizer") == []


# -- checked before --out is touched -----------------------------------------------------------------------
def test_a_read_only_home_is_refused_before_out_is_touched(setup, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("a file where the cache folder would go")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LEAP_FX_CACHE", raising=False)
    never_opened(monkeypatch)
    with pytest.raises(ValueError, match=rf"the teacher cache {home}/.cache/leap-fx/teachers is not writable"):
        run_prune(opts(setup, tmp_path / "o", cache_dir=None))
    assert not (tmp_path / "o").exists()


def test_a_model_folder_without_tokenizer_files_is_named_once(setup, tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    shutil.copytree(setup[2], bare)
    for f in os.listdir(bare):
        if f.startswith(("tokenizer", "vocab", "special_tokens")):
            os.remove(bare / f)
    never_opened(monkeypatch)
    with pytest.raises(ValueError) as info:
        run_prune(opts(setup, tmp_path / "o", model=str(bare)))
    assert str(info.value).startswith(f"{bare} has no tokenizer files (tokenizer.json, vocab.*, *.model")
    assert "no usable tokenizer" not in str(info.value)  # the fix is said once, not wrapped and cut


def test_a_160_class_file_is_refused_then_run_with_the_flags(setup, tmp_path, capsys):
    folder, _, model_dir, _ = setup
    many = tmp_path / "many.csv"
    many.write_text("review,sentiment\n" + "".join(f"good film {i},class{i}\n" for i in range(160)))
    argv = ["prune", "--model", str(model_dir), "--data", str(many), "--text-column", "review", "--label-column",
            "sentiment", "--max-length", "16", "--quiet", "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
            "--teacher-epochs", "1", "--granularity", "structured", "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    assert "cannot be the labels of a classifier: nearly every row is its own class (160 labels for 160 rows)" \
           in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert cli.main(argv + ["--allow-many-classes", "--continue-anyway"]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert len(rep["data"]["label_names"]) == 160 and rep["options"]["allow_many_classes"] is True


# -- the latency table cache ---------------------------------------------------------------------------------
@pytest.fixture
def tables(tmp_path, monkeypatch):
    """A cached table for (batch 1, seq 8) written as a run writes it, and ``measure`` replaced by a recorder
    (what is tested is which file is trusted, not the timing)."""
    import leap_fx.costs.latency as lt
    from passes.analyze import analyze
    monkeypatch.setattr(lt, "_MEMO", {})
    model = tiny_bert()
    plan = analyze(model, bert_inputs())
    kinds = [f.kind for f in plan.families.values()]

    def table(batch, seq, fixed_ms=1.0):
        return lt.LatencyTable(key=lt.table_key(model, plan, batch, seq, 2), batch=batch, seq=seq, threads=2,
                               dense_ms=5.0, fixed_ms=fixed_ms, layers={k: kinds.count(k) for k in sorted(set(kinds))},
                               curves={}, measured={}, machine=lt.machine())
    measured = []
    monkeypatch.setattr(lt, "measure", lambda m, p, e, batch, seq, *a, **k: measured.append(seq) or table(batch, seq, 2.0))
    cached = table(1, 8)
    folder = tmp_path / "latency"
    folder.mkdir()
    lt.write_table(str(folder / f"{cached.key}.json"), cached)
    get = (lambda seq: lt.latency_table(model, plan, bert_inputs(), batch=1, seq=seq, cache_dir=str(tmp_path)))
    return lt, get, cached, folder, measured, (lambda seq: lt.table_key(model, plan, 1, seq, 2))


def test_an_intact_cached_table_is_used(tables):
    lt, get, cached, folder, measured, key = tables
    assert get(8) == cached and measured == []


def test_a_latency_table_of_another_shape_is_measured_again(tables, capsys):
    lt, get, cached, folder, measured, key = tables
    shutil.copy(folder / f"{cached.key}.json", folder / f"{key(16)}.json")  # the seq-8 table under the seq-16 key
    again = get(16)
    assert measured == [16] and again.seq == 16 and again.key == key(16)
    err = capsys.readouterr().err
    assert f"cached latency table {folder / key(16)}.json is not used: it was measured for another model shape or " \
           f"machine: key '{cached.key}'" in err and "seq 8 (this run: 16)" in err
    lt._MEMO.clear()
    assert get(16) == again and measured == [16]  # the table measured for seq 16 replaced the copy


def test_a_latency_table_from_another_machine_is_measured_again(tables, capsys, monkeypatch):
    """A shared cache folder: the table another machine measured, found under this machine's key."""
    lt, get, cached, folder, measured, key = tables
    here = lt.machine()
    monkeypatch.setattr(lt, "machine", lambda: {**here, "node": "another-host", "cpus": 64})
    theirs = lt.LatencyTable(**{**cached.to_dict(), "key": key(8), "machine": lt.machine()})
    monkeypatch.setattr(lt, "machine", lambda: here)
    lt.write_table(str(folder / f"{key(8)}.json"), theirs)
    again = get(8)
    assert measured == [8] and again.machine == here
    err = capsys.readouterr().err
    assert "measured for another model shape or machine" in err and "another-host" in err


@pytest.mark.parametrize("damage, why", [
    (lambda rec: rec["table"].update(fixed_ms=0.0), "its contents fail the recorded SHA-256 (damaged or edited)"),
    (lambda rec: rec.pop("sha256"), "its contents fail the recorded SHA-256"),
    (lambda rec: rec.pop("format"), "it is not a checksummed leap-fx latency table"),
])
def test_a_damaged_or_unchecked_latency_table_is_measured_again(tables, capsys, damage, why):
    lt, get, cached, folder, measured, key = tables
    path = folder / f"{cached.key}.json"
    rec = json.loads(path.read_text())
    damage(rec)
    path.write_text(json.dumps(rec))
    assert get(8).fixed_ms == 2.0 and measured == [8]
    assert f"cached latency table {path} is not used: {why}" in capsys.readouterr().err


def test_an_unreadable_latency_table_is_measured_again(tables, capsys):
    lt, get, cached, folder, measured, key = tables
    (folder / f"{cached.key}.json").write_text("{not json")
    assert get(8).fixed_ms == 2.0 and "is not used: latency table" in capsys.readouterr().err
