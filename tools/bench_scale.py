"""A LibriSpeech-scale plan from throughput measured on this machine.

Measures, with the models of a recipe config (default: recipes/librispeech, preset clean100):

- the front end: seconds of audio turned into stored log-Mels per second (``prepare``);
- a teacher's and a student's training step (forward + CTC + backward + AdamW) on batches of
  ``--batch`` utterances of ``--seconds`` s: seconds of audio trained on per second;
- a teacher's inference (no gradient): seconds of audio per second (the ``ensemble`` cache);

then extrapolates the stages' time for a corpus of H hours (train-clean-100 and 960 h) and its
disk (stored features: 80 float16 per 10 ms; the cache: top-k float16 log-probabilities plus
int16 class indices per 40 ms frame). Every throughput is measured; what is extrapolated
is written as such in the table. Quote it with the machine and the date.

Usage::

    python tools/bench_scale.py --threads 2 --out tools/results/scale_plan.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

CORPORA = {"train-clean-100": 100.6, "LibriSpeech 960 h": 961.1}  # hours of training audio


def timed(fn, repeats: int, device: str = "cpu") -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    times = []
    for _ in range(repeats):
        sync()
        began = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def front_end_rate(seconds: float, repeats: int, device: str) -> float:
    from asr_kd.data.features import FeatureConfig, FrontEnd

    fe, wav = FrontEnd(FeatureConfig()).to(device), torch.randn(16, int(16000 * seconds), device=device)
    lengths = torch.full((16,), wav.shape[1], device=device)
    return 16 * seconds / timed(lambda: fe(wav, lengths), repeats, device)


def model_rates(arch, batch: int, seconds: float, repeats: int, device: str) -> tuple[float, float]:
    """(training, inference) seconds of audio per second for one model of ``arch``."""
    from asr_kd.models.acoustic import CTCAcousticModel

    model = CTCAcousticModel(arch).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames = int(seconds * 100) + 1
    feats = torch.randn(batch, frames, arch.n_mels, device=device)
    lengths = torch.full((batch,), frames, device=device)
    tokens = torch.randint(1, arch.num_classes, (batch, int(seconds * 6)), device=device)

    def train_step() -> None:
        logits, out = model(feats, lengths)
        loss = torch.nn.functional.ctc_loss(
            logits.log_softmax(-1).transpose(0, 1),
            tokens,
            out,
            torch.full((batch,), tokens.shape[1], device=device),
            zero_infinity=True,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            model.eval()(feats, lengths)
        model.train()

    audio = batch * seconds
    return audio / timed(train_step, repeats, device), audio / timed(infer, repeats, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="recipes/librispeech/config.yaml")
    p.add_argument("--preset", default="clean100")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU host")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=12.3, help="utterance length (LibriSpeech's mean: 12.3 s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=256)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from asr_kd.asr.recipe import AsrRecipe, load_asr_config

    cfg = load_asr_config(args.config, args.preset, ["exp_dir=/nonexistent"])
    recipe = AsrRecipe(cfg)
    plan, s = recipe.ctx.plan, recipe.ctx.settings
    teacher = plan.teachers[0].architecture(args.num_classes, int(s.features.n_mels))
    student = next(sp for sp in plan.students if sp.name.startswith("student-kd")).architecture(
        args.num_classes, int(s.features.n_mels)
    )
    fe = front_end_rate(args.seconds, args.repeats, args.device)
    t_train, t_infer = model_rates(teacher, args.batch, args.seconds, args.repeats, args.device)
    s_train, _ = model_rates(student, args.batch, args.seconds, args.repeats, args.device)
    epochs, n_teachers, k = int(s.train.epochs), int(s.teachers.count), int(s.ensemble.top_k)
    students = len(plan.students)
    rows = [
        f"| measured on this machine ({args.device}) | seconds of audio per second |",
        "|---|---:|",
        f"| front end (log-Mel features) | {fe:,.0f} |",
        f"| teacher training step ({teacher.layers} x {teacher.hidden} BiLSTM) | {t_train:,.1f} |",
        f"| teacher inference (ensemble cache, per member) | {t_infer:,.1f} |",
        f"| student training step ({student.layers} x {student.hidden}) | {s_train:,.1f} |",
        "",
        f"| extrapolated (config: {n_teachers} teachers, {epochs} epochs, {students} students) | "
        + " | ".join(CORPORA)
        + " |",
        "|---|" + "---:|" * len(CORPORA),
    ]

    def line(label: str, fn) -> None:
        rows.append(f"| {label} | " + " | ".join(fn(h * 3600) for h in CORPORA.values()) + " |")

    def hours(x: float) -> str:
        h = x / 3600
        return f"{h:,.0f} h ({h / 24:,.0f} days)" if h >= 48 else f"{h:,.1f} h"

    line("disk: stored features (80 x fp16 per 10 ms)", lambda a: f"{a * 100 * 80 * 2 / 1e9:,.1f} GB")
    line(f"disk: ensemble cache (top-{k}, fp16 + int16 per 40 ms)", lambda a: f"{a * 25 * k * 4 / 1e9:,.1f} GB")
    line("prepare: features", lambda a: hours(a / fe))
    line(f"teachers: {n_teachers} x {epochs} epochs", lambda a: hours(n_teachers * epochs * a / t_train))
    line("ensemble: cache", lambda a: hours(n_teachers * a / t_infer))
    line(f"students: {students} x {epochs} epochs", lambda a: hours(students * epochs * a / s_train))
    text = "\n".join(rows)
    print(text)
    if args.out:
        from asr_kd.io import write_text

        cmd = "python tools/bench_scale.py " + " ".join(sys.argv[1:])
        head = (
            f"# LibriSpeech-scale plan\n\nMeasured {time.strftime('%Y-%m-%d')} with `{cmd}` "
            f"({args.device}, {args.threads} CPU threads, batches of {args.batch} x {args.seconds} s, "
            f"median of {args.repeats}).\n\n"
        )
        write_text(Path(args.out), head + text + "\n")


if __name__ == "__main__":
    main()
