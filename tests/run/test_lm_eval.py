"""``leap-fx eval`` of a language-model run: the run folder alone reproduces the report's perplexity (same
blocks, same cap, onnxruntime); another text file is scored whole, packed as the job packs, and equals the
slim PyTorch model's own loss on those blocks; bad input is one clear line (exit 2)."""
import json
import math
import random
import shutil

import pytest
import torch

from leap_fx import cli
from leap_fx.run.job import run_prune
from leap_fx.run.lm_eval import lm_perplexity, lm_run
from leap_fx.spec.options import PruneOptions
from passes.export import load_slim
from tests.lm_models import tiny_tokenizer, tokenizer_lm

WORDS = "the cat sat on the mat and the dog sat on the log a quick brown fox jumps over the lazy dog".split()
OTHER = "pruning removes heads and neurons from a transformer hello world this is a tiny corpus".split()
BLOCK = 32


def _write_corpus(path, words, docs, seed):
    rng = random.Random(seed)
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(70)) + "\n\n" for _ in range(docs)))
    return str(path)


@pytest.fixture(scope="module")
def lm_run_dir(tmp_path_factory):
    """One quick l2-oneshot run of a tiny Llama on a generated corpus: ``(run folder, report, tokenizer, d)``."""
    d = tmp_path_factory.mktemp("lmeval")
    corpus = _write_corpus(d / "corpus.txt", WORDS, 50, 0)
    tok = tiny_tokenizer(str(d / "tok"))
    torch.manual_seed(0)
    out = d / "run"
    opts = PruneOptions(task="causal-lm", data=corpus, out=str(out), quick=True, threads=1, use_cache=False,
                        method="l2-oneshot", task_options={"block_size": BLOCK, "calibration_blocks": 8},
                        max_train_examples=16, max_eval_examples=4, target="flops:0.6", verbose=False)
    report = run_prune(opts, model=tokenizer_lm(tok), tokenizer=tok)
    return out, report, tok, d


def _eval(*argv):
    """``(perplexity result, blocks)`` of ``leap-fx eval ARGV`` through the command's own parser."""
    args = cli.build_parser("eval").parse_args(["eval", *map(str, argv)])
    result, blocks, _ = lm_perplexity(args, lm_run(args.model))
    return result, blocks


