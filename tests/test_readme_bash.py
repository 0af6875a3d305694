"""README.md's ``bash`` blocks run: every ``leap-fx ...`` and ``python -m bench...`` command of every ```bash
block is executed, in README order, in one temporary folder (the user's working folder: ``runs/claims``, made
by one block, is what ``leap-fx eval runs/claims`` in the next one reads), each in its own process, and must
exit 0 and write or print what the README says it does.

What runs is the README's command line itself, split as the shell splits it (``tests.helpers.shell_commands``:
continuations joined, ``&&`` chains cut, comments dropped, quotes removed), with ``leap-fx`` as
``python -m leap_fx`` (the console script's entry, ``leap_fx.cli:main``) and ``python`` as this interpreter.
Substituted, so that it runs in minutes on tiny models, and nothing else:

- **the data files the commands name** (``reviews.csv``, ``train/dev/test.csv``, ``train/dev/test.jsonl``,
  ``new_claims.jsonl``, ``train.json``, ``images/``) are generated here, small and learnable, in the format
  the README describes (columns ``review,sentiment``; ``claim``, ``evidence``, ``verdict``; SQuAD JSON;
  class sub-folders);
- **the models the commands name** (``my-bert-ner``, ``my-bert-qa``, ``my-vit``) are tiny model folders made
  here under those names;
- **one argument is appended** to every ``leap-fx prune`` and ``python -m bench.accuracy`` line:
  ``--options tiny*.json``, a settings file (never actions: ``leap-fx prune --options``; the command line
  overrides it). It points what the line leaves to the defaults at stand-ins (the embedded MiniLM and
  SmolLM2 -> tiny models in ``stand-ins/``; Rotten Tomatoes, the convention speeches and WNUT-16 -> small
  generated files in ``stand-ins/``) and sets tiny budgets (teacher and pruning epochs, learning rates,
  batch size, threads; the language model's block and example counts; the question-answering window;
  8x8 mask blocks for the tiny model's 32-wide matrices; ``bench.accuracy --options`` skips the settings its
  own flags set: epochs, lr, threads). The bench lines also get ``--work-dir bench-work`` (its default is a
  folder of ``/tmp`` shared by every checkout);
- **the environment**: ``LEAP_FX_CACHE`` (the teacher cache) in the temporary folder, one thread.

Not run here: the environment setup (``python3 -m venv``, ``. .venv/bin/activate``, ``pip install ...``) and
the test command (``python -m pytest ...``): CI runs those (``.ci/run``: a fresh venv, CPU torch, the project,
the same offline wheels, then the README's test command; ``tests/test_readme.py`` checks the test command and
the wheel list against it). ``test_every_bash_command_is_of_one_known_kind`` makes sure no other kind of
command can enter a bash block without being run.
"""
from __future__ import annotations

import csv
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers import NEG, NEUTRAL, POS, ROOT, readme_blocks, shell_commands, write_tiny_corpus

KINDS = {  # every command of a README bash block is exactly one of these
    "setup": lambda a: a[:3] == ["python3", "-m", "venv"] or a[:1] == ["."] or a[:2] == ["pip", "install"],
    "suite": lambda a: a[:3] == ["python", "-m", "pytest"],
    "leap-fx": lambda a: a[0] == "leap-fx",
    "bench": lambda a: a[:2] == ["python", "-m"] and a[2].startswith("bench."),
}
RUN = ("leap-fx", "bench")  # the kinds executed here (setup and suite: by CI)


def kinds(argv: list[str]) -> list[str]:
    return [k for k, match in KINDS.items() if match(argv)]


COMMANDS = [(b, i, argv) for b, block in enumerate(readme_blocks("bash")) for i, argv in enumerate(shell_commands(block))
            if kinds(argv) and kinds(argv)[0] in RUN]

# --options files: settings only (the command line overrides them); "model"/"data" stand in for the defaults
BUDGET = {"epochs": 2, "teacher_epochs": 6, "batch_size": 16, "lr": 1e-3, "teacher_lr": 3e-3, "threads": 1}
OPTIONS = {
    "sequence-classification": ("tiny.json", {"model": "stand-ins/minilm", "data": "stand-ins/rotten-tomatoes.csv",
                                              "mask_block_size": 8, **BUDGET}),  # hybrid: 8x8 blocks of 32x32
    "causal-lm": ("tiny-lm.json", {"model": "stand-ins/smollm2", "data": "stand-ins/speeches.txt", "threads": 1,
                                   "task_options": {"block_size": 32, "calibration_blocks": 8},
                                   "max_train_examples": 16, "max_eval_examples": 4}),
    "token-classification": ("tiny-ner.json", {"data": "stand-ins/wnut16.jsonl", **BUDGET}),
    "question-answering": ("tiny-qa.json", {"max_length": 160, **BUDGET}),
    "image-classification": ("tiny-vit.json", BUDGET),
}
BENCH_EXTRA = ["--options", OPTIONS["sequence-classification"][0], "--work-dir", "bench-work"]


