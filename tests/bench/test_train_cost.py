"""bench/train_cost.py on a config-built tiny BERT: every variant timed by the loop's own step, memory counted."""
import pytest
import json

from bench import train_cost

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it


def test_tiny_run_times_every_variant_and_counts_mask_memory(tmp_path):
    out = tmp_path / "tc.json"
    result = train_cost.main(["--tiny", "--steps", "2", "--batch", "4", "--seq", "8", "--out", str(out)])
    saved = json.loads(out.read_text())
    rows = {r["variant"]: r for r in saved["rows"]}
    assert list(rows) == ["plain", "plain+kd", "leap-structured", "leap-hybrid", "leap-unstructured"]
    assert rows["plain"]["vs_plain"] == 1.0 and rows["plain+kd"]["vs_plain_kd"] == 1.0
    for r in rows.values():
        assert r["ms"] > 0 and len(saved["samples_ms"][r["variant"]]) == 2
    assert rows["plain"]["memory"]["mask_state_bytes"] == 0 and rows["plain"]["memory"]["step_masks_bytes"] == 0
    mem = rows["leap-structured"]["memory"]
    # 2 layers x (4 head scores + sigma, 64 neuron scores + sigma), fp32; AdamW keeps two moments of each
    assert mem["mask_state_bytes"] == 2 * (5 + 65) * 4 and mem["adam_moments_bytes"] == 2 * mem["mask_state_bytes"]
    # per step: a full-size mask and a masked copy of q, k, v, out (32x32) and up, down (64x32), 2 layers
    assert mem["step_masks_bytes"] == 2 * 2 * (4 * 32 * 32 + 2 * 64 * 32) * 4
    assert rows["leap-unstructured"]["memory"]["mask_state_bytes"] > mem["mask_state_bytes"]  # a score per weight
    assert result["rows"][0]["variant"] == "plain"
