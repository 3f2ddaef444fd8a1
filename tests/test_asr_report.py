"""The report's target arithmetic (the numbers RESULTS.md states)."""

import pytest

from asr_kd.asr.report import summarise_targets

SCORES = {
    "teacher-0": {"wer": 0.30},
    "teacher-1": {"wer": 0.34},
    "ensemble": {"wer": 0.28},
    "student-scratch": {"wer": 0.40},
    "student-kd": {"wer": 0.31},
    "student-kd-x1": {"wer": 0.29},
}


def test_recovered_share_and_same_size_student():
    t = summarise_targets(SCORES, ["teacher-0", "teacher-1"], "ensemble", same_size="student-kd-x1")
    assert t["mean_teacher_wer"] == pytest.approx(0.32)
    assert t["ensemble_relative_reduction"] == pytest.approx(0.04 / 0.32)
    assert t["recovered"] == pytest.approx(0.09 / 0.12, abs=1e-4)
    assert t["student_le_mean_teacher"] is True
    # the same-size student is compared with the members it is as wide as: (0.32 - 0.29) / (0.32 - 0.28)
    assert t["student-kd-x1_recovered_of_mean_teacher_gap"] == pytest.approx(0.75, abs=1e-4)
    assert "student-kd-x1_recovered_of_mean_teacher_gap" not in summarise_targets(
        SCORES, ["teacher-0", "teacher-1"], "ensemble"
    )


def test_no_gap_gives_none_not_a_division_error():
    flat = {k: {"wer": 1.0} for k in SCORES}
    t = summarise_targets(flat, ["teacher-0", "teacher-1"], "ensemble", same_size="student-kd-x1")
    assert t["recovered"] is None and t["student-kd-x1_recovered_of_mean_teacher_gap"] is None
