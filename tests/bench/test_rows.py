"""bench/_rows.py: what a row bench keeps of its previous file, and its exit status."""
import json
from dataclasses import dataclass

import pytest

from bench._rows import exit_with, previous_rows


@dataclass
class _Row:
    name: str


def test_fresh_reruns_the_selected_rows_and_keeps_the_others(tmp_path):
    out = tmp_path / "b.json"
    out.write_text(json.dumps({"rows": [{"row": n, "status": "complete"} for n in ("dense", "a", "b")]}))
    assert set(previous_rows(str(out), [_Row("a")], fresh=False)) == {"dense", "a", "b"}
    assert set(previous_rows(str(out), [_Row("a")], fresh=True)) == {"dense", "b"}
    assert previous_rows(str(tmp_path / "none.json"), [_Row("a")], fresh=True) == {}


@pytest.mark.parametrize("statuses, code", [(["reference", "complete"], 0), (["complete", "failed"], 1)])
def test_a_reference_row_is_no_failure(statuses, code):
    with pytest.raises(SystemExit) as ex:
        exit_with(lambda: {"rows": [{"row": str(i), "status": s} for i, s in enumerate(statuses)]}, "x.py")
    assert ex.value.code == code
