"""Measure the synthetic corpus's throughput (seconds of audio per wall-clock second).

Synthesises a preset into a temporary folder (deleted afterwards), ``--repeats`` times, and
writes the median wall time and throughput, the command and the machine to a Markdown file.

Usage:
    python tools/bench_synth.py --preset demo full --jobs 2 --out tools/results/synth_throughput.md

What tests/test_data_synth.py used to assert (the tiny preset under 30 s), timed instead:
    python tools/bench_synth.py --preset tiny --seed 3 --noise 0.5 --reverb 0.5 --jobs 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_kd import logs
from asr_kd.data.synth import synthesize_corpus


def main() -> int:
    logs.setup()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", nargs="+", default=["demo"], choices=["tiny", "demo", "full"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--reverb", type=float, default=0.0)
    ap.add_argument(
        "--extra-voices",
        default="auto",
        choices=["auto", "yes", "no"],
        help="flite/festival voices: auto (those installed), yes (required), no (espeak-ng only)",
    )
    ap.add_argument("--repeats", type=int, default=1, help="runs per preset; the median is reported")
    ap.add_argument("--out", default=None, help="Markdown file to write (default: print only)")
    args = ap.parse_args()
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for preset in args.preset:
        walls = []
        for _ in range(args.repeats):
            tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
            try:
                t0 = time.perf_counter()
                synthesize_corpus(
                    tmp / "c",
                    preset=preset,
                    seed=args.seed,
                    jobs=args.jobs,
                    noise_prob=args.noise,
                    reverb_prob=args.reverb,
                    progress=True,
                    extra_voices={"yes": True, "no": False}.get(args.extra_voices, "auto"),
                )
                walls.append(time.perf_counter() - t0)
                meta = json.loads((tmp / "c" / "synth.json").read_text())
                size = sum(p.stat().st_size for p in (tmp / "c").rglob("*") if p.is_file())
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        wall = statistics.median(walls)
        audio = meta["seconds_of_audio"]
        n = sum(meta["options"]["utterances"])
        voices = sum(len(v) for v in meta["options"]["voices"].values())
        every = [v for vs in meta["options"]["voices"].values() for v in vs]
        flite = sum(v.startswith("flite+") for v in every)
        festival = sum(v.startswith("festival+") for v in every)
        rows.append(
            f"| {preset} | {n} | {voices} ({flite} flite, {festival} festival) | {audio / 3600:.2f} h | "
            f"{wall:.1f} s ({min(walls):.1f}-{max(walls):.1f}) | "
            f"**{audio / wall:.0f}x real time** | {args.jobs} | {size / 2**20:.0f} MiB |"
        )
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cmd = (
        f"python tools/bench_synth.py --preset {' '.join(args.preset)} --jobs {args.jobs} --seed {args.seed}"
        f" --extra-voices {args.extra_voices}"
        + (f" --repeats {args.repeats}" if args.repeats > 1 else "")
        + (f" --noise {args.noise}" if args.noise else "")
        + (f" --reverb {args.reverb}" if args.reverb else "")
    )
    lines = [
        "# Synthetic corpus throughput",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, Python {platform.python_version()}; "
        f"load average {load0:.2f} before and {load1:.2f} after (the cores may be shared with other work).",
        "",
        "| preset | utterances | voices | audio | wall, median (min-max) | throughput | processes | disk |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Wall time covers planning, espeak-ng synthesis (22,050 Hz; flite and festival voices when installed "
        "and not turned off), resampling to 16 kHz, noise/reverberation when asked, writing 16-bit WAV files and the "
        "manifests.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmpf = out.with_name(f".{out.name}.tmp")
        tmpf.write_text(text)
        os.replace(tmpf, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
