"""SparseBERT (Xu et al. 2021): held cubic schedule, exact per-matrix density, TinyBERT distillation with
attention scores captured in the loop, the pre-trained student and a user's teacher, the whole job."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leap_fx.masks.topk import keep_count
from leap_fx.methods import build
from leap_fx.methods.request import resolve
from leap_fx.methods.scheduled.handler import cubic_density
from leap_fx.methods.sparsebert.config import SparseBertConfig
from leap_fx.objectives.outputs import Outputs
from leap_fx.objectives.tapping import capture_scores, recording, taps
from leap_fx.objectives.tinybert import TinyBertKD, uniform_pairs
from leap_fx.run.job import dense_teacher, run_prune
from leap_fx.spec.options import PruneOptions
from leap_fx.spec.train import TrainConfig
from leap_fx.train import train
from passes.analyze import analyze
from tests.conftest import bert_inputs, tiny_bert
from tests.helpers import tiny_options, toy_data

ENCODER = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


# -- the schedule -----------------------------------------------------------------------------------
def test_cubic_schedule_is_held_between_mask_updates_and_exact_at_the_end():
    m = build(SparseBertConfig(0.1), total_steps=100)  # t_0 = 10, t_f - t_c = 80, every 10 steps
    d = [m.density_at(s) for s in range(101)]
    assert d[:21] == [1.0] * 20 + [pytest.approx(0.1 + 0.9 * (1 - 10 / 70) ** 3)]  # first drop at t_0 + 10
    assert d[20:30] == [d[20]] * 10 and d[30] < d[29]  # held for prune_every steps
    assert d[75] == pytest.approx(cubic_density(70, 100, 0.1, warmup_steps=10, cooldown_steps=20))
    assert d[79] == d[70] > 0.1 and d[80:] == [0.1] * 21  # the target from t_f - t_c on, exactly
    assert len(set(d)) == 8  # 1.0, six ramp levels (t_0 + 10 ... t_0 + 60), the target


def test_config_checks_and_scorer_variants():
    assert build(SparseBertConfig(0.1), 10).log_keys == ("scheduled_density", "hidden", "attention")
    leap = build(SparseBertConfig(0.1, scorer="leap"), 10)
    assert leap.name == "sparsebert" and "R" in leap.log_keys and not hasattr(leap, "density_at")
    for bad, match in ((dict(scorer="movement"), "scorer"), (dict(kd_temperature=0), "kd_temperature"),
                       (dict(prune_every=0), "prune_every"), (dict(attention_weight=-1), "attention_weight")):
        with pytest.raises(ValueError, match=match):
            SparseBertConfig(0.1, **bad)
    opts = resolve(PruneOptions(method="sparsebert", target_density=0.1))
    assert (opts.granularity, opts.student_init) == ("unstructured", "pretrained")  # the method's job defaults
    assert resolve(PruneOptions(method="magnitude")).student_init == "teacher"
    assert resolve(PruneOptions(method="sparsebert", student_init="teacher")).student_init == "teacher"
    assert opts.lr == SparseBertConfig.job.lr > resolve(PruneOptions(method="magnitude")).lr == 3e-5
    assert resolve(PruneOptions(method="sparsebert", lr=2e-5)).lr == 2e-5  # the user's lr wins
    with pytest.raises(ValueError, match="lr=0"):
        PruneOptions(method="sparsebert", lr=0.0)


# -- distillation ---------------------------------------------------------------------------------
def test_captured_scores_are_the_pre_softmax_q_k_products_and_eager_is_restored():
    model, x = tiny_bert(), bert_inputs()
    x["attention_mask"][0, -3:] = 0
    model.set_attn_implementation("sdpa")
    plan = analyze(model, x)
    with capture_scores(model, [f.fqn for f in plan.attention()]) as scores:
        model(**x)
    assert model.config._attn_implementation == "sdpa" and len(scores) == 2
    att = model.bert.encoder.layer[0].attention.self
    h = model.bert.embeddings(input_ids=x["input_ids"])
    q, k = (lin(h).view(2, 8, 4, 8).transpose(1, 2) for lin in (att.query, att.key))
    expected = q @ k.transpose(-1, -2) / math.sqrt(8)
    seen = scores[0].detach()
    assert torch.allclose(seen[1], expected[1], atol=1e-5)  # no padding in example 1
    assert torch.allclose(seen[0, ..., :5], expected[0, ..., :5], atol=1e-5) and (seen[0, ..., 5:] < -1e30).all()


def test_fused_attention_is_refused_by_name():
    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Linear(4, 12)

        def forward(self, x):
            q, k, v = self.attn(x).unsqueeze(1).chunk(3, -1)
            return F.scaled_dot_product_attention(q, k, v)
    model = Fused()
    with pytest.raises(ValueError, match="no attention scores seen in \\['attn'\\].*fused attention kernel"):
        with capture_scores(model, ["attn"]):
            model(torch.randn(2, 3, 4))


def _outputs(model, x, watched):
    with recording(model, watched) as got:
        logits = model(**x).logits
    return Outputs(logits, **got)


def test_distillation_losses_are_zero_for_the_teacher_itself_and_positive_otherwise():
    model, x = tiny_bert(), bert_inputs()
    x["attention_mask"][1, -2:] = 0  # masked scores (finfo.min) must not make the loss inf / nan
    watched = taps(analyze(model, x), TinyBertKD.captures)
    assert watched["embeddings"] == ["bert.encoder.layer.0"]
    kd, labels = TinyBertKD(alpha=1.0), torch.tensor([0, 1])
    with torch.no_grad():
        same = kd(_outputs(model, x, watched), _outputs(tiny_bert(), x, watched), {"labels": labels})
    assert {k: float(same[k]) for k in ("task", "kd", "hidden", "attention")} == pytest.approx(
        {"task": 0.0, "kd": 0.0, "hidden": 0.0, "attention": 0.0}, abs=1e-7)
    with torch.no_grad():
        other = kd(_outputs(model, x, watched), _outputs(tiny_bert(seed=1), x, watched), {"labels": labels})
    assert all(math.isfinite(float(other[k])) and float(other[k]) > 0 for k in ("kd", "hidden", "attention"))
    assert float(other["task"]) == pytest.approx(float(other["kd"] + other["hidden"] + other["attention"]), rel=1e-6)
    assert uniform_pairs(2, 4) == [(0, 1), (1, 3)] and uniform_pairs(3, 3) == [(0, 0), (1, 1), (2, 2)]
    with torch.no_grad():
        deeper = _outputs(tiny_bert(layers=4), x, taps(analyze(tiny_bert(layers=4), x), TinyBertKD.captures))
        assert kd(_outputs(model, x, watched), deeper, {"labels": labels})["hidden"] > 0  # 2 student vs 4 teacher layers


def test_loop_trains_every_matrix_to_exactly_its_kept_count():
    torch.set_num_threads(1)
    data = toy_data(n=96)
    data["attention_mask"][::3, -4:] = 0
    res = train(tiny_bert(), tiny_bert(seed=1), data, None,
                TrainConfig(epochs=3, batch_size=16, lr=1e-3, log_every=1, alpha=0.5),
                SparseBertConfig(0.1, prune_every=3), quiet=True)
    for name, p in res.model.named_parameters():
        if name.endswith("weight") and any(k in name for k in ENCODER) and p.dim() == 2:
            assert int((p != 0).sum()) == keep_count(0.1, p.numel()), name  # per matrix, exactly
    assert (res.model.classifier.weight != 0).all() and (res.model.bert.pooler.dense.weight != 0).all()
    logged = [r for r in res.history if r["type"] == "train"]
    assert len(logged) == 18 and all(r["attention"] > 0 and r["hidden"] > 0 for r in logged)
    assert logged[-1]["hidden"] < logged[0]["hidden"]  # the student moves towards the teacher
    assert logged[-1]["scheduled_density"] == 0.1


def test_a_deeper_teacher_is_watched_through_its_own_plan():
    from leap_fx.train.loop import Loop
    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-3, log_every=1)
    loop = Loop(tiny_bert(), tiny_bert(layers=4, seed=1), toy_data(n=32), None, cfg, SparseBertConfig(0.5), None,
                 None, False, True)
    assert len(loop.taps["attention"]) == 2 and len(loop.teacher_taps["attention"]) == 4
    assert loop.teacher_taps["hidden"][-1] == "bert.encoder.layer.3"
    logged = [r for r in loop.run(None, None).history if r["type"] == "train"]
    assert len(logged) == 2 and all(r["hidden"] > 0 and r["attention"] > 0 for r in logged)


def test_leap_scorer_trains_with_the_distillation_objective():
    torch.set_num_threads(1)
    res = train(tiny_bert(), tiny_bert(seed=1), toy_data(n=64), None,
                TrainConfig(epochs=2, batch_size=16, lr=1e-3, log_every=1),
                SparseBertConfig(0.5, scorer="leap", mask_lr_scale=0.3, lambda_min=80.0), quiet=True)
    logged = [r for r in res.history if r["type"] == "train"]
    assert all({"R", "lambda", "hidden", "attention"} <= set(r) for r in logged)
    assert logged[-1]["R"] < 1.0 and res.metrics["density"] < 1.0


# -- the student from the pre-trained weights, the teacher a user's checkpoint ---------------------
def _opts(tiny_model_dir, **kw):
    folder, csv_path, model_dir = tiny_model_dir
    base = dict(model=str(model_dir), method="sparsebert", granularity=None, target_density=0.1, epochs=1,
                teacher_epochs=2, cache_dir=str(folder / "cache"))
    return tiny_options(csv_path, folder / "sparsebert", **{**base, **kw})


def test_student_starts_from_the_pretrained_weights_and_the_teacher_is_fine_tuned(tiny_model_dir):
    from leap_fx.data import load_data
    opts = resolve(_opts(tiny_model_dir))
    student, _, teacher, info = dense_teacher(opts, load_data(opts))
    pretrained = tiny_bert().state_dict()
    got = student.state_dict()
    assert all(torch.equal(got[k], v) for k, v in pretrained.items() if not k.startswith("classifier"))
    assert not torch.equal(teacher.bert.encoder.layer[0].intermediate.dense.weight,
                           pretrained["bert.encoder.layer.0.intermediate.dense.weight"])  # fine-tuned
    assert info["metrics"]["test_accuracy"] is not None


def test_a_users_fine_tuned_teacher_is_used_as_is_and_bad_ones_are_refused(tiny_model_dir, tmp_path):
    from leap_fx.data import load_data
    from leap_fx.hf.models import load_finetuned
    teacher = tiny_bert(seed=5)
    teacher.config.id2label, teacher.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    teacher.save_pretrained(tmp_path / "teacher")
    opts = resolve(_opts(tiny_model_dir, teacher_model=str(tmp_path / "teacher")))
    _, _, got, info = dense_teacher(opts, load_data(opts))
    assert torch.equal(got.classifier.weight, teacher.classifier.weight) and info["path"].endswith("teacher")
    tiny_bert(num_labels=3).save_pretrained(tmp_path / "three")
    with pytest.raises(ValueError, match="num_labels=3"):
        load_finetuned(str(tmp_path / "three"), ["neg", "pos"])
    teacher.config.id2label = {0: "pos", 1: "neg"}
    teacher.save_pretrained(tmp_path / "swapped")
    with pytest.raises(ValueError, match="wrong order"):
        load_finetuned(str(tmp_path / "swapped"), ["neg", "pos"])
    tiny_bert().bert.save_pretrained(tmp_path / "headless")  # an encoder without a classifier
    with pytest.raises(ValueError, match="not a fine-tuned classifier"):
        load_finetuned(str(tmp_path / "headless"), ["neg", "pos"])
    with pytest.raises(ValueError, match="no config.json"):
        load_finetuned(str(tmp_path), ["neg", "pos"])


@pytest.mark.slow
def test_run_prune_sparsebert_end_to_end(tiny_model_dir):
    rep = run_prune(_opts(tiny_model_dir, epochs=2, quantize="int8"))
    assert rep["status"] == "complete" and rep["resolved_options"]["student_init"] == "pretrained"
    for row in rep["density"]["per_matrix"]:
        assert row["density"] == pytest.approx(0.1, abs=1 / row["numel"])
    onnx = rep["onnx"]
    assert onnx["compact"]["tensors"] and onnx["size_bytes"] < onnx["exported_size_bytes"]
    assert max(onnx["compact"]["max_abs_diff"].values()) == 0.0
    packed = rep["quantized"]["compact"]  # the int8 copy is compacted too: same outputs, smaller file
    assert packed["tensors"] and max(packed["max_abs_diff"].values()) == 0.0
    assert rep["quantized"]["size_bytes"] == os.path.getsize(rep["quantized"]["path"]) == packed["bytes"]
    assert rep["accuracy"]["pruned"]["validation"] == pytest.approx(rep["accuracy"]["pruned"]["validation_torch"])
    assert {"hidden", "attention"} <= set(rep["method"]["log_keys"])
