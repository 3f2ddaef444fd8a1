"""The teacher cache's on-disk format, shared by its writer and its reader.

One place says what a cache directory holds, so :mod:`.cache_writer` and
:mod:`.cache_reader` cannot drift apart:

- ``meta.json`` (:func:`write_meta`, :func:`read_meta`): the format tag, ``k``,
  ``num_classes``, the fingerprint, the shard names and the ``complete`` flag,
  written with ``indent=2, sort_keys=True`` and flushed to disk before it is renamed
  into place.
- ``shard-NNNNN.pt`` (:func:`shard_path`, :func:`save_shard`, :func:`load_shard`): a
  :class:`Shard` saved by ``torch.save``, read back with ``torch.load(mmap=True)``.
- ``writer.lock``: held (``flock``) by the one writer at work.
- :func:`check_fingerprint`: a stored fingerprint against the expected one, refused with
  one line per differing field.

Example
-------
>>> import tempfile
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> shard_path(root, 3).name
'shard-00003.pt'
>>> index_dtype(256), index_dtype(40_000)
(torch.int16, torch.int32)
>>> write_meta(root, k=4, num_classes=256, fingerprint={"n_mels": 80}, shards=[], complete=False)
>>> read_meta(root)["k"]
4
>>> check_fingerprint(root, {"n_mels": 80}, {"n_mels": 40})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
asr_kd.distill.cache_format.CacheError: teacher cache ... was made with another configuration:
  field 'n_mels': cache has 80, expected 40
Rebuild the cache for this configuration (or use a different cache directory).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import Tensor

from asr_kd.errors import UserError
from asr_kd.io import dict_diff, read_json, write_atomic, write_json

FORMAT = "asr-kd-teacher-cache/1"
META = "meta.json"
LOCK = "writer.lock"
#: Shards under their final name (a shard only gets it once completely written).
SHARD_GLOB = "shard-*.pt"


class CacheError(UserError, RuntimeError):
    """A cache that cannot be used as asked: incomplete, mismatched, or corrupt.

    A :class:`~asr_kd.errors.UserError` (the CLI prints it as one line), and a
    ``RuntimeError`` as it always was.
    """


class Shard(TypedDict):
    """What one shard file holds: items concatenated along frames, with per-ID offsets.

    Item ``ids[i]`` is rows ``offsets[i]:offsets[i + 1]`` of ``log_probs`` (float16,
    ``(frames, k)``, at temperature 1) and ``indices`` (:func:`index_dtype`, ``(frames, k)``).
    """

    ids: list[str]
    offsets: Tensor
    log_probs: Tensor
    indices: Tensor


def index_dtype(num_classes: int) -> torch.dtype:
    """The dtype of stored class indices: int16 when the classes fit, else int32."""
    return torch.int16 if num_classes <= 2**15 else torch.int32


def shard_path(root: Path, number: int) -> Path:
    """The path of shard ``number``."""
    return root / f"shard-{number:05d}.pt"


def shard_paths(root: Path) -> list[Path]:
    """The finished shards of a cache directory, in order.

    The directory, not the list in meta.json (which a kill can leave one shard behind),
    says what is readable.
    """
    return sorted(root.glob(SHARD_GLOB))


def write_meta(
    root: Path,
    k: int,
    num_classes: int,
    fingerprint: Mapping[str, Any],
    shards: Sequence[Path],
    complete: bool,
) -> None:
    """Write ``meta.json`` atomically and flushed to disk (a reader may be polling it)."""
    meta = {
        "format": FORMAT,
        "k": k,
        "num_classes": num_classes,
        "fingerprint": fingerprint,
        "shards": [p.name for p in shards],
        "complete": complete,
    }
    write_json(root / META, meta, indent=2, sort_keys=True, fsync=True)


def read_meta(root: Path) -> dict[str, Any]:
    """The cache's ``meta.json``; refused when missing, unreadable or of another format."""
    path = root / META
    if not path.exists():
        raise CacheError(f"{path}: no teacher cache here (meta.json missing); produce it first")
    try:
        meta = read_json(path)
    except (OSError, json.JSONDecodeError) as err:
        raise CacheError(f"{path}: unreadable cache metadata ({err}); delete the cache and rebuild it") from err
    if meta.get("format") != FORMAT:
        raise CacheError(f"{path}: format {meta.get('format')!r}, this version reads {FORMAT!r}")
    return meta


def check_fingerprint(root: Path, stored: Mapping[str, Any], expected: Mapping[str, Any] | None) -> None:
    """Refuse a cache whose stored fingerprint differs from ``expected`` (``None``: no check)."""
    if expected is None:
        return
    diffs = dict_diff(stored, expected, stored_label="cache")
    if diffs:
        raise CacheError(
            f"teacher cache {root} was made with another configuration:\n  "
            + "\n  ".join(diffs)
            + "\nRebuild the cache for this configuration (or use a different cache directory)."
        )


def save_shard(path: Path, shard: Shard) -> None:
    """Write a shard atomically: it appears under ``path`` only once completely written."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: the archive's inner name does not depend on the temp name
            torch.save(shard, f)

    write_atomic(path, write)


def load_shard(path: Path) -> Shard:
    """A shard, memory-mapped: reading one item touches only that item's pages."""
    try:
        shard: Shard = torch.load(path, mmap=True, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise CacheError(f"{path}: unreadable cache shard ({err}); delete it and rerun the producing stage") from err
    return shard
