"""passes/analyze/cost.py: per-granule FLOPs from the Plan agree with FlopCounterMode, dense and stripped."""
import pytest
import torch

from leap_fx.masks import zero_granules
from passes.analyze import analyze
from passes.analyze.cost import granule_flops, kept_flops
from passes.measure import count_flops
from passes.strip import strip
from tests import models


def _ids(batch, seq, vocab=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("name", ["bert", "llama_gqa", "gpt2"])
def test_granule_costs_sum_to_the_measured_encoder_flops(name):
    model, inputs = models.ALL[name]()
    plan = analyze(model, inputs)
    seq = 12
    x = _ids(1, seq)
    costs = granule_flops(model, plan, seq)
    measured = count_flops(model, x, plan)["encoder"]
    predicted = kept_flops(costs, {})
    assert predicted == pytest.approx(measured, rel=1e-6)  # every encoder matmul belongs to a family
    fam = plan.attention()[0]
    assert costs[fam.fqn].flops > 4 * seq * seq * fam.head_dim  # projections + scores + context


def test_predicted_flops_of_a_stripped_model_match_the_counter():
    model, inputs = models.bert()
    plan = analyze(model, inputs)
    seq = 10
    keep = {f.fqn: ([0, 2] if f.kind == "attention" else list(range(0, f.granules, 3))) for f in plan.families.values()}
    zero_granules(model, plan, keep)
    strip(model, plan, inputs)
    costs = granule_flops(models.bert()[0], plan, seq)
    predicted = kept_flops(costs, {k: len(v) for k, v in keep.items()})
    assert count_flops(model, _ids(1, seq), plan)["encoder"] == pytest.approx(predicted, rel=1e-6)
