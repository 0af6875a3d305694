"""The method protocol: one registry feeds every list, the mask carrier's owner protocol (real-valued and
deterministic masks fold exactly), layer-wise distillation as an objective, and the one-shot path
(l2-oneshot: prepare -> calibrate -> fold -> strip -> export)."""
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

import leap_fx
from leap_fx.masks import FixedMask, MaskOwner, fold, owners
from leap_fx.methods import register
from leap_fx.methods import registry as registry_mod
from leap_fx.methods.base import OneShotMethod, TrainedMethod
from leap_fx.methods.l2_oneshot.config import L2OneShotConfig
from leap_fx.methods.l2_oneshot.handler import allocate
from leap_fx.methods.registry import config_names as pruning_methods
from leap_fx.methods.registry import prepare_masks as prepare
from leap_fx.methods.request import check, method_config
from leap_fx.objectives.layer_kd import LayerKD
from leap_fx.objectives.outputs import Outputs
from leap_fx.run.job import run_prune
from leap_fx.spec.mask import MaskSpec
from leap_fx.spec.options import PruneOptions
from leap_fx.spec.train import TrainConfig
from leap_fx.train import train
from passes.analyze import analyze
from tests.conftest import bert_inputs, tiny_bert
from tests.helpers import tiny_options, toy_data, write_tiny_corpus


# -- one registry ---------------------------------------------------------------------------------
@dataclass
class _ToyConfig(MaskSpec):
    method: ClassVar[str] = "toy-oneshot"
    keep_first: int = leap_fx.spec.option(1, "keep the first granule of every owner")


@pytest.fixture
def toy_method():
    @register(_ToyConfig)
    class Toy(OneShotMethod):
        def make_owner(self, shape, key, device=None):
            return FixedMask(shape, key=key, device=device)

        def calibrate(self, model, batches=None, teacher=None):
            for o in owners(model).values():
                v = torch.zeros(o.grid_shape)
                v.view(-1)[: self.config.keep_first] = 1.0
                o.set(v)
            return {}
    yield Toy
    registry_mod._HANDLERS.pop(_ToyConfig)
    registry_mod._CONFIGS.pop("toy-oneshot")


def test_a_new_method_module_reaches_every_list(toy_method):
    from bench import accuracy
    from leap_fx.cli import prune
    assert "toy-oneshot" in pruning_methods()
    assert registry_mod.handler_class(registry_mod.config_class("toy-oneshot")) is toy_method
    opts = PruneOptions(method="toy-oneshot", method_options={"keep_first": 2}, granularity="structured")
    assert method_config(opts) == _ToyConfig(0.3, "structured", keep_first=2)
    with pytest.raises(ValueError, match="has no option"):
        check(PruneOptions(method="toy-oneshot", method_options={"temperature": 4.0}))
    assert prune.method_option_fields()["keep_first"][2] == ["toy-oneshot"]  # a CLI flag of its own
    assert any(r.method == "toy-oneshot" for r in accuracy.all_rows([0.5]))  # and a bench row
    with pytest.raises(ValueError, match="taken"):
        register(dataclasses.make_dataclass("Other", [], bases=(MaskSpec,), namespace={"method": "toy-oneshot"}))(
            toy_method)


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"method='lottery'.*leap"):
        check(PruneOptions(method="lottery"))
    assert {"leap", "magnitude", "movement", "l2-oneshot"} <= set(pruning_methods())
    assert "dense" in registry_mod.config_names(prunes_only=False) and "dense" not in pruning_methods()


# -- the owner protocol -----------------------------------------------------------------------------
def _structured(model, owner):
    plan = analyze(model, bert_inputs())
    prepare(model, MaskSpec(1.0, "structured"), plan, owner=owner)
    return plan


