"""``leap-fx eval`` of a task run (``leap_fx.run.task_eval``), without a run: which rows are scored (the run's
split, capped as the run capped it; ``--all-rows``; ``--limit``; another file whole or split by the job's
rule with ``--split-seed``) and which flags are refused, by name, for each task. The whole-job checks (the
printed figure, onnxruntime and PyTorch) are the slow tests of ``tests/tasks/test_*``."""
import argparse

import pytest

from leap_fx.cli.eval import Eval
from leap_fx.methods.request import task_config
from leap_fx.run.task_eval import check_flags, task_eval_rows
from leap_fx.spec.options import PruneOptions
from leap_fx.tasks.image_classification.data import read_images
from leap_fx.tasks.registry import build_task
from leap_fx.tasks.rows import split_rows
from leap_fx.tasks.token_classification.data import read_tags_file
from tests.tasks.builders import image_folder, ner_rows, write_jsonl

TAGS = ["O", "B-LOC", "B-PER", "I-LOC"]


def eval_args(*argv):
    """``leap-fx eval``'s arguments, parsed by its own parser."""
    p = argparse.ArgumentParser()
    Eval.add_arguments(p)
    return p.parse_args(["run", *argv])


@pytest.fixture
def token_files(tmp_path):
    run_file = write_jsonl(tmp_path / "run.jsonl", ner_rows(80))
    other = write_jsonl(tmp_path / "other.jsonl", ner_rows(60, seed=5))
    opts = PruneOptions(task="token-classification", data=run_file, split_seed=3, max_eval_examples=4,
                        max_train_examples=20)  # a capped run (quick mode caps the same way)
    return opts, build_task(task_config(opts)), run_file, other


def _rows(task, opts, *argv, labels=TAGS):
    rows, name, how = task_eval_rows(task, opts, eval_args(*argv), labels)
    return rows.rows, name, how


def test_another_file_is_scored_whole_or_split_by_the_jobs_rule(token_files):
    opts, task, _, other = token_files
    assert _rows(task, opts, "--data", other)[:2] == (ner_rows(60, seed=5), "all")
    for seed, argv in ((3, ()), (7, ("--split-seed", "7"))):  # the run's split seed, or --split-seed
        expect = split_rows(read_tags_file(other), seed)[2].rows
        job = task.read(opts.replace(data=other, split_seed=seed, max_eval_examples=None, max_train_examples=None))
        assert job["test"].rows == expect  # what the job itself would have made its test split
        got, name, how = _rows(task, opts, "--data", other, "--split", "test", *argv)
        assert got == expect and name == "test" and f"the test split (seed {seed}) of {other}" in how
        assert len(expect) == 6  # not capped: the run's caps are for the run's own data
    got, _, how = _rows(task, opts, "--data", other, "--split", "validation", "--limit", "4")
    whole = split_rows(read_tags_file(other), 3)[1].rows
    assert len(got) == 4 and all(r in whole for r in got) and "a random 4 of its rows" in how
    got, name, _ = _rows(task, opts, "--data", other, "--limit", "9")
    assert name == "all" and len(got) == 9 and all(r in ner_rows(60, seed=5) for r in got)


def test_the_runs_own_data_is_its_split_capped_as_the_run_capped_it(token_files):
    opts, task, run_file, _ = token_files
    test = split_rows(read_tags_file(run_file), 3)[2].rows
    got, name, how = _rows(task, opts)
    assert name == "test" and got == task.read(opts)["test"].rows and len(got) == 4 and "as its report" in how
    assert _rows(task, opts, "--data", run_file)[0] == got  # the same file given again: the same rows
    got, _, how = _rows(task, opts, "--all-rows")
    assert got == test and len(test) == 8 and "every row" in how
    got, _, how = _rows(task, opts, "--limit", "6")
    assert len(got) == 6 and all(r in test for r in got) and "a random 6" in how
    got, _, how = _rows(task, opts, "--split-seed", "11", "--all-rows")
    assert got == split_rows(read_tags_file(run_file), 11)[2].rows and "seed 11" in how
    assert len(_rows(task, opts, "--split", "train")[0]) == 20  # the run's train cap
    assert _rows(task, opts, "--split", "all")[0] == ner_rows(80)  # the file whole


