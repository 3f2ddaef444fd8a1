"""Stored features in shards, read by memory map: memory does not grow with the corpus.

A store is a folder: ``shard-NNNNN.pt`` files, each ``torch.save`` of ``{"ids", "offsets",
"feats"}`` (the ``(frames, n_mels)`` float16 features of up to ``shard_size`` utterances
end to end, utterance ``i`` at rows ``offsets[i]:offsets[i + 1]``), and ``meta.json`` (the
feature config, the shard names, the number of utterances), written last: a folder without
it is unfinished. Shards are opened with ``torch.load(mmap=True)``, so reading an utterance
touches only its own pages, and the operating system can drop them again: a worker's
anonymous memory holds the index (an ID and two numbers per utterance), never the features.

Writing resumes: shard ``j`` holds the ``j``-th ``shard_size`` utterances in the given order,
so a rerun keeps the shards that hold what it would write and computes the rest.

Example
-------
>>> import tempfile, torch
>>> root = tempfile.mkdtemp()
>>> items = {"a": torch.ones(3, 2), "b": torch.zeros(5, 2), "c": torch.ones(1, 2)}
>>> write_store(root, list(items), lambda ids: {i: items[i] for i in ids}, {"n_mels": 2}, shard_size=2)
>>> store = FeatureStore(root)
>>> len(store), store["b"].shape, store.frames("c"), list(store)
(3, torch.Size([5, 2]), 1, ['a', 'b', 'c'])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from asr_kd.io import read_json, write_atomic, write_json

FORMAT = "asr-kd-features/1"
META = "meta.json"


def _shard_path(root: Path, number: int) -> Path:
    return root / f"shard-{number:05d}.pt"


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, mmap=True, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise RuntimeError(f"{path}: unreadable feature shard ({err}); delete it and rerun the prepare stage") from err


def store_config(root: str | os.PathLike) -> dict | None:
    """The feature config a finished store was written with (``None``: no finished store there)."""
    meta = Path(root) / META
    return read_json(meta)["config"] if meta.exists() else None


def write_store(
    root: str | os.PathLike,
    ids: Sequence[str],
    compute: Callable[[Sequence[str]], Mapping[str, Tensor]],
    config: Mapping[str, Any],
    shard_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write the features of ``ids`` (in that order) as a store at ``root``.

    Args:
        compute: ``ids -> {id: (frames, n_mels) tensor}`` for one shard's utterances.
        config: what fixes the features; a finished store with another config or other IDs is
            written anew, an unfinished one keeps the shards that match.
        progress: called with the number of utterances of each shard written or kept.
    """
    root = Path(root)
    meta_path = root / META
    if meta_path.exists():
        meta = read_json(meta_path)
        if meta["config"] == dict(config) and meta["ids"] == list(ids):
            return
        meta_path.unlink()  # another config or other utterances: every shard is redone
        for old in root.glob("shard-*.pt"):
            old.unlink()
    root.mkdir(parents=True, exist_ok=True)
    chunks = [list(ids[i : i + shard_size]) for i in range(0, len(ids), shard_size)]
    names = []
    for number, chunk in enumerate(chunks):
        path = _shard_path(root, number)
        names.append(path.name)
        if path.exists() and _load(path)["ids"] == chunk:  # written by an interrupted run
            if progress:
                progress(len(chunk))
            continue
        feats = compute(chunk)
        rows = [feats[i].to(torch.float16) for i in chunk]
        offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor([len(r) for r in rows], dtype=torch.int64).cumsum(0)
        shard = {"ids": chunk, "offsets": offsets, "feats": torch.cat(rows)}

        def save(tmp: Path, shard: dict = shard) -> None:
            with open(tmp, "wb") as f:
                torch.save(shard, f)

        write_atomic(path, save)
        if progress:
            progress(len(chunk))
    for stale in root.glob("shard-*.pt"):  # from a longer list of utterances
        if stale.name not in names:
            stale.unlink()
    write_json(meta_path, {"format": FORMAT, "config": dict(config), "ids": list(ids), "shards": names}, fsync=True)


class FeatureStore(Mapping[str, Tensor]):
    """The ``{id: (frames, n_mels) float16}`` features of a store, memory-mapped, in stored order.

    Raises ``FileNotFoundError`` naming the folder when the store is missing or unfinished.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        meta_path = self.root / META
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{self.root}: no finished feature store (meta.json missing); run the prepare stage"
            )
        meta = read_json(meta_path)
        if meta.get("format") != FORMAT:
            raise RuntimeError(f"{meta_path}: format {meta.get('format')!r}, this version reads {FORMAT!r}")
        self.config = meta["config"]
        self._shards = [_load(self.root / name) for name in meta["shards"]]
        self._where: dict[str, tuple[int, int]] = {}
        for s, shard in enumerate(self._shards):
            for row, item in enumerate(shard["ids"]):
                self._where[item] = (s, row)

    def __getitem__(self, item: str) -> Tensor:
        s, row = self._where[item]
        shard = self._shards[s]
        offsets = shard["offsets"]
        return shard["feats"][int(offsets[row]) : int(offsets[row + 1])]

    def frames(self, item: str) -> int:
        """Frames of ``item``, without reading its features."""
        s, row = self._where[item]
        offsets = self._shards[s]["offsets"]
        return int(offsets[row + 1] - offsets[row])

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item: object) -> bool:
        return item in self._where
