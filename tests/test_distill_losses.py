"""The soft-target and logit-matching losses against the paper's formulas."""

import math

import pytest
import torch

from asr_kd.distill import (
    DistillationLoss,
    TopK,
    WeightedLoss,
    logit_matching_loss,
    soft_target_loss,
)

STUDENT = torch.tensor([[1.0, 2.0, 3.0, -1.0], [0.5, -0.5, 0.0, 2.0]])
TEACHER = torch.tensor([[3.0, 1.0, 0.0, 0.5], [1.0, 1.0, 1.0, -2.0]])


@pytest.mark.parametrize(
    "temperature, expected",
    # Golden values computed with plain-Python math (see the test module history).
    [(1.0, 1.401002204831199), (2.0, 1.797248121730707), (5.0, 2.0539520154636532)],
)
def test_soft_loss_golden(temperature, expected):
    got = soft_target_loss(STUDENT, TEACHER, temperature)
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_logit_matching_golden():
    assert float(logit_matching_loss(STUDENT, TEACHER)) == pytest.approx(2.21484375, abs=1e-6)


def test_distillation_loss_golden_and_formula():
    kd = DistillationLoss(temperature=2.0, hard_weight=0.25, soft_weight=0.75)
    out = kd(STUDENT, TEACHER, hard=torch.tensor(4.0))
    assert float(out.total) == pytest.approx(0.25 * 4.0 + 0.75 * 1.797248121730707, abs=1e-6)
    assert out.parts["hard"] == 4.0
    assert str(kd) == "loss = 0.25 * hard + 0.75 * soft[T^2 * KL(teacher_T || student_T), T=2]"
    lm = DistillationLoss(soft="logits", hard_weight=0.0)
    assert float(lm(STUDENT, TEACHER).total) == pytest.approx(2.21484375, abs=1e-6)
    assert "hard" not in str(lm)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0, 20.0])
def test_soft_gradient_is_T_times_q_minus_p(temperature):
    """dL/dz = T^2 * (1/T) * (q - p) per position (then / number of positions)."""
    torch.manual_seed(0)
    z = torch.randn(6, 11, dtype=torch.float64, requires_grad=True)
    v = torch.randn(6, 11, dtype=torch.float64)
    soft_target_loss(z, v, temperature).backward()
    q = torch.softmax(z.detach() / temperature, -1)
    p = torch.softmax(v / temperature, -1)
    expected = temperature**2 * (1 / temperature) * (q - p) / z.shape[0]
    assert z.grad is not None
    torch.testing.assert_close(z.grad, expected.to(z.grad.dtype), atol=1e-6, rtol=1e-5)


def test_high_temperature_gradient_approaches_logit_matching():
    """The paper's limit: the T^2-scaled soft gradient tends to (z - v)/C for zero-mean logits."""
    torch.manual_seed(1)
    z0 = torch.randn(8, 10, dtype=torch.float64) * 3
    v0 = torch.randn(8, 10, dtype=torch.float64) * 3
    z0, v0 = z0 - z0.mean(-1, keepdim=True), v0 - v0.mean(-1, keepdim=True)
    z = z0.clone().requires_grad_(True)
    logit_matching_loss(z, v0).backward()
    assert z.grad is not None
    g_lm = z.grad.clone()
    rel = []
    for temperature in (1.0, 5.0, 20.0, 100.0):
        z = z0.clone().requires_grad_(True)
        soft_target_loss(z, v0, temperature).backward()
        assert z.grad is not None
        rel.append(float((z.grad - g_lm).norm() / g_lm.norm()))
    assert all(a > b for a, b in zip(rel, rel[1:], strict=False)), rel
    # Measured: [0.68, 0.38, 0.098, 0.019]; the remainder shrinks like 1/T.
    assert rel[0] > 0.3 and rel[-1] < 0.03 and rel[2] / rel[3] > 3, rel


def test_masked_positions_get_zero_gradient_and_padding_equals_unpadded():
    torch.manual_seed(2)
    lengths = [5, 2, 4]
    items_s = [torch.randn(n, 7) for n in lengths]
    items_t = [torch.randn(n, 7) for n in lengths]
    student = torch.zeros(3, 5, 7)
    teacher = torch.full((3, 5, 7), float("nan"))  # garbage in the padding must not leak
    mask = torch.zeros(3, 5, dtype=torch.bool)
    for b, n in enumerate(lengths):
        student[b, :n], teacher[b, :n], mask[b, :n] = items_s[b], items_t[b], True
    student.requires_grad_(True)
    for kind in ("kl", "logits"):
        kd = DistillationLoss(temperature=3.0, hard_weight=0.0, soft=kind)
        student.grad = None
        padded = kd(student, teacher, mask=mask).total
        padded.backward()
        assert torch.isfinite(padded)
        assert student.grad is not None
        assert torch.all(student.grad[~mask] == 0)
        flat = kd(torch.cat(items_s), torch.cat(items_t)).total
        assert float(padded.detach()) == pytest.approx(float(flat), rel=1e-6)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_topk_with_all_classes_equals_dense(dtype, tol):
    torch.manual_seed(3)
    z = torch.randn(4, 6, 9, dtype=dtype)
    v = torch.randn(4, 6, 9, dtype=dtype) * 2
    mask = torch.rand(4, 6) > 0.3
    for temperature in (1.0, 2.0, 7.0):
        dense = soft_target_loss(z, v, temperature, mask)
        sparse = soft_target_loss(z, TopK.from_logits(v, k=9), temperature, mask)
        assert abs(float(dense) - float(sparse)) < tol


