"""Benchmark the distillation core: soft loss cost vs cross-entropy, cache size.

Times forward + backward of the soft-target loss on ``batch x frames x classes``
student logits (default 32 x 500 x 1,000), with a dense teacher and with a
top-16 teacher, against plain cross-entropy on the same shapes, and reports the
median of several repeats and the ratios. Then writes a teacher cache of the
same frames at k=16 and reports its bytes per frame against dense float32.

Usage::

    python tools/bench_distill.py                       # print a Markdown report
    python tools/bench_distill.py --out tools/results/distill_bench.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from benchkit import emit_report, median_seconds

from asr_kd.distill import CacheWriter, TeacherCache, TopK, soft_target_loss


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (args.batch, args.frames, args.classes)
    dev = torch.device(args.device)
    student = (torch.randn(shape, device=dev) * 3).requires_grad_(True)
    teacher = torch.randn(shape, device=dev) * 3
    labels = teacher.argmax(-1)
    top = TopK.from_logits(teacher, args.k)
    T = args.temperature

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(loss_fn):
        def run() -> None:
            student.grad = None
            loss_fn().backward()
            sync()

        return run

    ce = median_seconds(step(lambda: F.cross_entropy(student.view(-1, args.classes), labels.view(-1))), args.repeats)
    dense = median_seconds(step(lambda: soft_target_loss(student, teacher, T)), args.repeats)
    sparse = median_seconds(step(lambda: soft_target_loss(student, top, T)), args.repeats)

    frames = args.batch * args.frames
    with tempfile.TemporaryDirectory() as tmp:
        with CacheWriter(tmp, num_classes=args.classes, k=args.k, fingerprint={"bench": 1}, shard_size=8) as w:
            for b in range(args.batch):
                w.add(f"utt{b:04d}", TopK(top.log_probs[b].cpu(), top.indices[b].cpu()))
        cache = TeacherCache(tmp, fingerprint={"bench": 1})
        payload = cache.bytes_per_frame()
        on_disk = cache.disk_bytes_per_frame()
    dense_bytes = 4 * args.classes

    cmd = "python tools/bench_distill.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Distillation core benchmark",
        "",
        f"Command: `{cmd.strip()}`",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} CPU threads"
        + (f", device {args.device}" if args.device != "cpu" else ""),
        f"Shape: {args.batch} x {args.frames} frames x {args.classes} classes, T={T:g}, "
        f"median of {args.repeats} forward+backward passes",
        "",
        "| loss | median ms | ratio to cross-entropy |",
        "|---|---|---|",
        f"| cross-entropy (hard labels) | {ce * 1e3:.1f} | 1.00 |",
        f"| soft KL, dense teacher | {dense * 1e3:.1f} | {dense / ce:.2f} |",
        f"| soft KL, top-{args.k} teacher | {sparse * 1e3:.1f} | {sparse / ce:.2f} |",
        "",
        f"Goals: dense KD <= 2x cross-entropy: {'met' if dense / ce <= 2 else 'MISSED'} "
        f"({dense / ce:.2f}x); top-{args.k} cheaper than dense: "
        f"{'met' if sparse < dense else 'MISSED'} ({sparse / dense:.2f}x dense).",
        "",
        f"Teacher cache at k={args.k}, {args.classes} classes ({frames} frames written):",
        f"- payload {payload:.0f} bytes/frame (float16 log-probs + int16 indices) = "
        f"{100 * payload / dense_bytes:.2f}% of dense float32 ({dense_bytes} bytes/frame);",
        f"- on disk with shard overhead: {on_disk:.1f} bytes/frame = {100 * on_disk / dense_bytes:.2f}%.",
        f"Goal <= 3% of dense float32: {'met' if on_disk / dense_bytes <= 0.03 else 'MISSED'}.",
    ]
    emit_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