def _cli(capsys, *argv):
    code = cli.main(["eval", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _printed(stdout):
    """``(split, perplexity, blocks)`` of the first line ``<split> perplexity <value> on <n> blocks ...``."""
    words = stdout.splitlines()[0].split()
    return words[0], float(words[words.index("perplexity") + 1]), int(words[words.index("on") + 1])


def _whole_file_blocks(path, tok):
    """The blocks of a whole .txt file, written out here: documents (blank-line separated) in file order, each
    tokenised without special tokens and followed by EOS, joined and cut into BLOCK-token blocks."""
    docs = [d.strip() for d in open(path).read().split("\n\n") if d.strip()]
    stream = [t for ids in tok(docs, add_special_tokens=False)["input_ids"] for t in (*ids, tok.eos_token_id)]
    n = len(stream) // BLOCK
    return torch.tensor(stream[:n * BLOCK]).view(n, BLOCK)


@pytest.mark.slow  # runs the language-model job once (module fixture)
def test_eval_of_the_run_folder_is_the_reports_perplexity(lm_run_dir, capsys):
    out, report, _, _ = lm_run_dir
    ppl = report["perplexity"]
    result, blocks = _eval(out)
    assert blocks.split == "test" and blocks.as_report
    assert result["blocks"] == ppl["blocks"] == 4 and result["tokens"] == ppl["tokens"]  # the quick cap: 4 blocks
    assert result["perplexity"] == pytest.approx(ppl["slim"], rel=1e-6)
    assert json.loads((out / "report.json").read_text())["perplexity"]["slim"] == ppl["slim"]
    code, stdout, err = _cli(capsys, out)
    assert code == 0, err
    split, value, n = _printed(stdout)
    assert (split, n) == ("test", 4) and value == pytest.approx(ppl["slim"], abs=1e-4)
    assert "onnxruntime" in stdout and f"perplexity.slim {ppl['slim']:.4f}: the same" in stdout
    # the model.onnx path, and the slim/ folder in PyTorch (the report's slim_torch), on the same blocks
    assert _eval(out / "model.onnx")[0]["perplexity"] == pytest.approx(ppl["slim"], rel=1e-6)
    torch_res, torch_blocks = _eval(out / "slim")
    assert torch_blocks.as_report and torch_res["perplexity"] == pytest.approx(ppl["slim_torch"], rel=1e-5)
    # --all-rows: every test block of the run's split (more than the quick cap), still finite
    every, every_blocks = _eval(out, "--all-rows")
    assert every["blocks"] > 4 and not every_blocks.as_report and math.isfinite(every["perplexity"])


@pytest.mark.slow  # runs the language-model job once (module fixture)
def test_eval_on_another_text_file_equals_the_slim_models_own_loss(lm_run_dir, capsys):
    out, report, tok, d = lm_run_dir
    other = _write_corpus(d / "other.txt", OTHER, 12, 1)
    result, blocks = _eval(out, "--data", other)
    assert blocks.split == "all" and not blocks.as_report
    want = _whole_file_blocks(other, tok)
    assert torch.equal(blocks.blocks, want)  # the whole file, in order, packed as the job packs
    slim = load_slim(str(out / "slim")).eval()
    with torch.no_grad():
        losses = [float(slim(input_ids=b[None], labels=b[None]).loss) for b in want]  # HF's mean token loss
    direct = math.exp(sum(losses) / len(losses))
    assert math.isfinite(result["perplexity"]) and result["blocks"] == len(want)
    assert result["perplexity"] == pytest.approx(direct, rel=1e-4)
    assert result["perplexity"] != pytest.approx(report["perplexity"]["slim"], rel=1e-3)
    code, stdout, err = _cli(capsys, out, "--data", other)
    assert code == 0, err
    split, value, n = _printed(stdout)
    assert (split, n) == ("all", len(want)) and value == pytest.approx(direct, rel=1e-4)
    assert "report.json perplexity" not in stdout  # another file: no claim about the report's figure
    # --split test of another file: the job's split by document of that file, not the whole of it
    part, part_blocks = _eval(out, "--data", other, "--split", "test")
    assert part_blocks.split == "test" and 0 < part["blocks"] < len(want)


@pytest.mark.slow  # runs the language-model job once (module fixture)
def test_bad_input_is_one_clear_line(lm_run_dir, tmp_path, capsys):
    out, _, _, d = lm_run_dir
    code, _, err = _cli(capsys, out, "--data", tmp_path / "missing.txt")
    assert code == 2 and "missing.txt" in err and "data file not found" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, out, "--data", tmp_path)
    assert code == 2 and "is a folder" in err
    code, _, err = _cli(capsys, out, "--max-length", "16")  # a classifier's flag: refused, not ignored
    assert code == 2 and "--max-length" in err and "causal-lm" in err
    # a copy of the run whose data file is gone (moved since the run): named, with the way out
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    rep = json.loads((moved / "report.json").read_text())
    rep["resolved_options"]["data"] = str(tmp_path / "gone.txt")
    (moved / "report.json").write_text(json.dumps(rep))
    (moved / "options.json").unlink()
    code, _, err = _cli(capsys, moved)
    assert code == 2 and "gone.txt" in err and "--data" in err
    # the run's model.onnx deleted: the folder is no run to evaluate
    (moved / "model.onnx").unlink()
    code, _, err = _cli(capsys, moved)
    assert code == 2 and "no model.onnx" in err


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello\n")
    code, _, err = _cli(capsys, tmp_path)
    assert code == 2 and "is not a run folder" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, tmp_path / "nope")
    assert code == 2 and "not found" in err


def test_help_describes_every_task():
    text = " ".join(cli.build_parser("eval")._subparsers._group_actions[0].choices["eval"].format_help().split())
    for task, metric in (("sequence-classification", "accuracy"), ("token-classification", "entity-level F1"),
                         ("question-answering", "exact match and F1"), ("image-classification", "top-1"),
                         ("causal-lm", "perplexity")):
        assert task in text and metric in text, task
    assert ".txt" in text and "perplexity.slim" in text
