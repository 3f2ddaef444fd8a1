"""Time the MNIST recipe's smoke preset: a first run and the rerun that resumes it.

Timing used to be asserted in tests/test_mnist_recipe.py, where a busy machine made it fail;
it is measured here instead. Each repeat trains in a fresh temporary folder (deleted afterwards).

Usage:
    python tools/bench_mnist.py --repeats 3 --out tools/results/mnist_smoke_time.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from benchkit import emit_report  # noqa: E402

from asr_kd.image.config import default_config_path, load_config  # noqa: E402
from asr_kd.image.recipe import Recipe  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(default_config_path(), "smoke")
    first, again = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            Recipe(cfg, seed=0, data_dir=None, out_dir=Path(tmp), progress=False).run()
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            Recipe(cfg, seed=0, data_dir=None, out_dir=Path(tmp), progress=False).run()
            again.append(time.perf_counter() - start)
    lines = [
        "# MNIST smoke preset: wall time",
        "",
        f"Command: `python tools/bench_mnist.py --repeats {args.repeats} --threads {args.threads}`; "
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}.",
        "",
        "| run | median s | min s | max s |",
        "|---|---|---|---|",
        f"| first run (trains every model) | {statistics.median(first):.1f} | {min(first):.1f} | {max(first):.1f} |",
        f"| rerun (loads every model) | {statistics.median(again):.1f} | {min(again):.1f} | {max(again):.1f} |",
        "",
        f"Rerun / first run: {statistics.median(again) / statistics.median(first):.2f}.",
    ]
    emit_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