def test_real_valued_head_scales_fold_exactly_and_scale_the_head_once():
    model = tiny_bert()
    plan = _structured(model, lambda shape, key, dev: FixedMask(shape, key, dev))
    fam = plan.attention()[0]
    owners(model)[fam.fqn].set(torch.tensor([0.5, 0.0, 2.0, 1.0]))
    x = bert_inputs()
    with torch.no_grad():
        masked = model(**x).logits
    ref = tiny_bert()
    with torch.no_grad():  # by hand: scale the head's out-projection columns only (q/k/v gated by support)
        out = ref.get_submodule(fam.out.fqn).weight
        d = fam.head_dim
        for h, s in enumerate([0.5, 0.0, 2.0, 1.0]):
            out[:, h * d:(h + 1) * d] *= s
        for sl in (fam.q, fam.k, fam.v):
            w = ref.get_submodule(sl.fqn)
            w.weight[d:2 * d] = 0
            w.bias[d:2 * d] = 0
        hand = ref(**x).logits
    assert torch.allclose(masked, hand, atol=1e-6)
    fold(model)
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, masked, atol=1e-6)  # fold is exact for real values


class _Noisy(MaskOwner):
    """A stochastic owner: random training masks, a deterministic half-mask for eval and fold."""

    binary = False

    def __init__(self, shape, key="", device=None):
        super().__init__(shape, key, device)
        self.log_alpha = nn.Parameter(torch.zeros(self.grid_shape))

    def mask(self):
        return torch.rand(self.grid_shape) + 0 * self.log_alpha

    def deterministic_mask(self):
        m = torch.ones(self.grid_shape)
        m.view(-1)[::2] = 0.0
        return m


def test_eval_and_fold_use_the_deterministic_mask():
    model = tiny_bert()
    _structured(model, lambda shape, key, dev: _Noisy(shape, key, dev))
    x = bert_inputs()
    with torch.no_grad():
        model.train()
        a, b = model(**x).logits, model(**x).logits
        model.eval()
        c, d = model(**x).logits, model(**x).logits
    assert not torch.equal(a, b) and torch.equal(c, d)  # sampled in training, fixed in eval
    model.train()
    fold(model)
    with torch.no_grad():
        assert torch.allclose(model.eval()(**x).logits, c, atol=1e-6)


# -- layer-wise distillation as an objective --------------------------------------------------------
def test_layer_kd_is_zero_for_equal_models_and_positive_otherwise():
    h = [torch.randn(2, 5, 8) for _ in range(3)]
    logits = torch.randn(2, 3)
    labels = torch.tensor([0, 2])
    kd = LayerKD(alpha=0.5, beta=1.0)
    same = kd(Outputs(logits, h), Outputs(logits, [t.clone() for t in h]), {"labels": labels})
    assert same["hidden"].item() == 0.0 and same["kd"].item() == pytest.approx(0.0, abs=1e-6)
    other = kd(Outputs(logits, [t + 1 for t in h]), Outputs(logits, h), {"labels": labels})
    assert other["hidden"].item() == pytest.approx(1.0) and other["task"] > same["task"]
    assert kd.pairs(2, 4) == [(0, 0), (0, 1), (1, 2), (1, 3)]  # uniform map when depths differ


def test_the_loop_captures_hidden_states_for_a_layer_kd_method():
    @dataclass
    class _LayerKDConfig(MaskSpec):
        method: ClassVar[str] = "layer-kd-test"

    @register(_LayerKDConfig)
    class _LayerKDMethod(TrainedMethod):
        def make_owner(self, shape, key, device=None):
            return FixedMask(shape, key, device)

        def objective(self):
            return LayerKD(alpha=0.5, beta=10.0)
    try:
        torch.set_num_threads(1)
        res = train(tiny_bert(), tiny_bert(seed=1), toy_data(), None,
                    TrainConfig(max_steps=12, batch_size=16, lr=1e-3, log_every=1, alpha=0.5),
                    _LayerKDConfig(1.0, "structured"), quiet=True)
    finally:
        registry_mod._HANDLERS.pop(_LayerKDConfig)
        registry_mod._CONFIGS.pop("layer-kd-test")
    hidden = [r["hidden"] for r in res.history if r["type"] == "train"]
    assert len(hidden) == 12 and sum(hidden[-3:]) < 0.85 * sum(hidden[:3])  # the student moves towards the teacher


