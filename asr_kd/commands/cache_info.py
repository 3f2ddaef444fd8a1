"""``asr-kd cache-info DIR``: what a teacher-output cache holds and what it costs.

Example
-------
    asr-kd cache-info exp/synth_en/ensemble_cache
"""

from __future__ import annotations

import argparse
import json

from asr_kd.errors import UserError
from asr_kd.distill import CacheError, TeacherCache


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache-info", help="describe a teacher-output cache (size, completeness, fingerprint)")
    p.add_argument("cache_dir", help="the cache directory (holds meta.json and shard-*.pt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if Path(args.cache_dir).is_file():
        raise UserError(f"{args.cache_dir}: a file, not a cache folder; give the folder that holds meta.json "
                        "and shard-*.pt (e.g. exp/demo/ensembles/ensemble/cache)")
    try:
        cache = TeacherCache(args.cache_dir, fingerprint=None, allow_incomplete=True)
    except CacheError as err:
        raise UserError(str(err)) from None
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
