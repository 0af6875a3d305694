"""bench/zoo.py on one or two architectures: the JSON, the README table, time limits, the shrinker."""
import pytest
import json

from bench import zoo
from bench.zoo_shrink import shrink

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it


def test_shrinker_makes_tiny_consistent_configs():
    for model_type in ("bert", "llama", "t5", "swin", "wav2vec2", "falcon"):
        cfg = shrink(model_type)
        width = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or cfg.embed_dim
        assert width <= 32 and getattr(cfg, "num_hidden_layers", 2) <= 2, model_type
    assert shrink("llama").num_key_value_heads == 4  # the default is plain multi-head: it stays so
    assert shrink("mistral").num_key_value_heads == 2  # grouped-query stays grouped
    assert shrink("swin").num_heads == [2, 4] and shrink("swin").depths == [1, 1]


def test_zoo_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "zoo.json"
    summary = zoo.main(["--only", "bert,funnel", "--workers", "2", "--out", str(out)])
    data = json.loads(out.read_text())
    bert, funnel = data["results"]
    assert bert["status"] == "PASS" and bert["parity"] and max(bert["parity"].values()) <= 1e-4
    assert funnel["stage"] == "build" and funnel["hint"].startswith("shrinker")
    assert summary["standard_attention"] == 1 and summary["pass_rate"] == 1.0
    text = capsys.readouterr().out
    assert "| bert | BertModel | 2/2 | 2/2 | PASS |" in text and "FAIL at build" in text and "wrote" in text
    assert bert["implied"] == {"attention": 2, "ffn": 2, "experts": 0} and not bert["silent"]
    assert summary["fail_by_stage"] == {"build": 1} and summary["silent_partial"] == []


def test_config_implied_families_and_shortfall():
    from bench.zoo_implied import implied, shortfall
    assert implied(shrink("t5")) == {"attention": 6, "ffn": 4, "experts": 0}  # decoder cross-attention counts
    moe = shrink("deepseek_v3")
    moe.first_k_dense_replace = 1
    assert implied(moe) == {"attention": 2, "ffn": 1, "experts": 4}
    assert shortfall({"attention": 2, "ffn": 1}, implied(moe)) == "ffn+experts 1/5"
    assert shortfall({"attention": 2, "ffn": 5}, implied(moe)) == ""  # experts reported as FFN families
    assert shortfall({"attention": 1, "ffn": 2}, implied(shrink("bert"))) == "attention 1/2"
    assert implied(shrink("convnext"))["attention"] == 0  # no head count anywhere: no attention implied
    ernie = implied(shrink("ernie4_5_moe"))  # MoE layers from moe_layer_start_index (layer 0 dense)
    assert ernie == {"attention": 2, "ffn": 1, "experts": 4}
    assert implied(shrink("albert"))["attention"] == 1  # one shared layer's weights: one family
    assert implied(shrink("doge"))["experts"] == 0  # is_moe=False: its expert fields are unused
    assert implied(shrink("glm4_moe_lite")) == {"attention": 2, "ffn": 1, "experts": 4}  # mlp_layer_types
    cfg = shrink("qwen3_next")
    cfg.layer_types = ["linear_attention", "full_attention"]
    assert implied(cfg)["attention"] == 1  # linear attention has no softmax heads to find
    assert implied(shrink("jamba")) == {"attention": 0, "ffn": 1, "experts": 4}  # expert_layer_period / offset
    cfg = shrink("nemotron_h")  # blocks mamba, moe, attention, mlp
    cfg.layers_block_type = ["mamba", "moe", "attention", "mlp"]
    assert implied(cfg) == {"attention": 1, "ffn": 1, "experts": cfg.n_routed_experts}
    assert implied(shrink("yoso"))["attention"] == 0  # attention by hashing: no softmax over scores


def test_recount_rereads_what_the_configs_imply(tmp_path):
    out = tmp_path / "zoo.json"
    stale = {"arch": "albert", "status": "PASS", "stage": "", "families": {"attention": 1, "ffn": 1,
                                                                          "attention_sites": 1},
             "implied": {"attention": 2, "ffn": 2, "experts": 0}, "shortfall": "attention 1/2", "silent": True}
    out.write_text(json.dumps({"environment": {}, "summary": {"swept": "1/1"}, "results": [stale]}))
    summary = zoo.main(["--recount", "--out", str(out)])
    (r,) = json.loads(out.read_text())["results"]
    assert r["implied"]["attention"] == 1 and r["shortfall"] == "" and not r["silent"]
    assert summary["silent_partial"] == [] and summary["swept"] == "1/1"


def test_a_model_whose_eager_forward_fails_is_a_harness_failure_and_still_counts():
    r = zoo.run_one("clip", lambda stage: None)  # CLIPModel also needs pixel_values: the inputs are not right
    assert r["stage"] == "build" and r["hint"].startswith("shrinker or example-input")
    passing = {"arch": "bert", "status": "PASS", "stage": "", "families": {"attention_sites": 2}}
    failed = {"arch": "x", "status": "FAIL", "stage": "trace", "families": {}, "implied": {"attention": 2}}
    summary = zoo.summarize([passing, failed, r])
    assert (summary["standard_attention"], summary["standard_attention_pass"]) == (2, 1)  # the trace failure counts


def test_a_stuck_architecture_is_named_with_its_stage():
    (r,) = zoo.sweep(["bert"], workers=1, timeout=0.5, progress=lambda line: None)
    from leap_fx.run.roundtrip import STAGES
    assert r["status"] == "FAIL" and r["reason"].startswith("no result after")
    assert r["stage"] in ("start", "build") + STAGES  # where it was when stopped (how far depends on the machine)


def test_the_json_is_rewritten_after_each_architecture_and_resume_keeps_it(tmp_path):
    out = tmp_path / "zoo.json"
    zoo.main(["--only", "funnel", "--workers", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["summary"]["swept"] == "1/1" and data["summary"]["complete"]
    data["results"][0]["marker"] = "kept"  # a result already there is not run again
    out.write_text(json.dumps(data))
    zoo.main(["--only", "funnel,bert", "--workers", "1", "--out", str(out), "--resume"])
    data = json.loads(out.read_text())
    assert [r["arch"] for r in data["results"]] == ["funnel", "bert"] and data["results"][0]["marker"] == "kept"
    assert data["summary"]["swept"] == "2/2" and data["summary"]["pass"] == 1
