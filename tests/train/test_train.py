"""Training: schedules (Eq. 1), KD (Eq. 8), the loop (LEAP, resume, NaN), teacher cache, eval, HF Trainer."""
import json
import math
import os

import pytest
import torch

import leap_fx
from leap_fx.methods.leap.handler import auto_mask_lr
from leap_fx.methods.scheduled.handler import cubic_density
from leap_fx.objectives.logit_kd import LogitKD, kd_loss
from leap_fx.objectives.outputs import Outputs
from leap_fx.run.evaluate import onnx_accuracy
from leap_fx.spec.train import TrainConfig
from leap_fx.train import accuracy, train, warmup_linear
from leap_fx.train.checkpoint import read_checkpoint
from tests.conftest import tiny_bert
from tests.helpers import _tiny_model_dir, owners_state, toy_data


# -- schedules -----------------------------------------------------------------------------------
def test_cubic_schedule_hand_values():
    kw = dict(total_steps=100, final_density=0.2, initial_density=1.0, warmup_steps=10, cooldown_steps=20)
    assert cubic_density(0, **kw) == 1.0 and cubic_density(9, **kw) == 1.0      # t < t0
    assert cubic_density(10, **kw) == pytest.approx(1.0)                          # ramp starts at d0
    assert cubic_density(45, **kw) == pytest.approx(0.2 + 0.8 * 0.5 ** 3)        # midpoint: 0.3
    assert cubic_density(79, **kw) == pytest.approx(0.2 + 0.8 / 70 ** 3)
    assert cubic_density(80, **kw) == 0.2 and cubic_density(100, **kw) == 0.2    # cool-down
    values = [cubic_density(t, **kw) for t in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))                       # monotone
    with pytest.raises(ValueError, match="smaller than total_steps"):
        cubic_density(0, 10, 0.5, warmup_steps=5, cooldown_steps=5)


def test_warmup_linear_decay():
    assert warmup_linear(0, 10, 100) == 0.0 and warmup_linear(5, 10, 100) == 0.5
    assert warmup_linear(10, 10, 100) == 1.0 and warmup_linear(55, 10, 100) == pytest.approx(0.5)
    assert warmup_linear(100, 10, 100) == 0.0


def test_kd_loss_matches_definition():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    tau = 3.0
    p_t, p_s = torch.softmax(t / tau, -1), torch.softmax(s / tau, -1)
    manual = (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * tau ** 2
    assert kd_loss(s, t, tau).item() == pytest.approx(manual.item(), rel=1e-5)
    assert kd_loss(t, t, tau).item() == pytest.approx(0.0, abs=1e-6)
    labels = torch.tensor([0, 1, 2, 0])
    parts = LogitKD(alpha=0.9, temperature=tau)(Outputs(s), Outputs(t), {"labels": labels})
    ce = torch.nn.functional.cross_entropy(s, labels)
    assert parts["task"].item() == pytest.approx((0.1 * ce + 0.9 * manual).item(), rel=1e-5)
    assert LogitKD()(Outputs(s), None, {"labels": labels})["task"].item() == pytest.approx(ce.item())


def test_train_config_json_round_trip(tmp_path):
    cfg = TrainConfig(epochs=3, max_steps=7, lr=0.5)
    path = str(tmp_path / "c.json")
    cfg.to_json(path)
    assert TrainConfig.from_json(path) == cfg and TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"epoch": 1})
    with pytest.raises(ValueError, match=r"TrainConfig.batch_size must be int, got str"):
        TrainConfig.from_dict({"batch_size": "16"})
    with pytest.raises(ValueError, match="unknown method 'lottery'"):
        leap_fx.methods.config_class("lottery")


def test_auto_mask_lr_scales_with_run_length():
    cfg = leap_fx.LeapConfig(target_density=0.3)
    short, long = auto_mask_lr(cfg, 600), auto_mask_lr(cfg, 600_000)
    assert short > 1.0 and long == 1e-2  # never below the paper's 1e-2


# -- the loop ------------------------------------------------------------------------------------
def _leap_run(out_dir=None, **kw):
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**dict(epochs=100, max_steps=120, batch_size=16, lr=1e-3,
                                log_every=10, eval_every=40), **kw.pop("cfg", {})})
    model = tiny_bert()
    res = train(model, tiny_bert(seed=1), toy_data(), toy_data(64, seed=1), cfg,
                leap_fx.LeapConfig(target_density=0.3, granularity="hybrid", block_size=8),
                out_dir=out_dir, quiet=True, **kw)
    return model, res