def test_a_split_seed_with_nothing_to_seed_and_unknown_labels_are_refused(token_files, tmp_path):
    opts, task, _, other = token_files
    with pytest.raises(ValueError, match=r"^--split-seed 5: nothing to seed, .*other.jsonl is scored whole"):
        _rows(task, opts, "--data", other, "--split-seed", "5")
    bad = write_jsonl(tmp_path / "bad.jsonl", ner_rows(12) + [{"tokens": ["x"], "tags": ["B-ORG"]}])
    with pytest.raises(ValueError, match="B-ORG"):
        _rows(task, opts, "--data", bad)


def test_image_rows_follow_the_same_rules(tmp_path):
    run_dir, other = image_folder(tmp_path / "run", per_class=10), image_folder(tmp_path / "other", per_class=8,
                                                                                 seed=3)
    opts = PruneOptions(task="image-classification", data=run_dir, split_seed=2)
    task = build_task(task_config(opts))
    labels = ["blue", "green", "red"]
    got, name, _ = _rows(task, opts, "--data", other, "--split", "test", labels=labels)
    assert name == "test" and got == split_rows(read_images(other), 2)[2].rows and len(got) == 3
    assert len(_rows(task, opts, "--data", other, "--limit", "5", labels=labels)[0]) == 5
    got, name, _ = _rows(task, opts, labels=labels)
    assert name == "test" and got == split_rows(read_images(run_dir), 2)[2].rows


@pytest.mark.parametrize("task, argv, needles", [
    ("token-classification", ["--text-pair-column", "b"], ["--text-pair-column (a row is one list of words)"]),
    ("token-classification", ["--tsv-quotes", "--settings-from", "onnx"], ["--tsv-quotes", "--settings-from"]),
    ("token-classification", ["--text-column", "w", "--data", "CONLL"], ["--text-column (", "CoNLL-style text"]),
    ("question-answering", ["--label-column", "y"], ["--label-column (the answers are the SQuAD"]),
    ("question-answering", ["--allow-many-classes"], ["--allow-many-classes"]),
    ("image-classification", ["--text-column", "t", "--tokenizer", "tok"], ["--text-column", "--tokenizer"]),
    ("image-classification", ["--max-length", "8"], ["--max-length (images are resized"]),
    ("image-classification", ["--label-column", "y", "--data", "FOLDER"], ["--label-column (", "sub-folder"]),
    ("image-classification", ["--trust-edited"], ["--trust-edited (it loads an edited slim/ folder"]),
])
def test_flags_that_mean_nothing_for_the_task_are_refused_by_name(tmp_path, task, argv, needles):
    conll = tmp_path / "a.conll"
    conll.write_text("anna B-PER\n")
    folder = image_folder(tmp_path / "imgs", per_class=1)
    argv = [{"CONLL": str(conll), "FOLDER": folder}.get(a, a) for a in argv]
    args = eval_args(*argv)
    with pytest.raises(ValueError) as err:
        check_flags(args, task, args.data or "data.jsonl", slim=False)
    message = str(err.value)
    assert "\n" not in message and f"not for a {task} run's eval (its options: --data, --split" in message
    assert all(n in message for n in needles), message


@pytest.mark.parametrize("task, argv", [
    ("token-classification", ["--text-column", "words", "--label-column", "ner", "--tokenizer", "t",
                              "--max-length", "16", "--drop-invalid", "--limit", "3", "--split", "test"]),
    ("question-answering", ["--tokenizer", "t", "--max-length", "32", "--split-seed", "4", "--split", "train"]),
    ("image-classification", ["--label-column", "y", "--all-rows", "--drop-invalid", "--trust-edited"]),
])
def test_flags_of_the_task_are_accepted(task, argv):
    check_flags(eval_args(*argv), task, "data.jsonl", slim=True)
