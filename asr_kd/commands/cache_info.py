"""``asr-kd cache-info DIR``: what a teacher-output cache holds and what it costs.

Example
-------
    asr-kd cache-info exp/synth_en/ensemble_cache

The same, from Python (the lines are the command's output):

>>> import argparse, tempfile, torch
>>> from asr_kd.distill import CacheWriter
>>> root = tempfile.mkdtemp()
>>> with CacheWriter(root, num_classes=100, k=16, fingerprint={"n_mels": 80}) as w:
...     w.add("utt1", torch.randn(50, 100))
>>> run(argparse.Namespace(cache_dir=root))  # doctest: +ELLIPSIS
cache:        ...
complete:     yes
items:        1 IDs, 50 frames
targets:      top-16 of 100 classes
size:         ... MB on disk, ... bytes/frame (...% of dense float32)
fingerprint:  {"n_mels": 80}
0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asr_kd.distill import TeacherCache
from asr_kd.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache-info", help="describe a teacher-output cache (size, completeness, fingerprint)")
    p.add_argument("cache_dir", help="the cache directory (holds meta.json and shard-*.pt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if Path(args.cache_dir).is_file():
        raise UserError(
            f"{args.cache_dir}: a file, not a cache folder; give the folder that holds meta.json "
            "and shard-*.pt (e.g. exp/demo/ensembles/ensemble/cache)"
        )
    # A CacheError (missing, unreadable, other format) is a UserError: the CLI prints it as one line.
    cache = TeacherCache(args.cache_dir, fingerprint=None, allow_incomplete=True)
    frames = sum(cache.num_frames(i) for i in cache.ids())
    dense = 4 * cache.num_classes
    print(f"cache:        {args.cache_dir}")
    print(f"complete:     {'yes' if cache.meta['complete'] else 'NO (interrupted; rerun the producing stage)'}")
    print(f"items:        {len(cache)} IDs, {frames} frames")
    print(f"targets:      top-{cache.k} of {cache.num_classes} classes")
    print(
        f"size:         {cache.size_bytes() / 1e6:.2f} MB on disk, {cache.disk_bytes_per_frame():.1f} bytes/frame "
        f"({100 * cache.disk_bytes_per_frame() / dense:.2f}% of dense float32)"
    )
    print("fingerprint:  " + json.dumps(cache.meta["fingerprint"], sort_keys=True))
    return 0
