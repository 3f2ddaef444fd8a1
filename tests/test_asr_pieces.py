"""Acoustic model family, CTC decoding, scoring and spike guidance."""

import pytest
import torch

from asr_kd.asr.decode import BeamDecoder, collapse, greedy_decode
from asr_kd.asr.guidance import IGNORE, forced_spikes, guided_loss, spike_agreement
from asr_kd.asr.score import error_rates, frame_agreement, write_trn
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel, count_parameters


def test_student_is_half_width_and_shares_the_frames():
    teacher_cfg = AcousticConfig(num_classes=40, hidden=64, conv_channels=16, layers=2)
    student_cfg = teacher_cfg.scaled(0.5)
    assert (student_cfg.hidden, student_cfg.conv_channels) == (32, 8)
    teacher, student = CTCAcousticModel(teacher_cfg), CTCAcousticModel(student_cfg)
    assert count_parameters(student) < 0.35 * count_parameters(teacher)
    feats, lengths = torch.randn(3, 203, 80), torch.tensor([203, 150, 9])
    t_out, t_len = teacher(feats, lengths)
    s_out, s_len = student(feats, lengths)
    assert t_out.shape[:2] == s_out.shape[:2] and torch.equal(t_len, s_len)
    assert t_len.tolist() == [51, 38, 3]


def test_padding_does_not_change_an_items_output():
    torch.manual_seed(0)
    model = CTCAcousticModel(AcousticConfig(num_classes=10, hidden=16, conv_channels=4)).eval()
    short = torch.randn(1, 37, 80)
    alone, n = model(short, torch.tensor([37]))
    padded = torch.cat([short, torch.randn(1, 63, 80)], dim=1)
    batch, _ = model(torch.cat([padded, torch.randn(1, 100, 80)]), torch.tensor([37, 100]))
    torch.testing.assert_close(batch[0, : int(n[0])], alone[0], atol=1e-5, rtol=1e-4)


def test_collapse_and_greedy():
    assert collapse([0, 1, 1, 0, 1, 2, 2, 2, 0]) == [1, 1, 2]
    assert collapse([]) == [] and collapse([0, 0]) == []
    lp = torch.nn.functional.one_hot(torch.tensor([[4, 4, 0, 2], [1, 0, 0, 0]]), 5).float()
    assert greedy_decode((lp + 1e-6).log(), torch.tensor([4, 2])) == [[4, 2], [1]]


def test_beam_search_agrees_with_greedy_on_peaky_posteriors():
    torch.manual_seed(1)
    # "c b c c a": the doubled c is separated by a blank and must survive decoding
    path = torch.tensor([[0, 3, 3, 0, 2, 0, 0, 3, 0, 3, 1, 1, 0]])
    lp = torch.log_softmax(torch.nn.functional.one_hot(path, 4).float() * 8, -1)
    beam = BeamDecoder(["<b>", "a", "b", "c"], beam_size=4)
    n = torch.tensor([13])
    assert beam(lp, n) == greedy_decode(lp, n) == [[3, 2, 3, 3, 1]]


def test_error_rates_exact_arithmetic_and_edge_cases():
    r = error_rates(["a b c", "d e"], ["a x c", ""])
    assert (r["substitutions"], r["deletions"], r["insertions"], r["ref_words"]) == (1, 2, 0, 5)
    assert r["wer"] == pytest.approx(3 / 5)
    r = error_rates(["", "a"], ["x", "a"])  # empty reference: its words are insertions
    assert r["insertions"] == 1 and r["wer"] == pytest.approx(1.0)
    assert error_rates(["abc"], ["abd"])["cer"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rates(["a", "b"], ["a"])


def test_trn_and_frame_agreement(tmp_path):
    write_trn(tmp_path / "hyp.trn", ["u1", "u2"], ["hello world", ""])
    assert (tmp_path / "hyp.trn").read_text() == "hello world (u1)\n (u2)\n"
    a, b = torch.tensor([[1, 2, 3, 0]]), torch.tensor([[1, 0, 3, 9]])
    assert frame_agreement(a, b) == 0.5
    assert frame_agreement(a, b, torch.tensor([[True, True, True, False]])) == pytest.approx(2 / 3)


def test_guided_loss_moves_spikes_onto_the_reference():
    torch.manual_seed(2)
    frames, classes = 30, 6
    ref = torch.randn(1, frames, classes)
    ref[0, :, 0] += 4  # mostly blank, like a CTC model
    targets = torch.tensor([[2, 5, 5, 1]])
    spikes = forced_spikes(ref.log_softmax(-1), torch.tensor([frames]), targets, torch.tensor([4]))
    assert (spikes != IGNORE).sum() == 4
    assert spikes[spikes != IGNORE].tolist() == [2, 5, 5, 1]
    logits = torch.randn(1, frames, classes, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    before = spike_agreement(logits.log_softmax(-1), spikes)
    for _ in range(50):
        loss = guided_loss(logits.log_softmax(-1), spikes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.5 and spike_agreement(logits.log_softmax(-1), spikes) == 1.0


def test_unalignable_items_are_ignored_and_shapes_checked():
    lp = torch.randn(1, 3, 5).log_softmax(-1)
    spikes = forced_spikes(lp, torch.tensor([3]), torch.tensor([[1, 1, 2]]), torch.tensor([3]))
    assert torch.all(spikes == IGNORE)  # 3 frames cannot hold 1,1,2 (needs 4)
    assert float(guided_loss(lp, spikes)) == 0.0
    with pytest.raises(ValueError, match="same front end"):
        guided_loss(lp, torch.zeros(1, 4, dtype=torch.long))


def test_ensemble_cache_is_keyed_by_id_and_resumes(tmp_path):
    from asr_kd.asr.ensemble import cache_ensemble, ensemble_log_probs
    from asr_kd.distill import CacheWriter, TeacherCache

    torch.manual_seed(3)
    cfg = AcousticConfig(num_classes=7, n_mels=8, hidden=8, conv_channels=2)
    members = [CTCAcousticModel(cfg) for _ in range(2)]
    feats = torch.randn(6, 40, 8)
    lengths = torch.tensor([40, 35, 20, 12, 40, 8])
    ids = [f"u{i}" for i in range(6)]
    batches = [(ids[:3], feats[:3], lengths[:3]), (ids[3:], feats[3:], lengths[3:])]
    with CacheWriter(tmp_path, num_classes=7, k=7) as w:
        assert cache_ensemble(members, batches[:1], w) == 3
    with CacheWriter(tmp_path, num_classes=7, k=7) as w:  # resume: only the rest is written
        assert cache_ensemble(members, batches, w) == 3
    cache = TeacherCache(tmp_path, fingerprint={})
    assert sorted(cache.ids()) == ids
    lp, n = ensemble_log_probs(members, feats[4:5], lengths[4:5])
    assert cache.num_frames("u4") == int(n[0]) == 10
    torch.testing.assert_close(cache["u4"].to_dense(7), lp[0], atol=2e-2, rtol=1e-3)


def test_spike_overlap():
    from asr_kd.asr.guidance import spike_overlap

    a = torch.nn.functional.one_hot(torch.tensor([[0, 2, 0, 3, 0]]), 4).float()
    b = torch.nn.functional.one_hot(torch.tensor([[0, 2, 0, 0, 3]]), 4).float()
    assert spike_overlap(a, b) == 0.5 and spike_overlap(a, a) == 1.0
