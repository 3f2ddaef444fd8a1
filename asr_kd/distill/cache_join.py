"""One teacher cache written by several processes at once: parts, then a join.

Each of N processes (or machines) writes the items of its own share with an ordinary
:class:`~asr_kd.distill.CacheWriter` into ``ROOT/parts/I-of-N`` (:func:`part_dir`). When every
part is complete, :func:`join_parts` moves their shards into ``ROOT`` under the next free
numbers and writes ``ROOT``'s ``meta.json``, complete: the joined cache is read, indexed and
fingerprint-checked like one written by a single process. Moving a shard is a rename, so a
join killed midway resumes (the shards still in a part are moved on the next call).

Example
-------
>>> import tempfile, torch
>>> from asr_kd.distill import CacheWriter, TeacherCache
>>> root = tempfile.mkdtemp()
>>> for i in range(2):                      # what process i of 2 does, on its own items
...     with CacheWriter(part_dir(root, i, 2), num_classes=5, k=2, fingerprint={"m": 1}) as w:
...         w.add(f"utt{i}", torch.randn(3, 5))
>>> join_parts(root, 2)
2
>>> sorted(TeacherCache(root, fingerprint={"m": 1}).ids())
['utt0', 'utt1']
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .cache_format import CacheError, check_fingerprint, load_shard, read_meta, shard_path, shard_paths, write_meta

PARTS = "parts"


def part_dir(root: str | os.PathLike, part: int, parts: int) -> Path:
    """Where process ``part`` of ``parts`` writes its share of the cache at ``root``."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} is not one of 0..{parts - 1}")
    return Path(root) / PARTS / f"{part:03d}-of-{parts:03d}"


def join_parts(root: str | os.PathLike, parts: int) -> int:
    """Move the shards of the ``parts`` complete parts into ``root``; returns the items joined.

    Refused (nothing moved) when a part is missing or incomplete, when the parts differ in
    ``k``, classes or fingerprint, or when an item ID is in two parts.
    """
    root = Path(root)
    dirs = [part_dir(root, i, parts) for i in range(parts)]
    metas = []
    for d in dirs:
        if not d.exists():
            raise CacheError(f"{d}: part missing; the process writing it has not run (or ran with another count)")
        meta = read_meta(d)
        if not meta["complete"]:
            raise CacheError(f"{d}: part not complete; rerun the process that writes it")
        metas.append(meta)
    first = metas[0]
    for d, meta in zip(dirs[1:], metas[1:], strict=True):
        if (meta["k"], meta["num_classes"]) != (first["k"], first["num_classes"]):
            raise CacheError(
                f"{d}: k={meta['k']} of {meta['num_classes']} classes, part 0 has k={first['k']} of "
                f"{first['num_classes']}; every part must be written with the same settings"
            )
        check_fingerprint(d, meta["fingerprint"], first["fingerprint"])
    owner: dict[str, Path] = {}
    moves = []
    for d in dirs:
        for path in shard_paths(d):
            for item in load_shard(path)["ids"]:
                if item in owner:
                    raise CacheError(f"item {item!r} is in both {owner[item]} and {path}; the parts must be disjoint")
                owner[item] = path
            moves.append(path)
    done = shard_paths(root)  # shards a killed join moved already
    for path in done:
        for item in load_shard(path)["ids"]:
            if item in owner:
                raise CacheError(f"item {item!r} is in {path} and in {owner[item]}; delete {root} and rebuild")
    number = 1 + max((int(p.stem.split("-")[1]) for p in done), default=-1)
    kept = list(done)
    write_meta(root, first["k"], first["num_classes"], first["fingerprint"], kept, complete=False)
    for path in moves:
        target = shard_path(root, number)
        os.replace(path, target)
        kept.append(target)
        number += 1
    write_meta(root, first["k"], first["num_classes"], first["fingerprint"], kept, complete=True)
    shutil.rmtree(root / PARTS)
    return len(owner) + sum(len(load_shard(p)["ids"]) for p in done)
