"""Reading a teacher cache: random access by ID, padded batches, what it costs on disk.

:class:`TeacherCache` opens a finished cache, refuses it when it is incomplete or was made
with another fingerprint, and memory-maps every shard, so looking up an ID touches only
that item's pages and the cache never has to fit in memory.

Example
-------
>>> import tempfile, torch
>>> from asr_kd.distill.cache_writer import CacheWriter
>>> root = tempfile.mkdtemp()
>>> with CacheWriter(root, num_classes=10, k=3, fingerprint={"n_mels": 80}) as w:
...     w.add("a", torch.randn(2, 10))
...     w.add("b", torch.randn(5, 10))
>>> cache = TeacherCache(root, fingerprint={"n_mels": 80})
>>> top, mask = cache.batch(["a", "b"])
>>> tuple(top.log_probs.shape), mask.sum(1).tolist()
((2, 5, 3), [2, 5])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .cache_format import CacheError, check_fingerprint, index_dtype, load_shard, read_meta, shard_paths
from .targets import TopK


class TeacherCache:
    """Read-only random access by ID to a finished teacher cache.

    Args:
        root: cache directory.
        fingerprint: the reader's configuration, required: refused when it
            differs from the stored one. Pass ``None`` explicitly only to
            inspect a cache (``checked`` is then False, and training refuses it).
        allow_incomplete: read the finished shards of an unfinished cache.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        fingerprint: Mapping[str, Any] | None,
        allow_incomplete: bool = False,
    ):
        self.root = Path(root)
        meta = read_meta(self.root)
        if not meta["complete"] and not allow_incomplete:
            raise CacheError(
                f"teacher cache {self.root} is incomplete ({len(shard_paths(self.root))} "
                "shard(s) written; its "
                "writer was interrupted or is still running). Rerun the stage that produces it to resume."
            )
        check_fingerprint(self.root, meta["fingerprint"], fingerprint)
        self.checked = fingerprint is not None
        self.meta = meta
        self.k: int = meta["k"]
        self.num_classes: int = meta["num_classes"]
        self._shards = [load_shard(p) for p in shard_paths(self.root)]
        self._where: dict[str, tuple[int, int]] = {}
        for s, shard in enumerate(self._shards):
            for row, item_id in enumerate(shard["ids"]):
                self._where[item_id] = (s, row)

    def ids(self) -> Iterable[str]:
        return self._where.keys()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._where

    def num_frames(self, item_id: str) -> int:
        s, row = self._locate(item_id)
        offsets = self._shards[s]["offsets"]
        return int(offsets[row + 1] - offsets[row])

    def _locate(self, item_id: str) -> tuple[int, int]:
        try:
            return self._where[item_id]
        except KeyError:
            raise KeyError(
                f"ID {item_id!r} is not in the teacher cache {self.root} ({len(self)} IDs); "
                "was the cache made from another manifest?"
            ) from None

    def __getitem__(self, item_id: str) -> TopK:
        """The item's ``(frames, k)`` log-probs (float32) and indices (int64)."""
        s, row = self._locate(item_id)
        shard = self._shards[s]
        a, b = int(shard["offsets"][row]), int(shard["offsets"][row + 1])
        return TopK(shard["log_probs"][a:b].float(), shard["indices"][a:b].long())

    def batch(self, item_ids: Sequence[str], num_frames: int | None = None) -> tuple[TopK, Tensor]:
        """Pad items to ``(batch, frames, k)`` plus a ``(batch, frames)`` mask of real frames.

        Padding has log-prob 0 and index 0 (finite, and masked out by the losses).
        ``num_frames`` pads to a given length (e.g. the student's output length).
        """
        items = [self[i] for i in item_ids]
        longest = max((t.log_probs.shape[0] for t in items), default=0)
        frames = longest if num_frames is None else num_frames
        if frames < longest:
            raise ValueError(f"num_frames={frames} is shorter than the longest cached item ({longest})")
        log_probs = torch.zeros(len(items), frames, self.k)
        indices = torch.zeros(len(items), frames, self.k, dtype=torch.long)
        mask = torch.zeros(len(items), frames, dtype=torch.bool)
        for b, t in enumerate(items):
            n = t.log_probs.shape[0]
            log_probs[b, :n], indices[b, :n], mask[b, :n] = t.log_probs, t.indices, True
        return TopK(log_probs, indices), mask

    def size_bytes(self) -> int:
        """Bytes on disk of the shards and metadata."""
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())

    def bytes_per_frame(self) -> float:
        """Payload bytes per cached frame: ``k * (2 + index bytes)``."""
        return float(self.k * (2 + index_dtype(self.num_classes).itemsize))

    def disk_bytes_per_frame(self) -> float:
        """Bytes on disk per frame, shard overhead and metadata included."""
        frames = sum(int(s["offsets"][-1]) for s in self._shards)
        return self.size_bytes() / max(frames, 1)
