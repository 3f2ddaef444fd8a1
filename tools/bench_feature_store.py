"""Memory of a training worker reading stored features: the sharded store against one file.

For each corpus size N it writes N synthetic utterances (``--frames`` x 80 float16, what a
~3 s utterance is after the front end) as a sharded store (``asr_kd.data.feature_store``)
and as the single ``torch.save`` file earlier versions wrote, then starts a fresh process per
format that reads every utterance once in random order (an epoch) and reports its memory
from ``/proc/self/status``: ``RssAnon`` (memory the process owns: what grows with the
corpus when features are loaded), ``RssFile`` (file pages mapped and resident: page cache
the kernel may drop at any time) and the peak ``VmHWM``.

Usage::

    python tools/bench_feature_store.py --sizes 1000 4000 16000 --out tools/results/feature_store.md
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

READER = r"""
import json, random, sys, time, torch
from asr_kd.asr.data import load_features

def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024  # MiB
    return out

base = status()
began = time.time()
feats = load_features(sys.argv[1])
ids = list(feats)
random.Random(0).shuffle(ids)
total = 0.0
for start in range(0, len(ids), 16):  # batches of 16, as training reads them
    total += sum(float(feats[i].float().mean()) for i in ids[start : start + 16])
print(json.dumps({"before": base, "after": status(), "seconds": time.time() - began, "n": len(ids)}))
"""


def write_both(root: Path, n: int, frames: int) -> tuple[Path, Path]:
    from asr_kd.data.feature_store import write_store

    g = torch.Generator().manual_seed(n)
    lengths = [max(20, int(frames * (0.5 + random.Random(i).random()))) for i in range(n)]
    ids = [f"utt{i:06d}" for i in range(n)]

    def compute(chunk):
        return {i: torch.randn(lengths[int(i[3:])], 80, generator=g).half() for i in chunk}

    store = root / f"store-{n}"
    write_store(store, ids, compute, {"n_mels": 80})
    from asr_kd.data.feature_store import FeatureStore

    single = root / f"single-{n}.pt"
    opened = FeatureStore(store)
    torch.save({"config": {"n_mels": 80}, "feats": {i: opened[i].clone() for i in ids}}, single)
    return store, single


def read_in_fresh_process(path: Path, mmap_legacy: bool) -> dict:
    code = READER
    if not mmap_legacy:  # the earlier reader: the whole file loaded into memory
        code = code.replace(
            "feats = load_features(sys.argv[1])", 'feats = torch.load(sys.argv[1], weights_only=False)["feats"]'
        )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--frames", type=int, default=300, help="mean frames per utterance (10 ms each)")
    p.add_argument("--out", default=None, help="write the markdown table here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            store, single = write_both(Path(tmp), n, args.frames)
            gib = sum(f.stat().st_size for f in store.glob("shard-*.pt")) / 2**30
            for name, path, mmap in (("sharded store (mmap)", store, True), ("one file, loaded", single, False)):
                r = read_in_fresh_process(path, mmap)
                a, b = r["after"], r["before"]
                rows.append(
                    f"| {n:,} | {gib:.2f} | {name} | {a['RssAnon'] - b['RssAnon']:.0f} | "
                    f"{a['RssFile'] - b['RssFile']:.0f} | {a['VmHWM']:.0f} | {r['seconds']:.1f} |"
                )
                print(rows[-1], flush=True)
            store_files = list(store.iterdir())
            for f in [*store_files, single]:
                f.unlink()
    table = [
        "| utterances | features GiB | reader | RssAnon growth MiB | RssFile growth MiB | peak VmHWM MiB | epoch s |",
        "|---:|---:|---|---:|---:|---:|---:|",
        *rows,
    ]
    text = "\n".join(table)
    print(text)
    if args.out:
        cmd = "python tools/bench_feature_store.py " + " ".join(sys.argv[1:])
        from asr_kd.io import write_text

        write_text(
            args.out, f"# Feature store memory\n\nMeasured {time.strftime('%Y-%m-%d')} with `{cmd}`.\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
