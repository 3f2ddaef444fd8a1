"""Decoding real-time factor of a teacher, its ensemble and students of several sizes and shapes.

Times the acoustic model's forward pass plus greedy CTC decoding on random
80-dim features (10 ms frames) on one CPU thread, for the teacher and each
``--student`` (``params:0.5``: the widest student with half the teacher's
parameters; ``width:0.5``: half the teacher's widths; ``...:layers=1``: the
student's own depth first; ``...:encoder=conv:layers=5``: another encoder), and
reports real-time factors (seconds of compute per second of audio; lower is
faster) and speed-ups. The models are timed in turns, one call each per round
(:func:`benchkit.interleaved_medians`), so a slow spell of the machine does not
bias their ratios. Models are untrained: the cost of a forward pass does not
depend on the weights. ``--runtime onnx`` times the same models exported to ONNX
(``asr_kd.models.export``, the feature normalisation inside, fp32 or ``--int8``) and run by
onnxruntime on one thread, the way a shipped model decodes.

Usage::

    python tools/bench_decode.py --out tools/results/decode_rtf.md
    python tools/bench_decode.py --hidden 128 --conv-channels 16 --classes 29 --members 3 \
        --student params:0.5 --student params:0.5:layers=1 --student width:0.5 \
        --student params:0.5:encoder=conv:layers=5:conv_channels=8
    python tools/bench_decode.py --hidden 128 --conv-channels 16 --classes 29 --runtime onnx
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from benchkit import emit_report, interleaved_medians

from asr_kd.asr.decode import greedy_decode
from asr_kd.asr.ensemble import ensemble_log_probs
from asr_kd.data.features import GlobalCMVN
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel, count_parameters, parameter_count
from asr_kd.models.bundle import save_bundle
from asr_kd.models.export import export_model, load_model


class Exported:
    """A model exported to ONNX and run by onnxruntime, called like the PyTorch model (log-posteriors
    in place of logits: greedy decoding and the ensemble's combination read both alike)."""

    def __init__(self, model: CTCAcousticModel, folder: Path, name: str, int8: bool) -> None:
        save_bundle(folder / f"{name}.pt", model, GlobalCMVN(model.cfg.n_mels), {"name": name})
        export_model(folder / f"{name}.pt", folder / f"{name}.onnx", int8=int8)
        self.exported = load_model(folder / f"{name}.onnx")
        self.cfg = model.cfg

    def eval(self) -> Exported:
        return self

    def __call__(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.exported.log_probs(feats, lengths)


def student_config(teacher: AcousticConfig, spec: str) -> AcousticConfig:
    """The student ``spec`` (``params:0.5``, ``width:0.5``, ``params:0.5:layers=1``) of ``teacher``.

    >>> t = AcousticConfig(num_classes=29, hidden=128, conv_channels=16)
    >>> student_config(t, "width:0.5").hidden, student_config(t, "params:0.5:layers=1").layers
    (64, 1)
    >>> student_config(t, "params:0.5:encoder=conv:layers=5").encoder
    'conv'
    """
    by, share, *shape = spec.split(":")
    if by not in ("params", "width"):
        raise SystemExit(f"--student {spec}: start with params: or width:")
    cfg = replace(teacher, **{k: int(v) if v.isdigit() else v for k, v in (item.split("=") for item in shape)})
    if by == "width":
        return cfg.scaled(float(share))
    return cfg.fitted(int(float(share) * parameter_count(teacher)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256, help="teacher LSTM units per direction")
    p.add_argument("--conv-channels", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--encoder", default="blstm", help="the teacher's encoder (blstm | conv)")
    p.add_argument("--kernel", type=int, default=15, help="conv encoder: frames per depthwise convolution")
    p.add_argument("--classes", type=int, default=257, help="blank + tokens")
    p.add_argument("--members", type=int, default=4, help="ensemble size")
    p.add_argument("--seconds", type=float, default=10.0, help="audio per utterance")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path)
    p.add_argument("--packed", action="store_true", help="the BiLSTM on packed sequences (default: padded)")
    p.add_argument("--runtime", choices=["torch", "onnx"], default="torch", help="PyTorch eager, or ONNX Runtime")
    p.add_argument("--int8", action="store_true", help="--runtime onnx: int8 weights (asr-kd export --int8)")
    p.add_argument(
        "--student",
        action="append",
        help="a student: params:SHARE or width:SCALE, optionally :layers=N:encoder=conv... (repeatable; default "
        "params:0.5, params:0.5:layers=1, width:0.5)",
    )
    args = p.parse_args(argv)
    args.student = args.student or ["params:0.5", "params:0.5:layers=1", "width:0.5"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher_cfg = AcousticConfig(
        num_classes=args.classes,
        hidden=args.hidden,
        conv_channels=args.conv_channels,
        layers=args.layers,
        packed=args.packed,
        encoder=args.encoder,
        kernel=args.kernel,
    )
    teacher = CTCAcousticModel(teacher_cfg).eval()
    students = {spec: CTCAcousticModel(student_config(teacher_cfg, spec)).eval() for spec in args.student}
    members = [CTCAcousticModel(teacher_cfg).eval() for _ in range(args.members)]
    t, params = count_parameters(teacher), {spec: count_parameters(m) for spec, m in students.items()}
    runtime = f"torch {torch.__version__}"
    if args.runtime == "onnx":
        import onnxruntime

        runtime = f"onnxruntime {onnxruntime.__version__}, {'int8' if args.int8 else 'fp32'} (asr-kd export)"
        tmp = Path(tempfile.mkdtemp(prefix="bench-decode-"))

        def ship(model: CTCAcousticModel, name: str) -> Any:
            return cast(Any, Exported(model, tmp, name, args.int8))

        teacher = ship(teacher, "teacher")
        students = {spec: ship(m, f"student{i}") for i, (spec, m) in enumerate(students.items())}
        members = [ship(m, f"member{i}") for i, m in enumerate(members)]
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

    fns = {"teacher": lambda: decode(teacher), "ensemble": decode_ensemble}
    fns.update({spec: (lambda model=model: decode(model)) for spec, model in students.items()})
    rtfs = {name: seconds / audio for name, seconds in interleaved_medians(fns, args.repeats).items()}
    r_teacher, r_ensemble = rtfs["teacher"], rtfs["ensemble"]
    cmd = "python tools/bench_decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Decoding speed: teacher, ensemble, students",
        "",
        f"Command: `{cmd.strip()}`",
        f"One CPU thread, {runtime}; {args.batch} x {args.seconds:g} s utterances of random "
        f"80-dim features; forward pass + greedy CTC decoding; median of {args.repeats}, the models timed in "
        f"turns; BiLSTM {'packed' if args.packed else 'on padded batches'}.",
        "",
        "| model | parameters | share of a teacher's | real-time factor | speed-up vs teacher | vs ensemble |",
        "|---|---|---|---|---|---|",
        f"| teacher ({teacher_cfg.encoder} {teacher_cfg.hidden} x {teacher_cfg.layers} layers, "
        f"conv {teacher_cfg.conv_channels}) "
        f"| {t:,} | 100% | {r_teacher:.5f} | | |",
        f"| ensemble of {args.members} teachers | {args.members * t:,} | {100 * args.members}% "
        f"| {r_ensemble:.5f} | | |",
    ]
    for spec, model in students.items():
        r = rtfs[spec]
        c, n = model.cfg, params[spec]
        lines.append(
            f"| student `{spec}` ({c.encoder} {c.hidden} x {c.layers} layers, conv {c.conv_channels}) | {n:,} | "
            f"{100 * n / t:.0f}% | {r:.5f} | {r_teacher / r:.2f}x | {r_ensemble / r:.2f}x |"
        )
    emit_report(lines, args.out)
    if args.runtime == "onnx":
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
