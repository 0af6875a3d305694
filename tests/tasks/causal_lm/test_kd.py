"""LM loss, top-k distillation and perplexity (leap_fx/tasks/causal_lm/kd.py, metrics.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from leap_fx.tasks.causal_lm.kd import kd_loss, lm_loss, teacher_topk
from leap_fx.tasks.causal_lm.metrics import perplexity_onnx, perplexity_torch
from passes.export.decoder import export_decoder
from tests.lm_models import gpt2_lm, llama_gqa_lm


def _blocks(vocab, n=5, length=24, seed=0):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def test_lm_loss_equals_hf_loss():
    model = llama_gqa_lm()
    blocks = _blocks(model.config.vocab_size)
    out = model(input_ids=blocks, labels=blocks)
    assert lm_loss(out, {"input_ids": blocks}).item() == pytest.approx(out.loss.item(), rel=1e-5)
    labels = blocks.clone()
    labels[:, :5] = -100
    ref = model(input_ids=blocks, labels=labels).loss
    assert lm_loss(out, {"input_ids": blocks, "labels": labels}).item() == pytest.approx(ref.item(), rel=1e-5)


def _full_kl(student, teacher, t):
    p = F.log_softmax(teacher[:, :-1] / t, -1)
    q = F.log_softmax(student[:, :-1] / t, -1)
    return t * t * (p.exp() * (p - q)).sum(-1).mean()


def test_topk_kd_is_exact_at_full_k_a_lower_bound_below_and_zero_on_itself():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 10, 50, generator=g) * 3, torch.randn(2, 10, 50, generator=g) * 3
    batch = {"input_ids": torch.zeros(2, 10, dtype=torch.long)}
    for t in (1.0, 2.0):
        full = _full_kl(student, teacher, t).item()
        assert kd_loss(student, teacher_topk(teacher, k=50, temperature=t), batch).item() == pytest.approx(full, rel=1e-4)
        part = kd_loss(student, teacher_topk(teacher, k=8, temperature=t), batch).item()
        assert 0 < part <= full + 1e-6
    assert kd_loss(teacher, teacher_topk(teacher, k=8), batch).item() == pytest.approx(0.0, abs=1e-5)


def test_kd_loss_trains_the_student_and_ignores_masked_positions():
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(1, 6, 40, generator=g) * 4
    student = torch.zeros(1, 6, 40, requires_grad=True)
    batch = {"input_ids": torch.zeros(1, 6, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1, 1, 0, 0]])}
    loss = kd_loss(student, teacher_topk(teacher, k=5), batch)
    loss.backward()
    assert loss.item() > 0 and student.grad[0, :3].abs().sum() > 0
    assert student.grad[0, 3:].abs().sum() == 0  # positions predicting padding do not count


@pytest.mark.parametrize("build", [llama_gqa_lm, gpt2_lm])
def test_perplexity_is_exp_of_hf_loss_in_torch_and_onnxruntime(build, tmp_path):
    model = build()
    blocks = _blocks(model.config.vocab_size, n=4, length=20, seed=2)
    ref = math.exp(model(input_ids=blocks, labels=blocks).loss.item())
    for batch_size in (4, 3):
        got = perplexity_torch(model, blocks, batch_size=batch_size)
        assert got["perplexity"] == pytest.approx(ref, rel=1e-5) and got["tokens"] == 4 * 19
    path = str(tmp_path / "m.onnx")
    export_decoder(model, path, steps=1)
    assert perplexity_onnx(path, blocks, batch_size=2)["perplexity"] == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="block_size >= 2"):
        perplexity_torch(model, blocks[:, :1])