# -- the one-shot path: l2-oneshot ------------------------------------------------------------------
def test_allocate_keeps_the_best_granules_within_the_budget():
    scores = {"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([0.5, 5.0])}
    keep = allocate(scores, {"a": 10.0, "b": 20.0}, budget=30.0)
    assert keep["a"].tolist() == [1.0, 0.0, 0.0] and keep["b"].tolist() == [0.0, 1.0]  # each owner's best: 30
    keep = allocate(scores, {"a": 10.0, "b": 20.0}, budget=35.0)
    assert keep["a"].tolist() == [1.0, 0.0, 1.0] and keep["b"].tolist() == [0.0, 1.0]  # next best: a[2] (score 2)


def test_l2_oneshot_prunes_the_weakest_heads_to_the_target():
    model = tiny_bert()
    plan = analyze(model, bert_inputs())
    fam = plan.attention()[0]
    with torch.no_grad():  # head 1 of layer 0 is made the weakest by far
        for sl in fam.slices:
            w = model.get_submodule(sl.fqn).weight
            w.narrow(sl.axis, sl.start + fam.head_dim, fam.head_dim).mul_(1e-3)
    method = leap_fx.build_method(L2OneShotConfig(0.5))
    method.prepare(model, plan)
    rep = method.calibrate(model)
    assert owners(model)[fam.fqn].hard_mask()[1] == 0
    assert 0.5 <= rep["density"] <= 0.5 + 0.05
    assert leap_fx.densities(model)  # 0/1 masks: measured like every method's


@pytest.mark.slow
def test_l2_oneshot_runs_the_whole_job_without_training(tmp_path):
    path, tok = write_tiny_corpus(str(tmp_path))
    rep = run_prune(tiny_options(path, tmp_path / "o", method="l2-oneshot", target_density=0.5),
                    model=tiny_bert(), tokenizer=tok)
    assert rep["method"] == {"name": "l2-oneshot", "kind": "one-shot", "log_keys": []}
    assert rep["train"]["steps"] == 0 and not (tmp_path / "o" / "train").exists()  # no loop ran
    assert rep["parameters"]["slim"] < rep["parameters"]["dense"]
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4 and (tmp_path / "o" / "model.onnx").exists()
    assert rep["density"]["achieved"] == pytest.approx(0.5, abs=0.05)
    assert "curves" not in rep["plots"] and (tmp_path / "o" / "density.png").exists()


def test_an_objectives_own_parameters_train_and_survive_a_resume(tmp_path):
    """An objective is a module: its parameters get an optimizer group and travel in checkpoints."""
    from leap_fx.objectives.logit_kd import LogitKD

    class _Scaled(LogitKD):
        def __init__(self):
            super().__init__(alpha=0.0)
            self.scale = nn.Parameter(torch.tensor(1.0))

        def forward(self, out, teacher, batch):
            terms = super().forward(Outputs(out.logits * self.scale, None), teacher, batch)
            return terms

    @dataclass
    class _ScaledConfig(MaskSpec):
        method: ClassVar[str] = "scaled-objective-test"

    @register(_ScaledConfig)
    class _ScaledMethod(TrainedMethod):
        def make_owner(self, shape, key, device=None):
            return FixedMask(shape, key, device)

        def objective(self):
            return _Scaled()
    try:
        torch.set_num_threads(1)
        cfg = TrainConfig(max_steps=8, batch_size=16, lr=1e-2, checkpoint_every=3, alpha=0.0)
        runs = {}
        for name, stop in (("full", None), ("cut", 5), ("cut", None)):
            method = leap_fx.build_method(_ScaledConfig(1.0), 8, cfg)
            res = train(tiny_bert(), None, toy_data(), None, cfg, method, out_dir=str(tmp_path / name), quiet=True,
                        stop_after=stop)
            groups = {g["name"]: g["params"] for g in method.param_groups(res.model, 1e-3)}
            runs[name] = (float(method.objective_fn.scale), groups)
    finally:
        registry_mod._HANDLERS.pop(_ScaledConfig)
        registry_mod._CONFIGS.pop("scaled-objective-test")
    full_scale, groups = runs["full"]
    assert groups["objective"] == [method.objective_fn.scale]  # an optimizer group of its own
    assert full_scale != 1.0  # trained
    assert runs["cut"][0] == pytest.approx(full_scale, abs=1e-6)  # resumed from step 3 with its own value
