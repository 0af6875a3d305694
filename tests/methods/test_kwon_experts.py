"""Kwon et al. on mixtures of experts (leap_fx/methods/kwon/experts.py): whole experts chosen by the measured loss
without them (never fewer than top-k), the remaining experts' neuron costs scaled, equal widths per layer; through
the plugin API and strip, and through the language-model job to onnxruntime."""
import math

import pytest
import torch

from leap_fx.methods import build
from leap_fx.methods.kwon.config import KwonConfig
from leap_fx.methods.expert_widths import equal_widths, moe_layers
from leap_fx.methods.kwon.experts import choose_experts, scaled_costs, within_budget
from passes.analyze import analyze
from passes.strip import strip
from passes.strip.routing import excluded_experts, route_offsets
from passes.strip.verify import outputs, rel_diff
from tests.models_moe import MOE


def _lm_batches(model, n=4, seq=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (n, seq), generator=g)
    return [{"input_ids": ids[i:i + 2], "attention_mask": torch.ones(2, seq, dtype=torch.long),
             "labels": ids[i:i + 2]} for i in range(0, n, 2)]


def _lm_loss(model, batch):
    """A user's loss, summed over the batch: next-token loss for a causal LM, a hidden-state norm for a bare model."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    value = out.loss if "loss" in out else out.last_hidden_state.pow(2).mean()
    return value * batch["input_ids"].shape[0]


def test_expert_scores_are_the_measured_loss_without_each_expert_and_the_cheapest_go():
    model, inputs = MOE["mixtral"]()
    plan = analyze(model, inputs)
    batches = _lm_batches(model)
    removed, scores = choose_experts(model, plan, batches, _lm_loss, keep=0.5)
    with torch.no_grad():
        base = sum(float(_lm_loss(model, b)) for b in batches)
    for key, fam in moe_layers(plan).items():
        assert len(removed[key]) == fam.num_experts - 2  # 4 experts, keep half
        for e in range(fam.num_experts):  # each score: the loss with expert e out of routing, minus the dense loss
            with torch.no_grad(), excluded_experts(model, plan, {key: [e]}):
                alone = sum(float(_lm_loss(model, b)) for b in batches)
            assert scores[key][e] == pytest.approx(alone - base, abs=1e-5)
        kept = [e for e in range(fam.num_experts) if e not in removed[key]]
        assert max(scores[key][e] for e in removed[key]) <= min(scores[key][e] for e in kept)
    assert choose_experts(model, plan, batches, _lm_loss, keep=1.0) == ({}, {})
    dense, dense_inputs = MOE["mixtral"]()
    from tests.lm_models import llama_gqa_lm
    lm = llama_gqa_lm(vocab=model.config.vocab_size)
    with pytest.warns(UserWarning, match="no mixture-of-experts layer"):
        assert choose_experts(lm, analyze(lm, dense_inputs), batches, _lm_loss, keep=0.5) == ({}, {})


def test_never_fewer_experts_than_top_k():
    model, inputs = MOE["mixtral"]()  # top-2 of 4
    plan = analyze(model, inputs)
    removed, _ = choose_experts(model, plan, _lm_batches(model), _lm_loss, keep=0.1)
    assert all(len(gone) == 2 for gone in removed.values())


def test_remaining_experts_neurons_cost_more_and_live_experts_keep_equal_widths():
    model, inputs = MOE["qwen2_moe"]()  # 8 experts, a shared expert (a dense ffn family)
    plan = analyze(model, inputs)
    key, fam = next(iter(moe_layers(plan).items()))
    cost = {k: 1.0 for k, f in plan.families.items() if f.kind != "experts"}
    removed = {key: [0, 3]}
    scaled = scaled_costs(cost, plan, removed)
    assert fam.experts[0] not in scaled and fam.experts[3] not in scaled
    assert scaled[fam.experts[1]] == pytest.approx(8 / 6)
    dense = [k for k, f in plan.families.items() if f.kind == "ffn" and f.expert is None]
    assert dense and all(scaled[k] == 1.0 for k in dense)  # a shared expert runs on every token
    g = torch.Generator().manual_seed(0)
    live = [k for i, k in enumerate(fam.experts) if i not in (0, 3)]
    importance = {k: torch.rand(plan.families[k].width, generator=g) for k in live}
    keep = {k: (torch.rand(plan.families[k].width, generator=g) < p).float()
            for k, p in zip(live, (0.1, 0.3, 0.5, 0.7, 0.9, 0.95))}
    even = equal_widths(model, keep, importance, plan, removed)
    n = max(4, int(sum(float(v.sum()) for v in keep.values()) // len(keep)) // 4 * 4)  # float32: 4 neurons a step
    for k in live:  # the layer's kept neurons spread evenly, each expert's most important ones
        assert int(even[k].sum()) == n
        assert set(torch.nonzero(even[k]).flatten().tolist()) == set(torch.argsort(-importance[k])[:n].tolist())


def test_route_offsets_follow_a_masked_router_weight():
    model, inputs = MOE["mixtral"]()
    plan = analyze(model, inputs)
    build(KwonConfig(target="flops:0.5")).prepare(model, plan)  # the router weight is now a parametrization
    key = next(iter(moe_layers(plan)))
    with torch.no_grad():
        plain = model(**inputs).logits
        with route_offsets(model, plan, {key: torch.zeros(4)}) as missed:
            same = model(**inputs).logits
            assert missed() == []
        with excluded_experts(model, plan, {key: [1]}) as missed:
            other = model(**inputs).logits
            assert missed() == []
    assert torch.equal(plain, same) and not torch.allclose(plain, other)


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe"])
def test_kwon_removes_whole_experts_and_strip_realises_the_searched_flops(name):
    model, inputs = MOE[name]()
    plan = analyze(model, inputs)
    method = build(KwonConfig(target="flops:0.6", experts=0.5, cost_seq=12, cost_batch=1))
    method.prepare(model, plan)
    report = method.calibrate(model, _lm_batches(model), model_loss=_lm_loss)
    assert set(report["experts"]["removed"]) == set(moe_layers(plan))
    assert report["achieved"] <= 0.6 + 1e-9
    folded = method.finalize(model)
    with torch.no_grad(), excluded_experts(folded, plan, report["experts"]["removed"]):
        want = outputs(folded, inputs)
    rep = strip(folded, plan, inputs)  # in place; self-verified against the model with the experts routed around
    for key, fam in moe_layers(plan).items():
        assert len(rep.families[key]["kept"]) == fam.num_experts - len(report["experts"]["removed"][key])
        widths = {len(rep.families[k]["kept"]) for i, k in enumerate(fam.experts)
                  if i not in report["experts"]["removed"][key]}
        assert len(widths) == 1  # one fused tensor, one width: nothing masked-but-kept
    assert rep.max_rel_diff <= 1e-5 and rel_diff(outputs(folded, inputs), want) < 1e-4


def test_kwon_expert_errors_are_clear():
    with pytest.raises(ValueError, match="experts=0"):
        KwonConfig(target="flops:0.5", experts=0)
    with pytest.raises(ValueError, match="experts=1.5"):
        KwonConfig(target="flops:0.5", experts=1.5)
    assert KwonConfig(target="flops:0.5").experts == 1.0  # default: no expert removed


@pytest.mark.slow
def test_lm_job_on_a_tiny_mixture_of_experts_with_kwon_and_expert_removal(tmp_path):
    from leap_fx.run.job import run_prune
    from tests.lm_models import tiny_tokenizer
    from tests.run.test_lm_job import WORDS, _greedy_equal, _options
    import random
    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(70)) + "\n\n" for _ in range(50)))
    tok = tiny_tokenizer(str(tmp_path / "tok"))
    from transformers import MixtralConfig, MixtralForCausalLM
    torch.manual_seed(0)
    cfg = MixtralConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=256, use_cache=False, bos_token_id=1, eos_token_id=tok.eos_token_id,
                        pad_token_id=0)
    model = MixtralForCausalLM(cfg).eval()
    out = tmp_path / "run"
    rep = run_prune(_options(str(corpus), out, method="kwon", method_options={"experts": 0.5}), model=model,
                    tokenizer=tok)
    assert [r["kept"] for r in rep["structure"]["experts"]] == [2, 2]
    assert rep["train"]["calibration"]["experts"]["removed"].keys() == {r["family"] for r in rep["structure"]["experts"]}
    assert rep["flops"]["slim_fraction"] <= 0.6 + 0.02
    assert any("batched_mm" in n for n in rep["onnx"]["notes"])
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert _greedy_equal(out)[0]
    ppl = rep["perplexity"]
    assert math.isfinite(ppl["slim"]) and ppl["slim"] == pytest.approx(ppl["slim_torch"], rel=1e-4)


def test_within_budget_takes_the_excess_from_the_least_important_dense_neurons():
    model, inputs = MOE["qwen2_moe"]()
    plan = analyze(model, inputs)
    fam = next(iter(moe_layers(plan).values()))
    shared = next(k for k, f in plan.families.items() if f.kind == "ffn" and f.expert is None)
    routed = fam.experts[0]
    keep = {shared: torch.ones(plan.families[shared].width), routed: torch.ones(plan.families[routed].width)}
    importance = {shared: torch.arange(plan.families[shared].width, dtype=torch.float32).flip(0),
                  routed: torch.zeros(plan.families[routed].width)}
    cost = {shared: 2.0, routed: 1.0}
    total = 2.0 * plan.families[shared].width + plan.families[routed].width
    out = within_budget(keep, importance, cost, total - 5.0, plan)  # 5 over: three shared neurons (2 each) go
    assert torch.equal(out[routed], keep[routed])  # the routed expert's width is left as equal_widths made it
    gone = torch.nonzero(out[shared] == 0).flatten().tolist()
    assert gone == list(range(plan.families[shared].width - 3, plan.families[shared].width))  # least important