def test_dense_backward_matches_numerical_gradient():
    """The fused dense KL's hand-written backward against finite differences (gradcheck)."""
    torch.manual_seed(4)
    z = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 5, 7, dtype=torch.float64)
    mask = torch.rand(3, 5) > 0.4
    assert torch.autograd.gradcheck(lambda x: soft_target_loss(x, v, 2.5, mask), (z,))
    top = TopK.from_logits(v, k=3)
    assert torch.autograd.gradcheck(lambda x: soft_target_loss(x, top, 2.5, mask), (z,))


def test_dense_loss_identical_across_cpu_chunking(monkeypatch):
    """Rows processed in cache-sized chunks give the same loss as one chunk."""
    from asr_kd.distill import losses

    torch.manual_seed(5)
    z, v = torch.randn(37, 11), torch.randn(37, 11)
    whole = soft_target_loss(z, v, 3.0)
    monkeypatch.setattr(losses._SoftKL, "CHUNK_ELEMENTS", 11 * 4)  # 4 rows a chunk
    assert float(soft_target_loss(z, v, 3.0)) == pytest.approx(float(whole), rel=1e-6)


def test_topk_drops_mass_and_renormalises():
    """k < C: the kept teacher classes are renormalised; the loss differs from dense."""
    v = torch.tensor([[4.0, 3.0, 0.0, -1.0]])
    top = TopK.from_logits(v, k=2)
    assert top.indices.tolist() == [[0, 1]]
    assert float(top.softened(1.0).exp().sum()) == pytest.approx(1.0)
    # Student equal to the teacher restricted to the kept classes: KL is the log of the kept mass.
    z = v.clone()
    kept = float(top.log_probs.exp().sum())
    assert float(soft_target_loss(z, top, 1.0)) == pytest.approx(-math.log(kept), abs=1e-6)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(STUDENT, TEACHER, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        soft_target_loss(STUDENT, TEACHER[:, :3])
    with pytest.raises(ValueError, match="mask shape"):
        soft_target_loss(STUDENT, TEACHER, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="negative weight"):
        WeightedLoss({"hard": -1.0})
    with pytest.raises(ValueError, match="no hard-label loss"):
        DistillationLoss(hard_weight=0.5)(STUDENT, TEACHER)
    with pytest.raises(ValueError, match="unknown distillation option"):
        DistillationLoss.from_config({"temprature": 2})


def test_position_weights():
    """Unit weights change nothing; zero weights act as a mask; the mean is weighted."""
    torch.manual_seed(6)
    z, v = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    mask = torch.rand(3, 4) > 0.3
    w = torch.rand(3, 4)
    base = soft_target_loss(z, v, 2.0, mask)
    assert float(soft_target_loss(z, v, 2.0, mask, torch.ones(3, 4))) == pytest.approx(float(base), rel=1e-6)
    as_mask = soft_target_loss(z, v, 2.0, None, mask.float())
    assert float(as_mask) == pytest.approx(float(base), rel=1e-6)
    from asr_kd.distill import soft_target_kl

    kl = soft_target_kl(z, v, 2.0)
    expected = 4.0 * (kl * w * mask).sum() / (w * mask).sum()
    assert float(soft_target_loss(z, v, 2.0, mask, w)) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="weights shape"):
        soft_target_loss(z, v, 2.0, mask, torch.ones(3))


def test_minus_infinity_teacher_entries_are_probability_zero():
    """Log-probs of exactly zero probability (-inf) give a finite loss and gradient."""
    z = torch.randn(2, 3, requires_grad=True)
    v = torch.tensor([[0.0, float("-inf"), -1.0], [float("-inf"), 0.0, 0.0]])
    finite = torch.tensor([[0.0, -1e5, -1.0], [-1e5, 0.0, 0.0]])
    for teacher, ref in ((v, finite), (TopK(v, torch.tensor([[0, 1, 2], [0, 1, 2]])), finite)):
        loss = soft_target_loss(z, teacher, 2.0)
        (g,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(loss) and torch.all(torch.isfinite(g))
        assert float(loss.detach()) == pytest.approx(float(soft_target_loss(z, ref, 2.0).detach()), rel=1e-6)
