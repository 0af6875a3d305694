"""Extractive QA: SQuAD-style .json / .jsonl reading with malformed rows named by file and line, windows
with a doc stride (labels map back to the answer), SQuAD EM / F1 against hand-computed cases (the
official normalisation), best-span post-processing, and one CLI run end to end (Kwon: one-shot; two ONNX
outputs, onnxruntime == PyTorch, ``leap-fx eval`` == the report)."""
import json

import numpy as np
import pytest

from leap_fx.tasks.question_answering.data import read_qa_file
from leap_fx.tasks.question_answering.encode import encode_questions
from leap_fx.tasks.question_answering.metrics import normalize_answer, squad_scores
from leap_fx.tasks.question_answering.postprocess import best_spans
from passes.export.metadata import read_metadata
from tests.tasks.builders import qa_rows, text_model_folder, tokenizer, write_jsonl
from tests.tasks.conftest import cli, eval_metric, prune


def _squad(rows):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"],
                                           "answers": [{"text": t, "answer_start": s} for t, s in
                                                       zip(r["answers"]["text"], r["answers"]["answer_start"])]}]}
        for r in rows]}]}


def test_squad_json_and_jsonl_read_the_same_questions(tmp_path):
    rows = qa_rows(6)
    a = read_qa_file(write_jsonl(tmp_path / "q.jsonl", rows))
    (tmp_path / "q.json").write_text(json.dumps(_squad(rows), indent=1))
    b = read_qa_file(str(tmp_path / "q.json"))
    assert a.rows == b.rows and a.rows[0]["answers"][0]["text"] in a.rows[0]["context"]


@pytest.mark.parametrize("change, needle", [
    (dict(answers={"text": ["rome"], "answer_start": [0]}), "does not hold the answer 'rome' at answer_start 0"),
    (dict(answers={"text": [], "answer_start": []}), "no answer"),
    (dict(question="  "), "'question' is missing"),
    (dict(answers={"text": ["x"], "answer_start": ["3"]}), "must be an integer"),
])
def test_malformed_questions_name_file_and_line(tmp_path, change, needle):
    rows = qa_rows(3)
    rows[1] = {**rows[1], **change}
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=needle) as err:
        read_qa_file(path)
    assert f"{path}:2:" in str(err.value)
    assert len(read_qa_file(path, drop_invalid=True)) == 2


def test_squad_json_error_names_the_line_of_the_question(tmp_path):
    rows = qa_rows(3)
    doc = _squad(rows)
    doc["data"][0]["paragraphs"][2]["qas"][0]["answers"][0]["answer_start"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc, indent=1))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if '"q2"' in t)
    with pytest.raises(ValueError, match=rf"bad.json:{line} \(data\[0\].paragraphs\[2\].qas\[0\]\)"):
        read_qa_file(str(path))
    dup = _squad([rows[0], rows[0]])
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    with pytest.raises(ValueError, match="appears more than once"):
        read_qa_file(str(tmp_path / "dup.json"))


def test_long_contexts_become_strided_windows_whose_labels_hold_the_answer():
    tok = tokenizer()
    rows = [{**r, "answers": [{"text": t, "answer_start": s} for t, s in
                              zip(r["answers"]["text"], r["answers"]["answer_start"])]} for r in qa_rows(4)]
    tensors, meta = encode_questions(tok, rows, max_length=14, stride=4)
    n = len(meta["window_question"])
    assert n > len(rows) and sorted(set(meta["window_question"])) == list(range(len(rows)))
    found = set()
    for w, q in enumerate(meta["window_question"]):
        s, e = tensors["labels"][w].tolist()
        if (s, e) != (0, 0):
            offs = meta["offsets"][w]
            assert rows[q]["context"][offs[s][0]:offs[e][1]] == rows[q]["answers"][0]["text"]
            found.add(q)
        ids = tensors["input_ids"][w].tolist()
        assert ids[0] == tok.cls_token_id and len(ids) == 14
    assert found == set(range(len(rows)))  # every answer is wholly inside some window
    with pytest.raises(ValueError, match="doc_stride"):
        encode_questions(tok, rows, max_length=14, stride=10)


def test_squad_metric_matches_hand_computation():
    assert normalize_answer("  The Big, Apple.") == "big apple"
    assert normalize_answer("an apple a day") == "apple day"
    got = squad_scores({"a": "The Big Apple", "b": "big red apple", "c": "nothing"},
                       {"a": ["big apple"], "b": ["the big apple", "red"], "c": ["lima"], "d": ["x"]})
    # a: EM 1, F1 1; b: EM 0, F1 max(2*(2/3*1)/(2/3+1)=0.8, 2*(1/3*1)/(4/3)=0.5)=0.8; c: 0, 0; d: missing 0, 0
    assert got == {"exact_match": 25.0, "f1": pytest.approx(100 * 1.8 / 4), "questions": 4}


def test_best_span_stays_in_the_context_and_joins_windows():
    offsets = [[None, None, (0, 4), (5, 9), None], [None, None, (5, 9), (10, 14), None]]
    start = np.array([[9.0, 0, 1, 0, 0], [0, 0, 0, 5, 0]])  # 9.0 at [CLS]: never an answer
    end = np.array([[9.0, 0, 0, 2, 0], [0, 0, 0, 4, 0]])
    # window 0: best start 2 + end 3 = 3 -> "anna lima"[0:9]; window 1: start 3 + end 3 = 9 -> context[10:14]
    assert best_spans(start, end, [0, 0], offsets, ["anna lima oslo"]) == ["oslo"]
    # one-token answers only: (2, 2) scores 1 + 0, (3, 3) scores 0 + 2 -> "lima"
    assert best_spans(start[:1], end[:1], [0], offsets[:1], ["anna lima oslo"], max_answer_length=1) == ["lima"]
    assert best_spans(np.zeros((1, 5)), np.zeros((1, 5)), [0], [[None] * 5], ["x"]) == [""]


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa")
    data = write_jsonl(folder / "qa.jsonl", qa_rows(150))
    model = text_model_folder(folder, "qa")
    out = folder / "run"
    report, res = prune(out, "--task", "question-answering", "--model", model, "--data", data, "--method", "kwon",
                        "--max-length", "20", "--doc-stride", "6")
    return out, report, res


@pytest.mark.slow
def test_cli_run_end_to_end(qa_run):
    out, report, res = qa_run
    assert report["task"] == "question-answering" and report["method"]["kind"] == "one-shot"
    assert report["data"]["windows"]["train"] > report["data"]["train"]  # 20-token windows: the stride is used
    assert report["onnx"]["outputs"] == ["start_logits", "end_logits"] and report["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert report["parameters"]["slim"] < report["parameters"]["dense"]
    pruned = report["metrics"]["pruned"]
    assert pruned["validation"]["f1"] == pytest.approx(pruned["validation_torch"]["f1"], abs=1e-9)
    meta = read_metadata(str(out / "model.onnx"))
    assert (meta["task"], meta["max_length"], meta["doc_stride"], meta["max_answer_length"]) == \
        ("question-answering", 20, 6, 30)
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["start_logits", "end_logits"]


@pytest.mark.slow
def test_eval_equals_the_report(qa_run):
    out, report, _ = qa_run
    split, f1, n = eval_metric(cli("eval", str(out)), "f1")
    assert split == "test" and n == report["data"]["test"]
    assert f1 == pytest.approx(report["metrics"]["pruned"]["test"]["f1"], abs=1e-4)
