"""The paper's Table 5 in speech (stage small-data): plan, subset, frame labels, end to end."""

from __future__ import annotations

import pytest
import torch

from asr_kd.asr.data import draw_subset
from asr_kd.asr.guidance import IGNORE, forced_frames, forced_spikes
from asr_kd.asr.settings import AsrSettings
from asr_kd.asr.small_data import frame_hits, recovered
from asr_kd.asr.specs import plan
from asr_kd.config import ConfigError


def test_the_pair_is_teacher_0s_model_and_seed_on_one_shared_draw():
    s = AsrSettings.from_dict({"teachers": {"count": 2, "guidance": "none"}, "small_data": {"share": 0.03}})
    p = plan(s)
    hard, soft = p.spec("small-hard"), p.spec("small-soft")
    teacher = p.spec("teacher-0")
    assert hard.seed == soft.seed == teacher.seed
    assert hard.architecture(30, 80) == soft.architecture(30, 80) == teacher.architecture(30, 80)
    assert (hard.variant, hard.select, soft.variant, soft.select) == ("scratch", "best", "kd", "last")
    assert hard.subset == soft.subset == 0.03 and soft.ensemble == "ensemble" and not soft.transfer
    assert hard.train.epochs == soft.train.epochs == 100
    assert "small-hard" not in [st.name for st in plan(AsrSettings.from_dict({})).students]  # off by default
    with pytest.raises(ConfigError, match="small_data.share"):
        AsrSettings.from_dict({"small_data": {"share": 1.0}})


def test_small_data_kd_overrides_the_soft_models_loss_and_leaves_the_rest_alone():
    base = {"teachers": {"count": 2, "guidance": "none"}, "small_data": {"share": 0.03}}
    p0 = plan(AsrSettings.from_dict(base))
    p1 = plan(AsrSettings.from_dict({**base, "small_data": {"share": 0.03, "kd": {"hard_weight": 0.0}}}))
    assert p0.spec("small-soft").kd.hard_weight == 0.5 and p1.spec("small-soft").kd.hard_weight == 0.0
    assert p1.spec("small-soft").kd.temperature == p0.spec("small-soft").kd.temperature  # the rest from students.kd
    assert p1.spec("small-soft").fingerprint != p0.spec("small-soft").fingerprint
    for name in ("small-hard", "student-kd", "teacher-0"):  # finished work stays finished
        assert p1.spec(name).fingerprint == p0.spec(name).fingerprint and p1.spec(name).kd == p0.spec(name).kd
    with pytest.raises(ConfigError, match="small_data.kd.hard_wieght"):
        AsrSettings.from_dict({"small_data": {"kd": {"hard_wieght": 0.0}}})


def test_frame_labels_from_another_teacher_change_no_training():
    base = {"teachers": {"count": 2, "guidance": "none"}, "small_data": {"share": 0.03}}
    p0 = plan(AsrSettings.from_dict(base))
    p1 = plan(AsrSettings.from_dict({**base, "small_data": {"share": 0.03, "align_with": "teacher-1"}}))
    for name in ("small-hard", "small-soft"):
        assert p1.spec(name).fingerprint == p0.spec(name).fingerprint
    for bad in ("teacher-2", "ensemble", "teacher-x"):  # 2 teachers: teacher-0 and teacher-1
        with pytest.raises(ConfigError, match=f"small_data.align_with must name a teacher.*{bad}"):
            AsrSettings.from_dict({**base, "small_data": {"share": 0.03, "align_with": bad}})


def test_the_draw_is_the_same_whatever_the_order_and_grows_with_the_share():
    ids = [f"utt{i:04d}" for i in range(1000)]
    a, b = draw_subset(ids, 0.03, 0), draw_subset(list(reversed(ids)), 0.03, 0)
    assert a == b and len(a) == 30 and len(set(a)) == 30
    assert draw_subset(ids, 0.03, 1) != a
    with pytest.raises(ValueError, match="share"):
        draw_subset(ids, 0.0)


def test_forced_frames_label_every_frame_and_their_first_tokens_are_the_spikes():
    torch.manual_seed(0)
    lp = torch.randn(3, 12, 5).log_softmax(-1)
    targets = torch.tensor([[1, 2, 2, 3], [4, 0, 0, 0], [1, 1, 1, 1]])
    lengths, n = torch.tensor([4, 1, 4]), torch.tensor([12, 9, 5])  # item 2: 4 repeats need 7 frames
    path = forced_frames(lp, n, targets, lengths)
    assert (path[0] >= 0).all() and (path[1, :9] >= 0).all() and (path[1, 9:] == IGNORE).all()
    assert (path[2] == IGNORE).all()
    collapsed = torch.unique_consecutive(path[0])
    assert collapsed[collapsed != 0].tolist() == [1, 2, 2, 3]
    spikes = forced_spikes(lp, n, targets, lengths)
    assert spikes[0][spikes[0] != IGNORE].tolist() == [1, 2, 2, 3]
    assert frame_hits(lp, n, path) == (
        int((lp.argmax(-1)[path != IGNORE] == path[path != IGNORE]).sum()),
        int((path != IGNORE).sum()),
    )


def test_recovered_share_of_the_gap():
    assert recovered(hard=0.9, soft=0.6, full=0.5) == pytest.approx(0.75)  # WER: lower is better
    assert recovered(hard=0.4, soft=0.4, full=0.4) is None
