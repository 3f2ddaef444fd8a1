"""Benchmark the specialists' combination: ``combine_specialists`` against the direct KL form.

The combination (the paper's Section 5) finds, per case, the distribution closest to the
generalist and its active specialists by Adam steps. ``combine_specialists`` computes each
specialist's term on its active rows only, as a cross-entropy whose probabilities are computed
once; the direct form (the code before 2026-12-06) evaluates every KL on every row, weighted by
the active mask. Both take the same steps, so they must agree; this times them in turns on
speech-like shapes (257 classes, the 4 piece subsets of the ``specialists`` preset's sizes:
9, 237, 7, 3) and reports the medians, the speed-up and the largest difference.

Usage::

    python tools/bench_specialists.py                     # print a Markdown report
    python tools/bench_specialists.py --out tools/results/specialists_combine.md
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from benchkit import emit_report, interleaved_medians

from asr_kd.distill.specialists import active_specialists, collapse_to_specialist, combine_specialists


def direct(p_g, outs, subsets, active, steps: int, lr: float) -> torch.Tensor:
    """The direct form: ``sum KL(p_g||q) + active_m KL(p_m||q_m)`` over every row."""

    def kl(log_p, log_q):
        p = log_p.exp()
        return torch.where(p > 0, p * (log_p - log_q), p.new_zeros(())).sum(-1)

    p_g = torch.log_softmax(p_g.double(), -1)
    targets = [torch.log_softmax(o.double(), -1) for o in outs]
    z = p_g.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(steps):
        log_q = torch.log_softmax(z, -1)
        loss = kl(p_g, log_q)
        for m, s in enumerate(subsets):
            loss = loss + active[:, m].double() * kl(targets[m], collapse_to_specialist(log_q, s))
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        decay.step()
    return torch.log_softmax(z.detach(), -1).float()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000, help="frames whose generalist emits a piece")
    p.add_argument("--classes", type=int, default=257)
    p.add_argument("--sizes", type=int, nargs="+", default=[9, 237, 7, 3], help="subset sizes")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pieces = (torch.randperm(args.classes - 1) + 1).tolist()  # class 0 is blank, in no subset
    subsets, start = [], 0
    for size in args.sizes:
        subsets.append(pieces[start : start + size])
        start += size
    g = torch.randn(args.frames, args.classes) * 3
    g[:, 0] = -10.0  # frames where the generalist emits a piece: the ones that get combined
    outs = [torch.randn(args.frames, len(s) + 2) for s in subsets]  # blank, subset, dustbin
    full = [[0, *s] for s in subsets]
    active = active_specialists(g, subsets, 1)
    results: dict[str, torch.Tensor] = {}

    def run(name, fn):
        return lambda: results.__setitem__(name, fn(g, outs, full, active, args.steps, args.lr))

    times = interleaved_medians(
        {"direct": run("direct", direct), "combine_specialists": run("fast", combine_specialists)},
        repeats=args.repeats,
        warmup=0,
    )
    diff = float((results["fast"] - results["direct"]).abs().max())
    per = {k: 1000 * v / args.frames for k, v in times.items()}
    lines = [
        "# Specialists' combination benchmark",
        "",
        f"Command: `python tools/bench_specialists.py --repeats {args.repeats} --out "
        "tools/results/specialists_combine.md`",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} CPU thread(s)",
        f"Shape: {args.frames} frames x {args.classes} classes, subsets of {args.sizes} (one active per frame), "
        f"{args.steps} Adam steps from lr {args.lr}; median of {args.repeats}, the two timed in turns",
        "",
        "| form | median s | ms per frame |",
        "|---|---|---|",
        *(f"| {k} | {v:.2f} | {per[k]:.2f} |" for k, v in times.items()),
        "",
        f"Speed-up: {times['direct'] / times['combine_specialists']:.2f}x; "
        f"largest difference of the log-probabilities: {diff:.2e}.",
    ]
    emit_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