@pytest.mark.slow
def test_leap_reaches_target_and_loss_decreases():
    model, res = _leap_run()
    logs = [r for r in res.history if r["type"] == "train"]
    assert logs[0]["R"] > 0.95 and logs[-1]["R"] < 0.32          # R(sigma) moved to the target
    assert logs[-1]["loss"] < 0.1 * logs[0]["loss"]             # lambda * L_reg no longer dominates
    assert 0.29 <= res.metrics["density"] <= 0.36                 # measured mask density
    assert {"density_attention", "density_ffn", "lambda", "L_reg", "kd", "ce"} <= set(logs[-1])
    assert any(r["type"] == "eval" for r in res.history)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())  # folded
    w = model.bert.encoder.layer[0].intermediate.dense.weight
    assert 0.2 < float((w != 0).float().mean()) < 0.5


@pytest.mark.slow
def test_checkpoint_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = dict(max_steps=12, checkpoint_every=4, log_every=1, eval_every=100, fold=False)
    full, res_full = _leap_run(str(tmp_path / "a"), cfg=cfg)
    part, res_part = _leap_run(str(tmp_path / "b"), cfg=cfg, stop_after=7)
    assert res_part.metrics["step"] == 7
    assert read_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["step"] == 4
    resumed, res_resumed = _leap_run(str(tmp_path / "b"), cfg=cfg)
    a, b = owners_state(full), owners_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k][0], b[k][0], atol=1e-6) and torch.allclose(a[k][1], b[k][1], atol=1e-6)
    losses = lambda h: [(r["step"], round(r["loss"], 5)) for r in h if r["type"] == "train"]  # noqa: E731
    assert losses(res_full.history) == losses(res_resumed.history)
    with open(tmp_path / "b" / "history.jsonl") as fh:
        steps = [json.loads(line)["step"] for line in fh if '"train"' in line]
    assert steps == list(range(1, 13))  # steps 5..7 of the interrupted run were dropped, not duplicated
    assert a[next(iter(a))][0].item() < 5 * 32  # sigma actually moved
    with pytest.raises(ValueError, match="other settings.*lr"):
        _leap_run(str(tmp_path / "b"), cfg={**cfg, "lr": 5e-4})


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    model = tiny_bert()
    calls = {"n": 0}

    def poison(module, args, output):
        if not module.training:  # plan analysis traces the model in eval mode: not a training step
            return output
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 3 else output

    model.classifier.register_forward_hook(poison)
    cfg = TrainConfig(max_steps=10, batch_size=16, checkpoint_every=1, eval_every=100)
    with pytest.raises(FloatingPointError, match=r"at step 3\b.*checkpoint"):
        train(model, None, toy_data(), None, cfg, leap_fx.LeapConfig(target_density=0.5),
              out_dir=str(tmp_path), quiet=True)
    assert read_checkpoint(str(tmp_path / "checkpoint.pt"))["step"] == 2


def test_dense_training_learns_and_accuracy_helper():
    torch.set_num_threads(1)
    model = tiny_bert()
    data = toy_data(256)
    before = accuracy(model, data)
    res = train(model, None, data, data, TrainConfig(epochs=6, batch_size=16, lr=1e-3, alpha=0.0), quiet=True)
    assert res.metrics["val_accuracy"] == pytest.approx(accuracy(model, data))
    assert res.metrics["val_accuracy"] > max(0.7, before + 0.1)


