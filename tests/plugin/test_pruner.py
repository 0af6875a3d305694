"""Every method through the plugin API (``leap_fx.Pruner``) on a model the job does not know (a tiny ViT
image classifier) with a user-supplied ``loss_fn(model, batch)``: trained methods in a hand-written loop
(``step``) or the ready loop (``fit``), one-shot methods by ``calibrate``; then ``finish`` / ``strip`` /
``export``. And the safeguards: a mask learning rate that cannot reach the target is refused before
training (LEAP's ``mask_lr``, CoFi's ``gate_lr``), a missed target or nothing removed is a
``PruningWarning`` at fold / strip, and what ``finish`` reports as achieved is what the stripped model
measures (``passes.measure.count_flops``)."""
import contextlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import leap_fx
import leap_fx.plugin.pruner as pruner_module
from leap_fx.masks.lifecycle import owners
from leap_fx.methods.kwon.fisher import mask_gradients
from leap_fx.methods.random import RandomConfig
from leap_fx.methods.registry import build, config_names
from leap_fx.objectives.task_loss import ClassificationLoss
from leap_fx.plugin.safeguards import MISS, check_mask_lr, cofi_floor
from passes.measure import count_flops

COVERED = {"cofi", "kwon", "l2-oneshot", "leap", "magnitude", "movement", "random", "sparsebert"}  # tests below


def tiny_vit(seed=0):
    from transformers import ViTConfig, ViTForImageClassification
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=3, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    return ViTForImageClassification(cfg)


def batches(n=8, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        y = torch.randint(0, 3, (size,), generator=g)
        out.append({"pixel_values": torch.randn(size, 3, 16, 16, generator=g) + y.view(-1, 1, 1, 1).float(),
                    "labels": y})
    return out


def loss_fn(model, batch):
    return F.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])


EXAMPLE = {"pixel_values": batches(1, 2)[0]["pixel_values"]}


def run_loop(pruner, data, steps, lr=1e-3):
    opt = pruner.optimizer(lr)
    return [pruner.step(data[i % len(data)], opt) for i in range(steps)]


def strip_and_export(pruner, tmp_path) -> float:
    """After ``finish``: strip removes parameters without changing the logits (no PruningWarning), the ONNX
    file gives the same logits in onnxruntime; returns the stripped blocks' measured FLOPs fraction."""
    import onnxruntime as ort
    with torch.no_grad():
        folded = pruner.model(**EXAMPLE).logits
    with warnings.catch_warnings():
        warnings.simplefilter("error", leap_fx.PruningWarning)
        report = pruner.strip()
    assert report.params_after < report.params_before
    with torch.no_grad():
        assert (pruner.model(**EXAMPLE).logits - folded).abs().max() <= 1e-5
    export = pruner.export(str(tmp_path / "slim.onnx"))
    got = ort.InferenceSession(export.path, providers=["CPUExecutionProvider"]).run(
        None, {"pixel_values": EXAMPLE["pixel_values"].numpy()})[0]
    assert np.abs(got - folded.numpy()).max() <= 1e-4
    one = {"pixel_values": EXAMPLE["pixel_values"][:1]}
    return count_flops(pruner.model, one, pruner.plan)["encoder"] / count_flops(tiny_vit(), one, pruner.plan)["encoder"]


def test_every_registered_method_has_a_plugin_test_here():
    assert set(config_names()) == COVERED


