"""Online distillation: the student learns from the peers' outputs of the same batch, the peers
never from the student, mutual terms after the burn-in only."""

import pytest
import torch
import torch.nn.functional as F

from asr_kd.distill import DistillationLoss, OnlineDistillation, combine, soft_target_loss

Y = torch.tensor([0, 1, 2, 1, 0])


def _step(online, peers, student, step=10, mask=None):
    peers = [p.clone().requires_grad_(True) for p in peers]
    student = student.clone().requires_grad_(True)
    out = online(peers, student, [F.cross_entropy(p, Y) for p in peers], F.cross_entropy(student, Y), mask, step)
    out.total.backward()
    return out, [p.grad for p in peers], student.grad


def test_the_student_learns_from_the_peers_of_the_same_batch_and_they_never_from_it():
    torch.manual_seed(0)
    peers, student = [torch.randn(5, 3) for _ in range(3)], torch.randn(5, 3)
    online = OnlineDistillation(DistillationLoss(temperature=2.0, hard_weight=0.5, soft_weight=1.0))
    out, peer_grads, student_grad = _step(online, peers, student)
    target = combine(peers)
    expected = 0.5 * F.cross_entropy(student, Y) + soft_target_loss(student, target, 2.0)
    assert out.parts["student.soft"] == pytest.approx(float(soft_target_loss(student, target, 2.0)), rel=1e-5)
    reference = expected + sum(F.cross_entropy(p, Y) for p in peers)
    assert float(out.total.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    for p, g in zip(peers, peer_grads, strict=True):  # a peer's gradient: its own cross-entropy only
        q = p.clone().requires_grad_(True)
        F.cross_entropy(q, Y).backward()
        torch.testing.assert_close(g, q.grad)
    other = [peers[0] + 3 * torch.randn(5, 3), *peers[1:]]  # another peer: another student gradient
    assert not torch.allclose(_step(online, other, student)[2], student_grad)


def test_mutual_terms_start_after_the_burn_in_and_pull_each_peer_towards_the_others():
    torch.manual_seed(1)
    peers, student = [torch.randn(5, 3) for _ in range(2)], torch.randn(5, 3)
    online = OnlineDistillation(DistillationLoss(temperature=1.0), mutual_weight=0.5, burn_in=10)
    early, early_grads, early_student = _step(online, peers, student, step=9)
    assert sorted(early.parts) == ["peer0.hard", "peer1.hard", "student.hard"]
    q = student.clone().requires_grad_(True)
    F.cross_entropy(q, Y).backward()
    torch.testing.assert_close(early_student, q.grad)  # before the burn-in: hard labels only
    late, late_grads, _ = _step(online, peers, student, step=10)
    assert late.parts["peer0.mutual"] > 0 and not torch.allclose(late_grads[0], early_grads[0])
    p0 = peers[0].clone().requires_grad_(True)
    (F.cross_entropy(p0, Y) + 0.5 * soft_target_loss(p0, combine([peers[1]]), 1.0)).backward()
    torch.testing.assert_close(late_grads[0], p0.grad)  # the other peer's output is a fixed target


def test_padded_positions_are_left_out_and_bad_input_is_refused():
    torch.manual_seed(2)
    peers, student = [torch.randn(2, 4, 3) for _ in range(2)], torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    online = OnlineDistillation(DistillationLoss(temperature=1.0, hard_weight=0.0, soft_weight=1.0))
    changed = [p.clone() for p in peers]
    changed[0][1, 2:] += 10  # only padded frames differ
    hard = [torch.tensor(0.0)] * 2
    a = online(peers, student, hard, torch.tensor(0.0), mask=mask).parts["student.soft"]
    b = online(changed, student, hard, torch.tensor(0.0), mask=mask).parts["student.soft"]
    assert a == pytest.approx(b)
    with pytest.raises(ValueError, match="peers' logits for"):
        online(peers, student, hard[:1], torch.tensor(0.0))
    with pytest.raises(ValueError, match="must be >= 0"):
        OnlineDistillation(DistillationLoss(), mutual_weight=-1)