def flag(argv: list[str], name: str, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


def appended(argv: list[str]) -> list[str]:
    """What the test adds to a README command line (the module docstring)."""
    if argv[:2] == ["leap-fx", "prune"]:
        return ["--options", OPTIONS[flag(argv, "--task", "sequence-classification")][0]]
    if argv[:3] == ["python", "-m", "bench.accuracy"]:
        return list(BENCH_EXTRA)
    return []


# -- the stand-ins -------------------------------------------------------------------------------------------
def _reviews(rng: random.Random) -> tuple[str, bool]:
    pos = rng.random() < 0.5
    words = [rng.choice(POS if pos else NEG) for _ in range(2)] + [rng.choice(NEUTRAL) for _ in range(4)]
    rng.shuffle(words)
    return " ".join(words), pos


def _claims(path, n: int, seed: int) -> None:
    """Fact verification rows in the tiny vocabulary: the verdict is read from the evidence's polarity."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            evidence, pos = _reviews(rng)
            claim = " ".join(rng.choice(NEUTRAL) for _ in range(4))
            fh.write(json.dumps({"claim": claim, "evidence": evidence,
                                 "verdict": "supported" if pos else "refuted"}) + "\n")


def _squad(rows: list[dict]) -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "answers": [
            {"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}]}
        for r in rows]}]}


def make_stand_ins(folder) -> None:
    """Every file and model folder the README's commands name, and the stand-ins of the defaults."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from tests.conftest import tiny_bert
    from tests.lm_models import tiny_tokenizer, tokenizer_lm
    from tests.tasks.builders import image_folder, ner_rows, qa_rows, text_model_folder, tokenizer, vit_folder, write_jsonl
    stand = folder / "stand-ins"
    stage = folder / "stage"
    # sequence classification: reviews.csv (review,sentiment = pos/neg), its held-out variant, sentence pairs
    _, tok = write_tiny_corpus(str(folder), rows=400, seed=0)  # -> reviews.csv
    for name, rows, seed in (("train", 320, 1), ("dev", 60, 2), ("test", 60, 3)):
        os.makedirs(stage / name)
        path, _ = write_tiny_corpus(str(stage / name), rows, seed)  # review,sentiment
        os.replace(path, folder / f"{name}.csv")
    for name, rows, seed in (("train", 320, 4), ("dev", 60, 5), ("test", 60, 6), ("new_claims", 30, 7)):
        _claims(folder / f"{name}.jsonl", rows, seed)
    tiny_bert().save_pretrained(stand / "minilm")
    tok.save_pretrained(stand / "minilm")
    rng = random.Random(8)
    with open(stand / "rotten-tomatoes.csv", "w", newline="") as fh:  # the default data's columns: text,label
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for _ in range(400):
            text, pos = _reviews(rng)
            w.writerow([text, int(pos)])
    # causal LM: a tiny Llama with a byte-level BPE tokenizer that has a chat template, and a small corpus
    lm_tok = tiny_tokenizer(str(stand / "smollm2"))
    torch.manual_seed(0)
    tokenizer_lm(lm_tok).save_pretrained(stand / "smollm2")
    words = "the cat sat on the mat and the dog sat on the log a quick brown fox jumps over the lazy dog".split()
    rng = random.Random(9)
    (stand / "speeches.txt").write_text("".join(" ".join(rng.choice(words) for _ in range(70)) + "\n\n"
                                                for _ in range(50)))
    # the tasks block: my-bert-ner (default data: WNUT-16 -> stand-in), my-bert-qa + train.json, my-vit + images/
    write_jsonl(stand / "wnut16.jsonl", ner_rows(150))
    shutil.move(text_model_folder(stage, "token"), folder / "my-bert-ner")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForQuestionAnswering(cfg).save_pretrained(folder / "my-bert-qa")  # BERT's 512 positions: --doc-stride 128
    tokenizer().save_pretrained(folder / "my-bert-qa")
    (folder / "train.json").write_text(json.dumps(_squad(qa_rows(150))))
    shutil.move(vit_folder(stage), folder / "my-vit")
    image_folder(folder / "images")
    shutil.rmtree(stage)
    for name, settings in OPTIONS.values():
        (folder / name).write_text(json.dumps(settings, indent=1))


# -- the session: commands run in README order, each once, on demand -----------------------------------------
class Session:
    def __init__(self, folder):
        self.folder, self.results = folder, {}
        self.env = dict(os.environ, PYTHONPATH=ROOT, LEAP_FX_CACHE=str(folder / "cache"), HF_HUB_OFFLINE="1",
                        TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")

    def run(self, key: tuple[int, int]) -> tuple[list[str], subprocess.CompletedProcess, float]:
        """The result of command ``key`` (block, index), after every command before it in the README."""
        for b, i, argv in COMMANDS:
            if (b, i) not in self.results:
                line = argv + appended(argv)
                exe = [sys.executable, "-m", "leap_fx"] if line[0] == "leap-fx" else [sys.executable]
                t0 = time.perf_counter()
                res = subprocess.run(exe + line[1:], cwd=self.folder, env=self.env, capture_output=True, text=True,
                                     timeout=900)
                self.results[(b, i)] = (line, res, time.perf_counter() - t0)
            if (b, i) == key:
                return self.results[key]
        raise KeyError(key)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    make_stand_ins(folder)
    return Session(folder)


def test_every_bash_command_is_of_one_known_kind():
    seen = {k: 0 for k in KINDS}
    for block in readme_blocks("bash"):
        for argv in shell_commands(block):
            found = kinds(argv)
            assert len(found) == 1, f"README bash command {shlex.join(argv)!r}: kinds {found}; add it to KINDS"
            seen[found[0]] += 1
    assert all(seen.values()), seen  # each kind is still in the README (else KINDS holds a dead entry)
    assert [argv[:2] for _, _, argv in COMMANDS if argv[0] == "leap-fx"].count(["leap-fx", "prune"]) >= 7
    for _, _, argv in COMMANDS:  # every prune line gets a stand-in options file of its task
        if argv[:2] == ["leap-fx", "prune"]:
            assert flag(argv, "--task", "sequence-classification") in OPTIONS and "--options" not in argv


def _report(folder, run: str) -> dict:
    return json.loads((folder / run / "report.json").read_text())


def _eval_line(stdout: str) -> tuple[str, str, float, int]:
    """``leap-fx eval``'s figure: ``<split> <metric> <value> on <N> rows ...`` (its first line)."""
    m = re.match(r"(\w+) ([\w-]+) ([\d.]+) on (\d+) ", stdout)
    assert m, stdout[:500]
    return m[1], m[2], float(m[3]), int(m[4])


def check(folder, argv: list[str], res: subprocess.CompletedProcess) -> None:
    """What the README says the command writes or prints."""
    if argv[:2] == ["leap-fx", "prune"]:
        out = folder / flag(argv, "--out")
        assert (out / "model.onnx").is_file() and (out / "slim").is_dir()
        report = _report(folder, flag(argv, "--out"))
        assert report["status"] == "complete" and report["onnx"]["parity_max_abs_diff"] <= 1e-4
        task = flag(argv, "--task", "sequence-classification")
        assert report.get("task", "sequence-classification") == task
        if task == "sequence-classification":
            assert "latency" in report and (out / "tokenizer").is_dir()
            assert all((out / f).is_file() for f in ("density.png", "structure.png", "curves.png"))
        if "--method" in argv:
            assert report["resolved_options"]["method"] == flag(argv, "--method")
    elif argv[:2] == ["leap-fx", "generate"]:
        assert res.stdout.strip(), "nothing generated"
        n = re.search(r"\[leap-fx\] (\d+) tokens in", res.stderr)
        assert n and int(n[1]) >= 1, res.stderr[-1000:]
    elif argv[:2] == ["leap-fx", "eval"]:
        split, metric, value, n = _eval_line(res.stdout)
        report = _report(folder, argv[2])
        data = flag(argv, "--data")
        if data is None:  # the run's test split: the report's figure
            pruned = report["accuracy"]["pruned"] if "accuracy" in report else report["metrics"]["pruned"]
            want = pruned["test"] if isinstance(pruned["test"], float) else pruned["test"][metric]
            assert split == "test" and n == report["data"]["test"]
            assert value == pytest.approx(want, abs=1e-4)
        else:  # a file of your own: every row
            rows = sum(1 for line in open(folder / data) if line.strip())
            assert split == "all" and n == rows
    elif argv[:3] == ["python", "-m", "bench.accuracy"]:
        from bench.accuracy import all_rows, parse_args, select
        args = parse_args(argv[3:])
        saved = json.loads((folder / args.out).read_text())
        want = select(all_rows(args.densities), [p for p in (args.rows or "").split(",") if p])
        assert sorted(r["row"] for r in saved["rows"]) == sorted(r.name for r in want)
        assert all(r["status"] == "complete" for r in saved["rows"]), [r.get("error") for r in saved["rows"]]
        assert saved["settings"]["mode"] == ("quick" if args.quick else "full")
        assert saved["settings"]["model"] == OPTIONS["sequence-classification"][1]["model"]  # the stand-in was read
    elif argv[:3] == ["python", "-m", "bench.accuracy_table"]:
        rows = [r["row"] for p in argv[3:] if p.endswith(".json") for r in json.loads((folder / p).read_text())["rows"]]
        table = [line for line in res.stdout.splitlines() if line.startswith("|")]
        assert table[0].startswith("| row |") and len(table) == 2 + len(set(rows))
        assert {line.split("|")[1].strip() for line in table[2:]} == set(rows)
    else:
        raise AssertionError(f"no check for {shlex.join(argv)}")


@pytest.mark.slow
@pytest.mark.parametrize("key", [(b, i) for b, i, _ in COMMANDS],
                         ids=[f"{b}:{shlex.join(argv)[:70]}" for b, _, argv in COMMANDS])
def test_readme_command_runs(session, key):
    line, res, seconds = session.run(key)
    argv = {(b, i): a for b, i, a in COMMANDS}[key]  # the README's own words (``line``: with what is appended)
    print(f"{shlex.join(line)}: {seconds:.1f} s")
    assert res.returncode == 0, f"README command failed: {shlex.join(line)}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    check(session.folder, argv, res)