def test_onnx_accuracy_through_onnxruntime(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    table = np.random.default_rng(0).standard_normal((100, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["e"]),
         helper.make_node("ReduceSum", ["e", "axes"], ["logits"], keepdims=0)],
        "toy", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], np.int64), "axes")])
    path = str(tmp_path / "toy.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    data = toy_data(70)
    expected = float((table[data["input_ids"].numpy()].sum(1).argmax(-1) == data["labels"].numpy()).mean())
    assert onnx_accuracy(path, data, batch_size=16) == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs inputs"):
        onnx_accuracy(path, {"labels": data["labels"]})


# -- teacher cache -------------------------------------------------------------------------------


def test_teacher_is_trained_once_then_loaded_from_cache(tmp_path):
    from leap_fx.data import DatasetSplits, TextSplit
    from leap_fx.train.teacher import train_teacher
    g = torch.Generator().manual_seed(0)
    pos, neg = ["good", "great", "fun"], ["bad", "dull", "awful"]

    def split(n):
        idx = torch.randint(0, 3, (n, 2), generator=g).tolist()
        y = torch.randint(0, 2, (n,), generator=g).tolist()
        texts = [f"the {(pos if c else neg)[i]} film {(pos if c else neg)[j]}" for (i, j), c in zip(idx, y)]
        return TextSplit(texts, y, ["neg", "pos"])

    data = DatasetSplits(split(96), split(32), split(32), ["neg", "pos"])
    cfg = TrainConfig(epochs=10, batch_size=16, lr=2e-3, alpha=0.0)
    model_dir, cache = _tiny_model_dir(tmp_path), str(tmp_path / "cache")
    first = train_teacher(model_dir, data, config=cfg, max_length=8, cache_dir=cache, quiet=True)
    assert not first.cached and os.path.isfile(os.path.join(first.path, "teacher.json"))
    assert first.metrics["val_accuracy"] > 0.8
    second = train_teacher(model_dir, data, config=cfg, max_length=8, cache_dir=cache, quiet=True)
    assert second.cached and second.path == first.path and second.metrics == first.metrics
    batch = {k: v[:8] for k, v in data.validation.features.items() if k != "labels"}
    assert torch.allclose(first.model(**batch).logits, second.model(**batch).logits, atol=1e-5)
    third = train_teacher(model_dir, data, config=TrainConfig(epochs=1, batch_size=16),
                          max_length=8, cache_dir=cache, use_cache=True, quiet=True)
    assert not third.cached and third.path != first.path  # other hyperparameters -> other entry
    assert not [p for p in os.listdir(cache) if p.startswith(".tmp")]


# -- Hugging Face Trainer ------------------------------------------------------------------------
def _method_trainer(tmp_path, config):
    from transformers import TrainingArguments

    from leap_fx.train.hf import MethodTrainer, TensorDictDataset
    torch.set_num_threads(1)
    model = tiny_bert()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=16,
                             learning_rate=1e-3, logging_steps=1, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True, remove_unused_columns=False, seed=0)
    trainer = MethodTrainer(model=model, args=args, train_dataset=TensorDictDataset(toy_data()),
                            method_config=config, teacher=tiny_bert(seed=1))
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert len(logs) == 5 and all(math.isfinite(r["loss"]) for r in logs)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())  # finalized
    return trainer, logs


def test_method_trainer_runs_leap_with_every_config_field(tmp_path):
    """A stock ``Trainer`` drives LEAP through the protocol: its mask LR and sigma beta1 reach the optimiser
    (the old ``LeapTrainer`` ignored both), R falls toward the target, the masks are folded at the end."""
    cfg = leap_fx.LeapConfig(target_density=0.3, mask_lr=0.5, sigma_beta1=0.5)
    trainer, logs = _method_trainer(tmp_path, cfg)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"weights", "masks", "sigma"}
    assert groups["masks"]["initial_lr"] == pytest.approx(0.5) and groups["weights"]["initial_lr"] == 1e-3
    assert groups["sigma"]["betas"][0] == 0.5
    assert {"R", "L_reg", "lambda", "kd", "ce"} <= set(logs[-1]) and logs[-1]["R"] < logs[0]["R"] <= 1.0


def test_method_trainer_runs_cofi_with_its_lagrangian(tmp_path):
    """The same Trainer drives CoFi: its Lagrange multipliers are optimiser groups (ascended), its phases
    advance on the Trainer's steps, its hidden-state distillation is logged."""
    from leap_fx.methods.cofi.config import CofiConfig
    trainer, logs = _method_trainer(tmp_path, CofiConfig(target="density:0.5"))
    names = [g["name"] for g in trainer.optimizer.param_groups]
    assert {"weights", "masks", "lambda_1", "lambda_2"} <= set(names)
    assert logs[0]["phase"] == 1 and logs[-1]["phase"] == 2 and "hidden" in logs[-1]
    assert any(r.get("lambda_1", 0) > 0 for r in logs)  # the multipliers moved
