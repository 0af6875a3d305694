"""Question-answering data: rows ``{"id", "question", "context", "answers": [{"text", "answer_start"}]}``.

- ``.json``: the SQuAD file layout, ``{"data": [{"paragraphs": [{"context", "qas": [{"id", "question",
  "answers": [{"text", "answer_start"}]}]}]}]}``; a question is named by its JSON path and the line of its id;
- ``.jsonl``: one question per line with ``id`` (optional: the line), ``question``, ``context`` and
  ``answers`` as a list of ``{"text", "answer_start"}`` or as ``{"text": [...], "answer_start": [...]}``
  (the Hugging Face datasets layout).

A question is invalid (an error naming file and line, or skipped with ``--drop-invalid``) when its
question or context is empty, it has no answer (SQuAD v1.1: every question is answerable), an answer's
``answer_start`` is not an integer, or the context does not hold the answer text at ``answer_start``.
Ids must be unique within a file.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from leap_fx.data.files import text_of
from leap_fx.tasks.rows import Rows, checked_rows, jsonl_rows, require_file

__all__ = ["read_qa_file", "parse_question", "answers_of"]


def answers_of(raw) -> tuple:
    """``([{"text", "answer_start"}], None)`` from either layout, or ``(None, why)``."""
    if isinstance(raw, dict) and isinstance(raw.get("text"), list) and isinstance(raw.get("answer_start"), list):
        if len(raw["text"]) != len(raw["answer_start"]):
            return None, f"answers has {len(raw['text'])} texts but {len(raw['answer_start'])} answer_start values"
        raw = [{"text": t, "answer_start": s} for t, s in zip(raw["text"], raw["answer_start"])]
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        return None, "answers must be a list of {\"text\", \"answer_start\"} objects"
    return raw, None


def parse_question(row: dict) -> tuple:
    """``(question dict, None)`` or ``(None, why the row is invalid)`` (module doc)."""
    for key in ("question", "context"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            return None, f"{key!r} is missing, empty or not text"
    answers, why = answers_of(row.get("answers"))
    if why:
        return None, why
    if not answers:
        return None, "no answer: extractive QA (SQuAD v1.1) needs at least one answer per question"
    context = row["context"]
    for a in answers:
        text, start = a.get("text"), a.get("answer_start")
        if not isinstance(text, str) or not text.strip():
            return None, f"an answer text is missing or empty ({text!r})"
        if isinstance(start, bool) or not isinstance(start, int):
            return None, f"answer_start of {text!r} must be an integer character offset, got {start!r}"
        found = context[start:start + len(text)] if 0 <= start else ""
        if found != text:
            return None, (f"the context does not hold the answer {text!r} at answer_start {start} (it has "
                          f"{found!r} there); fix answer_start")
    qid = row.get("id")
    return {"id": str(qid) if qid is not None else None, "question": row["question"].strip(), "context": context,
            "answers": [{"text": a["text"], "answer_start": a["answer_start"]} for a in answers]}, None


def _line_of(text: str, needle: str, default: int) -> int:
    at = text.find(needle)
    return text[:at].count("\n") + 1 if at >= 0 else default


def squad_rows(path: str) -> Iterable[tuple[object, object]]:
    """``(where, row or why not)`` for every question of a SQuAD-layout ``.json`` file."""
    text = text_of(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); a .json file must hold the SQuAD "
                         f"layout, one object (use .jsonl for one question per line)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError(f"{path}: expected the SQuAD layout {{\"data\": [{{\"paragraphs\": [...]}}]}}")
    for i, article in enumerate(doc["data"]):
        for j, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            qas = para.get("qas", []) if isinstance(para, dict) else []
            for k, qa in enumerate(qas):
                where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                if not isinstance(qa, dict):
                    yield where, "a question must be a JSON object"
                    continue
                line = _line_of(text, json.dumps(qa.get("id")), 1) if qa.get("id") is not None else 1
                yield f"{line} ({where})", {**qa, "context": para.get("context")}


def _unique(rows: Rows, path: str) -> Rows:
    seen = set()
    for n, r in enumerate(rows.rows):
        if r["id"] is None:
            r["id"] = f"{os.path.basename(path)}#{n}"
        if r["id"] in seen:
            raise ValueError(f"{path}: question id {r['id']!r} appears more than once; ids must be unique")
        seen.add(r["id"])
    return rows


def read_qa_file(path: str, drop_invalid: bool = False) -> Rows:
    """The questions of a SQuAD-style ``.json`` or a ``.jsonl`` file (module doc), each checked."""
    require_file(path, "a SQuAD-style .json or a .jsonl file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        return _unique(checked_rows(path, squad_rows(path), parse_question, drop_invalid), path)
    if ext == ".jsonl":
        return _unique(checked_rows(path, jsonl_rows(path), parse_question, drop_invalid), path)
    raise ValueError(f"unsupported question-answering file {path!r}: use a SQuAD-style .json or a .jsonl file")
