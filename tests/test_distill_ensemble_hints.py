"""Ensemble combination and intermediate-layer (hint) distillation."""

import pytest
import torch
from torch import nn

from asr_kd.distill import HintLoss, combine

A = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
B = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))


def test_ensemble_golden_values():
    torch.testing.assert_close(combine([A, B]).exp(), torch.tensor([[0.4, 0.4, 0.2]]))
    geo = torch.tensor([[0.3819660112501051, 0.42705098312484224, 0.19098300562505255]])
    torch.testing.assert_close(combine([A, B], method="geometric").exp(), geo)
    torch.testing.assert_close(combine([A, B], weights=[3, 1]).exp(), torch.tensor([[0.5, 0.35, 0.15]]))


def test_ensemble_accepts_logits_and_masks_padding():
    logits = [torch.randn(2, 4, 6) * 5 for _ in range(3)]
    shifted = [m + 7.0 for m in logits]  # logits up to a constant are the same distribution
    torch.testing.assert_close(combine(logits), combine(shifted))
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    out = combine(logits, mask=mask)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 4))
    assert torch.all(out[1, 2:] == out[1, 2:].mean())  # uniform where padded


def test_ensemble_refuses_mismatched_members():
    with pytest.raises(ValueError, match="same positions"):
        combine([torch.zeros(5, 3), torch.zeros(4, 3)])
    with pytest.raises(ValueError, match="weights"):
        combine([A, B], weights=[1.0])
    with pytest.raises(ValueError, match="method"):
        combine([A, B], method="median")


class Tiny(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.rnn = nn.LSTM(3, width, batch_first=True)
        self.out = nn.Linear(width, 5)

    def forward(self, x):
        return self.out(self.rnn(x)[0])


def test_hint_loss_trains_projection_and_leaves_teacher_untouched():
    torch.manual_seed(0)
    teacher, student = Tiny(16), Tiny(8)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    hints = HintLoss(student, teacher, [("rnn", "rnn")], widths=[(8, 16)], loss="mse")
    opt = torch.optim.Adam([*student.parameters(), *hints.parameters()], lr=1e-2)
    x = torch.randn(4, 7, 3)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[2:, 4:] = False
    losses = []
    for _ in range(60):
        with torch.no_grad():
            teacher(x)
        student(x)
        loss = hints(mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    hints.remove()
    assert not teacher.rnn._forward_hooks and not student.rnn._forward_hooks


def test_hint_loss_cosine_is_zero_for_identical_features_and_errors_are_clear():
    net = Tiny(8)
    hints = HintLoss(net, net, [("rnn", "rnn")], loss="cosine")
    net(torch.randn(2, 3, 3))
    assert float(hints().detach()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(RuntimeError, match="run both models"):
        hints()
    with pytest.raises(KeyError, match="no module named 'encoder'"):
        HintLoss(net, net, [("encoder", "rnn")])
    narrow = Tiny(4)
    unprojected = HintLoss(narrow, net, [("rnn", "rnn")])  # widths 4 vs 8, none given
    x = torch.randn(1, 2, 3)
    narrow(x), net(x)
    with pytest.raises(ValueError, match="give widths"):
        unprojected()


def test_zero_weight_member_with_minus_infinity_takes_no_part():
    dead = torch.tensor([[0.0, float("-inf")]])
    for method in ("arithmetic", "geometric"):
        out = combine([A[:, :2], dead], method=method, weights=[1.0, 0.0])
        torch.testing.assert_close(out, torch.log_softmax(A[:, :2], -1))


def test_hints_on_packed_lstm_outputs_respect_the_frame_mask():
    """The project's acoustic model feeds its LSTM packed sequences; hints must see (B, T, F)."""
    from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel

    torch.manual_seed(0)
    cfg = AcousticConfig(num_classes=5, n_mels=8, hidden=8, conv_channels=2, layers=1)
    teacher, student = CTCAcousticModel(cfg).eval(), CTCAcousticModel(cfg.scaled(0.5)).eval()
    hints = HintLoss(student, teacher, [("encoder", "encoder")], widths=[(8, 16)])  # BiLSTM: 2 x hidden
    lengths = torch.tensor([40, 17])

    def loss_of(feats, mask=True):
        with torch.no_grad():
            _, n = teacher(feats, lengths)
            student(feats, lengths)
            return hints(torch.arange(10)[None, :] < n[:, None] if mask else None)

    feats = torch.randn(2, 40, 8)
    loss = loss_of(feats)
    assert loss.shape == () and torch.isfinite(loss) and loss > 0
    padded = feats.clone()
    padded[1, 17:] = 1e6 * torch.randn(23, 8)  # item 1 has 17 real frames
    assert torch.equal(loss_of(padded), loss)
    real = feats.clone()
    real[1, 16] += 3.0  # its last real frame
    assert not torch.allclose(loss_of(real), loss)
    # Unmasked, the padded output frames count: the projection's bias against the teacher's zeros.
    assert not torch.allclose(loss_of(feats, mask=False), loss)


def test_hint_loss_leaves_out_padded_positions_of_the_features():
    """A unidirectional LSTM run over padding gives hooked features that differ there; the mask drops them."""
    torch.manual_seed(0)
    teacher, student = Tiny(16), Tiny(8)
    hints = HintLoss(student, teacher, [("rnn", "rnn")], widths=[(8, 16)])
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])

    def loss_of(x):
        with torch.no_grad():
            teacher(x)
            student(x)
            return hints(mask)

    x = torch.randn(2, 6, 3)
    loss = loss_of(x)
    padded = x.clone()
    padded[1, 3:] = 1e4 * torch.randn(3, 3)
    assert torch.equal(loss_of(padded), loss)
    real = x.clone()
    real[1, 2] += 3.0
    assert not torch.allclose(loss_of(real), loss)
