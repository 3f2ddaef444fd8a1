"""Writing a teacher cache: items in, complete shards out, an interrupted run resumed.

:class:`CacheWriter` keeps added items in memory until it has ``shard_size`` of them,
then writes them as one shard (a temporary name, then renamed). ``meta.json`` is
rewritten after every shard and says ``complete: true`` only after :meth:`CacheWriter.close`
with ``complete=True`` (leaving a ``with`` block without an exception does that).

Resuming: a new writer on the same directory checks the stored fingerprint and
``k``/``num_classes``, deletes the ``*.tmp`` files a killed writer left, and knows the IDs
of the finished shards (``item_id in writer``), so a producer skips them and adds the rest.
Only one writer at a time may work on a directory (a lock file).

Example
-------
>>> import tempfile, torch
>>> root = tempfile.mkdtemp()
>>> w = CacheWriter(root, num_classes=10, k=3, fingerprint={"n_mels": 80}, shard_size=2)
>>> w.add("utt1", torch.randn(7, 10))
>>> w.close(complete=False)            # interrupted: one item pending, now written
>>> with CacheWriter(root, num_classes=10, k=3, fingerprint={"n_mels": 80}) as w:
...     for item in ("utt1", "utt2"):
...         if item not in w:          # resume: utt1 is already there
...             w.add(item, torch.randn(4, 10))
>>> sorted(w.done())
['utt1', 'utt2']
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import Tensor

from .cache_format import (
    LOCK,
    META,
    CacheError,
    Shard,
    check_fingerprint,
    index_dtype,
    load_shard,
    read_meta,
    save_shard,
    shard_path,
    shard_paths,
    write_meta,
)
from .targets import TopK

log = logging.getLogger(__name__)


class CacheWriter:
    """Writes teacher outputs to a cache directory, resuming an interrupted run.

    Args:
        root: cache directory (created when missing).
        num_classes: ``C``; ``k`` is capped at ``C`` (``k == C`` keeps everything).
        k: how many of the most probable classes to keep per position.
        fingerprint: what produced the outputs; must equal the stored one on resume.
        shard_size: items per shard.

    Use :meth:`done` (or ``id in writer``) to skip items already cached.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_classes: int,
        k: int = 16,
        fingerprint: Mapping[str, Any] | None = None,
        shard_size: int = 1000,
    ):
        if k < 1 or num_classes < 1 or shard_size < 1:
            raise ValueError("k, num_classes and shard_size must be >= 1")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.k = min(k, num_classes)
        self.num_classes = num_classes
        self.shard_size = shard_size
        self.fingerprint = dict(fingerprint or {})
        self.index_dtype = index_dtype(num_classes)
        # One writer at a time: a second one would delete the first's in-flight shard.
        self._lock = open(self.root / LOCK, "w")  # held until close
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise CacheError(f"another process is writing the teacher cache {self.root}; wait for it") from None
        try:
            self._check_existing()
            self._shards = shard_paths(self.root)
            self._done = {item_id for path in self._shards for item_id in load_shard(path)["ids"]}
        except BaseException:
            self._release()
            raise
        self._write_meta(complete=False)
        self._pending: list[tuple[str, Tensor, Tensor]] = []
        self._pending_ids: set[str] = set()

    def _check_existing(self) -> None:
        """Clear what a killed writer left, and refuse a cache made for another configuration."""
        for stale in self.root.glob("*.tmp"):  # left by a killed writer: redo its items
            log.debug(f"removing {stale}, left by an interrupted writer")
            stale.unlink()
        has_meta = (self.root / META).exists()
        if not has_meta and shard_paths(self.root):
            raise CacheError(
                f"{self.root} holds cache shards but no meta.json, so their origin cannot be checked; "
                "delete the directory and rebuild the cache"
            )
        if has_meta:
            meta = read_meta(self.root)
            check_fingerprint(self.root, meta["fingerprint"], self.fingerprint)
            if (meta["k"], meta["num_classes"]) != (self.k, self.num_classes):
                raise CacheError(
                    f"teacher cache {self.root} holds k={meta['k']} of {meta['num_classes']} classes, "
                    f"asked for k={self.k} of {self.num_classes}; use another directory or delete it"
                )

    def _write_meta(self, complete: bool) -> None:
        write_meta(self.root, self.k, self.num_classes, self.fingerprint, self._shards, complete)

    def done(self) -> set[str]:
        """IDs already cached (including those added but not yet flushed)."""
        return self._done | self._pending_ids

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._done or item_id in self._pending_ids

    def _top_k(self, item_id: str, outputs: Tensor | TopK) -> TopK:
        """The item's :class:`TopK` at this cache's ``k``, checked against its classes."""
        if isinstance(outputs, TopK):
            if outputs.k != self.k:
                raise ValueError(f"TopK has k={outputs.k}, the cache stores k={self.k}")
            top = outputs
            if top.indices.numel() and (top.indices.min() < 0 or top.indices.max() >= self.num_classes):
                raise ValueError(f"TopK for {item_id!r} has class indices outside 0..{self.num_classes - 1}")
        else:
            if outputs.shape[-1] != self.num_classes:
                raise ValueError(
                    f"outputs for {item_id!r} have {outputs.shape[-1]} classes, cache expects {self.num_classes}"
                )
            top = TopK.from_logits(outputs.detach(), self.k)
        if top.log_probs.dim() != 2:
            raise ValueError(f"outputs for {item_id!r} must be (frames, classes), got {tuple(top.log_probs.shape)}")
        return top

    def add(self, item_id: str, outputs: Tensor | TopK) -> None:
        """Add one item's ``(frames, C)`` logits / log-probs, or its :class:`TopK`."""
        if item_id in self:
            raise CacheError(f"ID {item_id!r} is already in the cache {self.root}; IDs must be unique")
        top = self._top_k(item_id, outputs)
        self._pending_ids.add(item_id)
        self._pending.append((item_id, top.log_probs.to("cpu", torch.float16), top.indices.to("cpu", self.index_dtype)))
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the pending items as one complete shard (temporary name, then rename)."""
        if not self._pending:
            return
        lengths = torch.tensor([lp.shape[0] for _, lp, _ in self._pending], dtype=torch.int64)
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = lengths.cumsum(0)
        shard: Shard = {
            "ids": [i for i, _, _ in self._pending],
            "offsets": offsets,
            "log_probs": torch.cat([lp for _, lp, _ in self._pending]),
            "indices": torch.cat([ix for _, _, ix in self._pending]),
        }
        # Next number after the highest existing one: never overwrite a shard, even when
        # one in the middle was deleted (its items are then simply missing and redone).
        number = 1 + max((int(p.stem.split("-")[1]) for p in self._shards), default=-1)
        path = shard_path(self.root, number)
        if path.exists():
            raise CacheError(f"{path} exists already; is another process writing this cache?")
        save_shard(path, shard)
        self._shards.append(path)
        self._done.update(shard["ids"])
        self._pending.clear()
        self._pending_ids.clear()
        self._write_meta(complete=False)

    def close(self, complete: bool = True) -> None:
        """Flush, and mark the cache complete (readable) when ``complete``."""
        try:
            self.flush()
            self._write_meta(complete=complete)
        finally:
            self._release()

    def _release(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # On an exception, keep the finished shards (resumable) but do not mark complete.
        self.close(complete=exc_type is None)
