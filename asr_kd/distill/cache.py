"""Teacher-output cache: top-k log-probabilities per ID, in shards, fingerprinted.

Layout of a cache directory::

    meta.json          format, k, num_classes, fingerprint, complete flag
    shard-00000.pt     one torch file per shard, written as .tmp then renamed
    shard-00001.pt

A shard holds many items (utterances or samples), each keyed by its **ID**
(never a batch index): the item's ``(frames, k)`` float16 log-probabilities
at temperature 1, their ``(frames, k)`` class indices (int16 when the classes
fit, else int32), concatenated, with per-ID offsets. Shards are read with
``torch.load(mmap=True)``, so random access by ID touches only the pages
of that item and the whole cache never has to fit in memory.

Safety:

- ``fingerprint``: a dict of whatever produced the outputs (features,
  subsampling, tokenizer, teacher checkpoints ...). It is stored in meta.json
  and compared on read and on resume; a mismatch is refused with an error that
  names each differing field.
- A shard only exists under its final name once completely written
  (``os.replace`` of a temporary file). A writer killed mid-shard leaves a
  ``.tmp`` file that the next writer deletes; the items in it are redone.
- ``meta.json`` says ``complete: true`` only after :meth:`CacheWriter.close`
  with ``complete=True``; a reader refuses an incomplete cache (pass
  ``allow_incomplete=True`` to read the finished shards anyway).

Example
-------
>>> import tempfile, torch
>>> root = tempfile.mkdtemp()
>>> with CacheWriter(root, num_classes=10, k=3, fingerprint={"n_mels": 80}) as w:
...     w.add("utt1", torch.randn(7, 10))   # dense logits or log-probs, or a TopK
...     w.add("utt2", torch.randn(4, 10))
>>> cache = TeacherCache(root, fingerprint={"n_mels": 80})   # required: refused if it differs
>>> cache["utt1"].log_probs.shape, cache["utt1"].indices.dtype
(torch.Size([7, 3]), torch.int64)
>>> sorted(cache.ids())
['utt1', 'utt2']
>>> cache.bytes_per_frame()
12.0
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from .targets import TopK

FORMAT = "asr-kd-teacher-cache/1"
META = "meta.json"
LOCK = "writer.lock"


class CacheError(RuntimeError):
    """A cache that cannot be used as asked: incomplete, mismatched, or corrupt."""


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fingerprint_differences(
    stored: Mapping[str, Any], expected: Mapping[str, Any], stored_label: str = "cache"
) -> list[str]:
    """Human-readable differences between two (nested) fingerprints, one per field.

    Values are compared after a JSON round trip, so tuples equal lists.

    >>> fingerprint_differences({"a": 1, "f": {"n": 80}}, {"a": 1, "f": {"n": 40}})
    ["field 'f.n': cache has 80, expected 40"]
    """
    s = _flatten(json.loads(json.dumps(stored)))
    e = _flatten(json.loads(json.dumps(expected)))
    diffs = []
    for key in sorted(set(s) | set(e)):
        if key not in s:
            diffs.append(f"field {key!r}: missing from the {stored_label}, expected {e[key]!r}")
        elif key not in e:
            diffs.append(f"field {key!r}: {stored_label} has {s[key]!r}, missing from the expected config")
        elif s[key] != e[key]:
            diffs.append(f"field {key!r}: {stored_label} has {s[key]!r}, expected {e[key]!r}")
    return diffs


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())

    _write_atomic(path, write)


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / META
    if not path.exists():
        raise CacheError(f"{path}: no teacher cache here (meta.json missing); produce it first")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CacheError(f"{path}: unreadable cache metadata ({err}); delete the cache and rebuild it")
    if meta.get("format") != FORMAT:
        raise CacheError(f"{path}: format {meta.get('format')!r}, this version reads {FORMAT!r}")
    return meta


def _check_fingerprint(root: Path, stored: Mapping[str, Any], expected: Mapping[str, Any] | None) -> None:
    if expected is None:
        return
    diffs = fingerprint_differences(stored, expected)
    if diffs:
        raise CacheError(
            f"teacher cache {root} was made with another configuration:\n  "
            + "\n  ".join(diffs)
            + "\nRebuild the cache for this configuration (or use a different cache directory)."
        )


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
        self.index_dtype = torch.int16 if num_classes <= 2**15 else torch.int32
        # One writer at a time: a second one would delete the first's in-flight shard.
        self._lock = open(self.root / LOCK, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise CacheError(f"another process is writing the teacher cache {self.root}; wait for it") from None
        for stale in self.root.glob("*.tmp"):  # left by a killed writer: redo its items
            stale.unlink()
        if not (self.root / META).exists() and any(self.root.glob("shard-*.pt")):
            self._release()
            raise CacheError(
                f"{self.root} holds cache shards but no meta.json, so their origin cannot be checked; "
                "delete the directory and rebuild the cache"
            )
        if (self.root / META).exists():
            meta = _read_meta(self.root)
            try:
                _check_fingerprint(self.root, meta["fingerprint"], self.fingerprint)
            except CacheError:
                self._release()
                raise
            if (meta["k"], meta["num_classes"]) != (self.k, num_classes):
                self._release()
                raise CacheError(
                    f"teacher cache {self.root} holds k={meta['k']} of {meta['num_classes']} classes, "
                    f"asked for k={self.k} of {num_classes}; use another directory or delete it"
                )
        self._done: set[str] = set()
        self._shards = sorted(self.root.glob("shard-*.pt"))
        for shard in self._shards:
            self._done.update(_load_shard(shard)["ids"])
        self._write_meta(complete=False)
        self._pending: list[tuple[str, Tensor, Tensor]] = []
        self._pending_ids: set[str] = set()

    def _write_meta(self, complete: bool) -> None:
        _write_json(
            self.root / META,
            {
                "format": FORMAT,
                "k": self.k,
                "num_classes": self.num_classes,
                "fingerprint": self.fingerprint,
                "shards": [p.name for p in self._shards],
                "complete": complete,
            },
        )

    def done(self) -> set[str]:
        """IDs already cached (including those added but not yet flushed)."""
        return self._done | self._pending_ids

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._done or item_id in self._pending_ids

    def add(self, item_id: str, outputs: Tensor | TopK) -> None:
        """Add one item's ``(frames, C)`` logits / log-probs, or its :class:`TopK`."""
        if item_id in self:
            raise CacheError(f"ID {item_id!r} is already in the cache {self.root}; IDs must be unique")
        if isinstance(outputs, TopK):
            if outputs.k != self.k:
                raise ValueError(f"TopK has k={outputs.k}, the cache stores k={self.k}")
            top = outputs
            if top.indices.numel() and (top.indices.min() < 0 or top.indices.max() >= self.num_classes):
                raise ValueError(
                    f"TopK for {item_id!r} has class indices outside 0..{self.num_classes - 1}"
                )
        else:
            if outputs.shape[-1] != self.num_classes:
                raise ValueError(
                    f"outputs for {item_id!r} have {outputs.shape[-1]} classes, cache expects {self.num_classes}"
                )
            top = TopK.from_logits(outputs.detach(), self.k)
        if top.log_probs.dim() != 2:
            raise ValueError(f"outputs for {item_id!r} must be (frames, classes), got {tuple(top.log_probs.shape)}")
        self._pending_ids.add(item_id)
        self._pending.append(
            (item_id, top.log_probs.to("cpu", torch.float16), top.indices.to("cpu", self.index_dtype))
        )
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the pending items as one complete shard (temporary name, then rename)."""
        if not self._pending:
            return
        lengths = torch.tensor([lp.shape[0] for _, lp, _ in self._pending], dtype=torch.int64)
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = lengths.cumsum(0)
        shard = {
            "ids": [i for i, _, _ in self._pending],
            "offsets": offsets,
            "log_probs": torch.cat([lp for _, lp, _ in self._pending]),
            "indices": torch.cat([ix for _, _, ix in self._pending]),
        }
        # Next number after the highest existing one: never overwrite a shard, even when
        # one in the middle was deleted (its items are then simply missing and redone).
        number = 1 + max((int(p.stem.split("-")[1]) for p in self._shards), default=-1)
        path = self.root / f"shard-{number:05d}.pt"
        if path.exists():
            raise CacheError(f"{path} exists already; is another process writing this cache?")
        _write_atomic(path, lambda tmp: torch.save(shard, tmp))
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

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an exception, keep the finished shards (resumable) but do not mark complete.
        self.close(complete=exc_type is None)


def _load_shard(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, mmap=True, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise CacheError(f"{path}: unreadable cache shard ({err}); delete it and rerun the producing stage")


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
        meta = _read_meta(self.root)
        if not meta["complete"] and not allow_incomplete:
            raise CacheError(
                f"teacher cache {self.root} is incomplete ({len(list(self.root.glob('shard-*.pt')))} "
                "shard(s) written; its "
                "writer was interrupted or is still running). Rerun the stage that produces it to resume."
            )
        _check_fingerprint(self.root, meta["fingerprint"], fingerprint)
        self.checked = fingerprint is not None
        self.meta = meta
        self.k: int = meta["k"]
        self.num_classes: int = meta["num_classes"]
        # A shard carries its final name only once complete, so the directory (not the
        # list in meta.json, which a kill can leave one shard behind) says what is readable.
        self._shards = [_load_shard(p) for p in sorted(self.root.glob("shard-*.pt"))]
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
        index_bytes = 2 if self.num_classes <= 2**15 else 4
        return float(self.k * (2 + index_bytes))

    def disk_bytes_per_frame(self) -> float:
        """Bytes on disk per frame, shard overhead and metadata included."""
        frames = sum(int(s["offsets"][-1]) for s in self._shards)
        return self.size_bytes() / max(frames, 1)
