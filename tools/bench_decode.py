"""Decoding real-time factor of teacher vs half-width student (and an N-member ensemble).

Times the acoustic model's forward pass plus greedy CTC decoding on random
80-dim features (10 ms frames) on one CPU thread, for the teacher width and
the half-width student, and reports real-time factors (seconds of compute per
second of audio; lower is faster) and speed-ups. Models are untrained: the
cost of a forward pass does not depend on the weights.

Usage::

    python tools/bench_decode.py --out tools/results/decode_rtf.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from benchkit import emit_report, median_seconds

from asr_kd.asr.decode import greedy_decode
from asr_kd.asr.ensemble import ensemble_log_probs
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel, count_parameters


def rtf(fn, audio_seconds: float, repeats: int) -> float:
    return median_seconds(fn, repeats) / audio_seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256, help="teacher LSTM units per direction")
    p.add_argument("--conv-channels", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--classes", type=int, default=257, help="blank + tokens")
    p.add_argument("--members", type=int, default=4, help="ensemble size")
    p.add_argument("--seconds", type=float, default=10.0, help="audio per utterance")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher_cfg = AcousticConfig(
        num_classes=args.classes, hidden=args.hidden, conv_channels=args.conv_channels, layers=args.layers
    )
    student_cfg = teacher_cfg.scaled(0.5)
    teacher, student = CTCAcousticModel(teacher_cfg).eval(), CTCAcousticModel(student_cfg).eval()
    members = [CTCAcousticModel(teacher_cfg).eval() for _ in range(args.members)]
    frames = int(args.seconds * 100)
    feats = torch.randn(args.batch, frames, 80)
    lengths = torch.full((args.batch,), frames)
    audio = args.seconds * args.batch

    @torch.no_grad()
    def decode(model):
        logits, n = model(feats, lengths)
        return greedy_decode(logits.log_softmax(-1), n)

    @torch.no_grad()
    def decode_ensemble():
        lp, n = ensemble_log_probs(members, feats, lengths)
        return greedy_decode(lp, n)

    r_teacher = rtf(lambda: decode(teacher), audio, args.repeats)
    r_student = rtf(lambda: decode(student), audio, args.repeats)
    r_ensemble = rtf(decode_ensemble, audio, args.repeats)
    cmd = "python tools/bench_decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Decoding speed: teacher, half-width student, ensemble",
        "",
        f"Command: `{cmd.strip()}`",
        f"One CPU thread, torch {torch.__version__}; {args.batch} x {args.seconds:g} s utterances of random "
        f"80-dim features; forward pass + greedy CTC decoding; median of {args.repeats}.",
        "",
        "| model | parameters | real-time factor | speed-up of the student |",
        "|---|---|---|---|",
        f"| teacher (hidden {teacher_cfg.hidden}, conv {teacher_cfg.conv_channels}) | "
        f"{count_parameters(teacher):,} | {r_teacher:.4f} | {r_teacher / r_student:.2f}x |",
        f"| ensemble of {args.members} teachers | {args.members * count_parameters(teacher):,} | "
        f"{r_ensemble:.4f} | {r_ensemble / r_student:.2f}x |",
        f"| student (hidden {student_cfg.hidden}, conv {student_cfg.conv_channels}) | "
        f"{count_parameters(student):,} | {r_student:.4f} | 1.00x |",
        "",
        f"Goals (issue: ASR recipe): student >= 2.5x faster than one teacher: "
        f"{'met' if r_teacher / r_student >= 2.5 else 'MISSED'}; >= 2.5N = {2.5 * args.members:g}x faster "
        f"than the ensemble: {'met' if r_ensemble / r_student >= 2.5 * args.members else 'MISSED'}.",
    ]
    emit_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