def test_leap_in_a_hand_written_loop_reaches_the_target_and_strips(tmp_path):
    model = tiny_vit()
    pruner = leap_fx.Pruner(model, leap_fx.LeapConfig(target="flops:0.5", granularity="structured"),
                            example_inputs=EXAMPLE, loss_fn=loss_fn, steps=60)
    assert pruner.config.cost_seq == 17  # 16 patches + the class token, measured
    logs = run_loop(pruner, batches(), 60)
    assert logs[-1]["R"] < 0.55 and "penalty" in logs[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", leap_fx.PruningWarning)
        check = pruner.finish()
        report = pruner.strip()
    assert abs(check["achieved"] - 0.5) <= 0.05 and "warning" not in check
    assert report.params_after < report.params_before
    export = pruner.export(str(tmp_path / "vit.onnx"))
    assert max(export.max_abs_diff.values()) <= 1e-4
    import onnxruntime as ort
    got = ort.InferenceSession(export.path, providers=["CPUExecutionProvider"]).run(
        None, {"pixel_values": EXAMPLE["pixel_values"].numpy()})[0]
    with torch.no_grad():
        want = model(**EXAMPLE).logits.numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_kwon_fisher_from_the_users_loss_equals_the_task_loss():
    data = batches(4)
    model = tiny_vit()
    pruner = leap_fx.Pruner(model, leap_fx.KwonConfig(target="flops:0.5"), example_inputs=EXAMPLE, loss_fn=loss_fn)
    pruner.prepare()
    method = pruner.method
    mine = mask_gradients(model, method.plan, method.tied(model), data,
                          model_loss=lambda m, b: loss_fn(m, b) * b["labels"].shape[0]).grads
    theirs = mask_gradients(model, method.plan, method.tied(model), data, ClassificationLoss().summed).grads
    for key in theirs:
        assert torch.allclose(mine[key], theirs[key], atol=1e-5, rtol=1e-4), key
    assert any(bool(g.abs().sum() > 0) for g in mine.values())
    report = pruner.calibrate(data)
    assert report["achieved"] <= 0.5 + 1e-6
    check = pruner.finish()
    assert abs(check["achieved"] - 0.5) <= 0.05
    assert pruner.strip().params_after < sum(p.numel() for p in tiny_vit().parameters())


def test_l2_oneshot_needs_no_data():
    pruner = leap_fx.Pruner(tiny_vit(), leap_fx.L2OneShotConfig(target_density=0.5), example_inputs=EXAMPLE)
    pruner.calibrate([])
    assert abs(pruner.finish()["achieved"] - 0.5) <= 0.05
    report = pruner.strip()
    assert report.params_after < report.params_before


@pytest.mark.parametrize("config", [leap_fx.MagnitudeConfig(target_density=0.5, granularity="unstructured"),
                                    leap_fx.MovementConfig(target_density=0.5, granularity="unstructured"),
                                    leap_fx.SparseBertConfig(target_density=0.5)],
                         ids=["magnitude", "movement", "sparsebert"])
def test_scheduled_methods_reach_their_density_and_strip_says_nothing_went(config):
    pruner = leap_fx.Pruner(tiny_vit(), config, example_inputs=EXAMPLE, loss_fn=loss_fn, steps=30)
    run_loop(pruner, batches(), 30)
    check = pruner.finish()
    assert abs(check["achieved"] - 0.5) <= 0.05
    with pytest.warns(leap_fx.PruningWarning, match="strip removed nothing"):  # zeros inside matrices stay
        pruner.strip()


def test_cofi_reaches_its_target_in_expectation_and_finish_reports_what_strip_keeps(tmp_path):
    pruner = leap_fx.Pruner(tiny_vit(), leap_fx.CofiConfig(target="flops:0.5"), example_inputs=EXAMPLE,
                            loss_fn=loss_fn, steps=40)  # gate_lr unset: sized to the 40 steps
    logs = run_loop(pruner, batches(), 40, lr=3e-3)
    pruning = [rec for rec in logs if rec["phase"] == 1.0]  # steps 2-27: dense warm-up 2, fine-tune 12
    assert len(pruning) == 26 and all("penalty" in rec and "lagrangian" in rec for rec in pruning)
    assert pruning[0]["expected_density"] > 0.95 and pruning[-1]["target_density"] == pytest.approx(0.5)
    summary = pruner.method.summary()
    # the Lagrangian brings the expected size to the target (0.44-0.52 over 3 seeds x 2 lrs x 40/60 steps);
    # the deterministic gates of a model this small (4 heads, one gate per sub-layer) round to within the
    # tolerance in most of those runs and miss by up to 0.11 in the rest: said at finish, checked both ways
    assert abs(summary["expected_density"] - 0.5) <= 0.1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check = pruner.finish()
    said = [str(w.message) for w in caught if issubclass(w.category, leap_fx.PruningWarning)]
    assert check["achieved"] == pytest.approx(summary["realised_density"])  # hidden dims and sub-layers too
    if abs(check["achieved"] - 0.5) <= MISS:
        assert not said and "warning" not in check
    else:
        assert len(said) == 1 and "missed" in said[0] and check["warning"] == said[0]
    measured = strip_and_export(pruner, tmp_path)
    assert measured == pytest.approx(check["achieved"], abs=1e-6)  # before: heads / neurons only, 0.636 vs 0.465


def test_a_cofi_gate_lr_too_slow_for_the_declared_steps_is_refused_and_would_miss(monkeypatch):
    def make(steps, **kw):
        return leap_fx.Pruner(tiny_vit(), leap_fx.CofiConfig(target="flops:0.5", **kw), example_inputs=EXAMPLE,
                              loss_fn=loss_fn, steps=steps)
    # the reference's rate, 0.01, in a 100-step loop: 65 pruning steps move log_alpha at most 0.65 of 4.6
    with pytest.raises(ValueError, match=r"gate_lr=0.01 moves .* 65 pruning steps of the 100 declared: .*keep "
                                         r"0.944 of the flops.*leave gate_lr unset \(automatic for 100 steps"):
        make(100, gate_lr=0.01)
    for steps, rate, refused in [(100, None, False), (600, 0.01, False), (40, 0.1, True), (40, 0.15, False)]:
        method = build(leap_fx.CofiConfig(target="flops:0.5", gate_lr=rate), steps)  # what Pruner checks
        with pytest.raises(ValueError, match=f"gate_lr={rate} moves") if refused else contextlib.nullcontext():
            check_mask_lr(method, steps)  # automatic; enough steps for 0.01; 0.15 passes, may still miss
    # refused soundly: let through, that rate never brings the expected size below the floor, and finish warns
    monkeypatch.setattr(pruner_module, "check_mask_lr", lambda method, steps: None)
    pruner = make(40, gate_lr=0.1)
    floor = cofi_floor(pruner.method)
    assert floor > 0.5 + MISS
    logs = run_loop(pruner, batches(), 40, lr=3e-3)
    assert min(rec.get("expected_density", 1.0) for rec in logs) >= floor
    with pytest.warns(leap_fx.PruningWarning, match="target flops:0.5 missed"):
        check = pruner.finish()
    assert check["achieved"] > 0.5 + MISS


def test_random_meets_a_flops_target_seeded_and_strips_exactly(tmp_path):
    def calibrated(seed):
        pruner = leap_fx.Pruner(tiny_vit(), RandomConfig(target="flops:0.5", score_seed=seed),
                                example_inputs=EXAMPLE, loss_fn=loss_fn)
        return pruner, pruner.calibrate(batches(2))  # no data needed: the batches are ignored

    pruner, report = calibrated(0)
    assert pruner.kind == "one-shot" and pruner.config.cost_seq == 17
    with pytest.raises(ValueError, match="one-shot"):
        pruner.loss(batches(1)[0])
    assert 0.5 - MISS <= report["flops"] <= 0.5 + 1e-6 and min(report["kept"].values()) >= 1
    assert pruner.achieved() == pytest.approx(report["flops"])
    masks = {k: o.hard_mask().clone() for k, o in owners(pruner.model).items()}
    again, other = calibrated(0)[0], calibrated(1)[0]
    assert all(torch.equal(masks[k], o.hard_mask()) for k, o in owners(again.model).items())
    assert any(not torch.equal(masks[k], o.hard_mask()) for k, o in owners(other.model).items())
    assert abs(other.achieved() - 0.5) <= MISS
    with warnings.catch_warnings():
        warnings.simplefilter("error", leap_fx.PruningWarning)
        check = pruner.finish()
    assert check["achieved"] == pytest.approx(report["flops"]) and "warning" not in check
    measured = strip_and_export(pruner, tmp_path)
    assert measured == pytest.approx(check["achieved"], abs=1e-6)


def test_ready_loop_with_a_teacher_distils_on_the_same_forward():
    teacher = tiny_vit(seed=1).eval()
    pruner = leap_fx.Pruner(tiny_vit(), leap_fx.LeapConfig(target="flops:0.5", granularity="structured"),
                            example_inputs=EXAMPLE, loss_fn=loss_fn, steps=120, teacher=teacher)
    logs = pruner.fit(batches(), lr=1e-3)  # 60 steps: the automatic mask LR drops R past the target in 10
    assert len(logs) == 120 and all(rec["kd"] > 0 for rec in logs)  # steps (0.42 on 4-head layers)
    assert abs(pruner.finish()["achieved"] - 0.5) <= 0.05


def test_a_mask_lr_that_cannot_reach_the_target_is_refused():
    config = leap_fx.LeapConfig(target="flops:0.5", granularity="structured", mask_lr=1e-2)
    with pytest.raises(ValueError, match=r"mask_lr=0.01 moves .* 30 declared steps.*leave mask_lr unset"):
        leap_fx.Pruner(tiny_vit(), config, example_inputs=EXAMPLE, loss_fn=loss_fn, steps=30)
    with pytest.raises(ValueError, match="declare the optimiser steps"):
        leap_fx.Pruner(tiny_vit(), leap_fx.LeapConfig(target_density=0.5), example_inputs=EXAMPLE, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="example_inputs"):
        leap_fx.Pruner(tiny_vit(), leap_fx.KwonConfig(target="flops:0.5"))


def test_a_missed_target_warns_at_finish_and_the_issue_case_warns_at_fold_and_strip():
    pruner = leap_fx.Pruner(tiny_vit(), leap_fx.LeapConfig(target="flops:0.5", granularity="structured"),
                            example_inputs=EXAMPLE, loss_fn=loss_fn, steps=300)
    run_loop(pruner, batches(), 3)  # 3 of the 300 declared steps
    with pytest.warns(leap_fx.PruningWarning, match="missed|nothing was pruned"):
        check = pruner.finish()
    assert "warning" in check
    # the issue's case: the raw API, a fixed mask_lr of 1e-2 for 30 steps: R stays at 1.0
    model = tiny_vit()
    plan = leap_fx.analyze(model, EXAMPLE)
    cfg = leap_fx.LeapConfig(target="flops:0.5", granularity="structured", cost_seq=17)
    leap_fx.prepare(model, cfg, plan)
    reg = leap_fx.LeapRegularizer.from_config(model, cfg, plan=plan)
    opt = torch.optim.AdamW(leap_fx.param_groups(model, lr=3e-5, mask_lr=1e-2))
    for b in batches()[:4]:
        loss = loss_fn(model, b) + reg()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert reg.R == 1.0
    with pytest.warns(leap_fx.PruningWarning, match="nothing was pruned"):
        leap_fx.fold(model)
    with pytest.warns(leap_fx.PruningWarning, match="strip removed nothing"):
        report = leap_fx.strip(model, plan, EXAMPLE)
    assert report.params_after == report.params_before
