"""From manifests to training batches: stored features, datasets, length-bucketed batches.

Features are computed once per split with the shared front end
(:mod:`asr_kd.data.features`) and stored by utterance ID in a sharded store read by memory
map (``feats/SPLIT/``, :mod:`asr_kd.data.feature_store`), so every teacher and student of a
recipe reads the very same frames (normalised per batch by
:class:`asr_kd.data.features.FeatureNorm`) and no process holds a split's features in memory.

Datasets are SpeechBrain ``DynamicItemDataset`` s with the items ``id``,
``feats`` and ``tokens`` (the transcript through the tokenizer), batched by
:class:`BucketBatchSampler` (similar lengths together, batch order shuffled
per epoch from the seed, so a resumed epoch sees the same batches).

Example
-------
>>> import torch
>>> feats = {"a": torch.ones(30, 4), "b": torch.ones(50, 4), "c": torch.ones(40, 4)}
>>> ds = make_dataset(feats, {"a": [1, 2], "b": [3], "c": [2, 2]})
>>> sorted(ds[0].keys()), ds[0]["feats"].shape
(['feats', 'id', 'tokens'], torch.Size([30, 4]))
>>> sampler = BucketBatchSampler([30, 50, 40], batch_size=2, seed=0)
>>> sorted(sorted(b) for b in sampler)
[[0, 2], [1]]
"""

from __future__ import annotations

import os
import random
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from asr_kd.data.audio import collate_audio, load_audio
from asr_kd.data.feature_store import FeatureStore, write_store
from asr_kd.data.features import FeatureConfig, FrontEnd
from asr_kd.data.manifest import Entry

#: the token list of an utterance without a transcript (the blank id, never a transcript token)
NO_TRANSCRIPT = 0


def extract_features(
    entries: Sequence[Entry],
    path: str | os.PathLike,
    config: FeatureConfig = FeatureConfig(),
    batch_size: int = 16,
    desc: str = "features",
    progress: bool = True,
    shard_size: int = 1000,
) -> Mapping[str, Tensor]:
    """Compute (or reuse, when ``path`` holds them already) every entry's log-Mel features.

    Returns ``{id: (frames, n_mels) float16}``, memory-mapped from the sharded store written
    at ``path`` (:mod:`asr_kd.data.feature_store`: ``shard_size`` utterances per shard, each
    written atomically; a killed run keeps its finished shards). A finished store is reused
    only when it holds exactly these IDs and the same feature config.
    """
    by_id = {e.id: e for e in entries}
    frontend = FrontEnd(config)  # no CMVN: raw log-Mels are stored, normalised per batch

    def compute(chunk: Sequence[str]) -> dict[str, Tensor]:
        feats: dict[str, Tensor] = {}
        order = sorted(chunk, key=lambda i: by_id[i].duration or 0.0)
        for start in range(0, len(order), batch_size):
            rows = [by_id[i] for i in order[start : start + batch_size]]
            wavs, lengths = collate_audio([load_audio(e.wav, config.sample_rate) for e in rows])
            out, frames = frontend(wavs, lengths)
            for e, f, n in zip(rows, out, frames.tolist(), strict=False):
                feats[e.id] = f[:n].to(torch.float16).clone()
        return feats

    with tqdm(total=len(entries), desc=desc, unit="utt", leave=False, disable=not progress) as bar:
        write_store(path, list(by_id), compute, config.fingerprint(), shard_size, progress=bar.update)
    return FeatureStore(path)


def load_features(path: str | os.PathLike) -> Mapping[str, Tensor]:
    """The ``{id: (frames, n_mels) float16}`` features stored by :func:`extract_features`,
    memory-mapped (a sharded store; the one ``.pt`` file of older experiments too)."""
    path = Path(path)
    if path.is_dir():
        return FeatureStore(path)
    return torch.load(path, mmap=True, weights_only=False)["feats"]


def merge_features(*stores: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """Several feature stores read as one, without copying (the first that has an ID wins).

    >>> merged = merge_features({"a": torch.ones(2, 1)}, {"b": torch.zeros(3, 1)})
    >>> sorted(merged), merged["b"].shape
    (['a', 'b'], torch.Size([3, 1]))
    """
    return ChainMap(*stores)  # type: ignore[arg-type]  # read only: ChainMap never writes here


def make_dataset(
    feats: Mapping[str, Tensor],
    tokens: Mapping[str, Sequence[int]],
    ids: Sequence[str] | None = None,
):
    """A SpeechBrain ``DynamicItemDataset`` of ``id``, ``feats`` and ``tokens`` (long tensor).

    ``ids`` selects and orders the utterances (default: every ID in ``tokens``). An utterance
    without a transcript (no tokens: the transfer set) gets the one token 0, the CTC blank, which
    no transcript contains: :class:`asr_kd.asr.brain.CTCBrain` reads it as "no transcript" (a
    batch of such utterances only cannot be padded with no tokens at all).
    """
    import speechbrain as sb
    from speechbrain.dataio.dataset import DynamicItemDataset

    ids = list(tokens) if ids is None else list(ids)
    missing = [i for i in ids if i not in feats]
    if missing:
        raise KeyError(f"no stored features for {len(missing)} utterance(s), e.g. {missing[:3]}")
    ds = DynamicItemDataset({i: {"utt": i} for i in ids})

    @sb.utils.data_pipeline.takes("utt")
    @sb.utils.data_pipeline.provides("feats", "tokens")
    def pipeline(utt: str):
        yield feats[utt]
        yield torch.tensor(list(tokens[utt]) or [NO_TRANSCRIPT], dtype=torch.long)

    ds.add_dynamic_item(pipeline)
    ds.set_output_keys(["id", "feats", "tokens"])
    return ds


class BucketBatchSampler:
    """Batches of utterances of similar length; the order of batches is shuffled per epoch.

    Sorting by length keeps padding low; a fixed seed plus the epoch number fixes the
    order, so a run resumed at an epoch boundary trains on the same batches. SpeechBrain's
    ``Brain`` calls :meth:`set_epoch` when the sampler is its ``train_sampler``.

    Data-parallel training (``world > 1``, under torchrun): ``batch_size`` is the *global*
    batch. Every process walks the same batches in the same order and takes its share of each
    (items ``rank``, ``rank + world``, ...), so N processes take the same number of steps, on
    the same utterances, as one process: the learning-rate schedule and, with the gradients
    averaged by DDP, the model are those of one process (exactly when ``world`` divides every
    batch). A batch smaller than ``world`` (the last one, at most) repeats an item for the
    processes it cannot serve.

    Args:
        lengths: per-item lengths (frames or seconds), in dataset order.
        batch_size: items per (global) batch.
        seed: base of the per-epoch shuffle; ``None`` keeps batches sorted (evaluation).
        rank, world: this process and the number of processes.

    >>> [list(BucketBatchSampler([1, 2, 3, 4, 5], 4, seed=None, rank=r, world=2)) for r in (0, 1)]
    [[[0, 2], [4]], [[1, 3], [4]]]
    """

    def __init__(
        self, lengths: Sequence[float], batch_size: int, seed: int | None = 0, rank: int = 0, world: int = 1
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of the {world} processes")
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        self.batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.seed = seed
        self.epoch = 0
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.batches)
        if self.seed is not None:
            random.Random(self.seed * 100003 + self.epoch).shuffle(batches)
        if self.world > 1:
            batches = [b[self.rank :: self.world] or [b[self.rank % len(b)]] for b in batches]
        return iter(batches)


def padded_batches(
    feats: Mapping[str, Tensor], ids: Sequence[str], batch_size: int
) -> Iterator[tuple[list[str], Tensor, Tensor]]:
    """``(ids, feats (B, F, D) float32, frames (B,))`` in length-sorted batches (for inference)."""
    order = sorted(ids, key=lambda i: len(feats[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        x = [feats[i].float() for i in chunk]
        yield chunk, nn.utils.rnn.pad_sequence(x, batch_first=True), torch.tensor([len(v) for v in x])


def encode_transcripts(
    texts: Mapping[str, str],
    encode: Callable[[str], list[int]],
    what: str = "transcript",
    skip: Callable[[str], None] | None = None,
) -> dict[str, list[int]]:
    """Token ids of every transcript.

    A transcript that encodes to nothing or that the tokenizer cannot encode is refused,
    naming the utterance; with ``skip`` given, it is left out and ``skip(message)`` says so.
    """
    out = {}
    for utt, text in texts.items():
        try:
            ids = encode(text)
            if not ids:
                raise ValueError("it encodes to no tokens")
        except ValueError as err:
            message = f"utterance {utt!r}: the {what} {text[:60]!r} cannot be used ({err})"
            if skip is None:
                raise ValueError(message) from None
            skip(message + "; left out")
            continue
        out[utt] = ids
    return out


def load_wavs_features(
    paths: Sequence[str | os.PathLike], config: FeatureConfig = FeatureConfig()
) -> tuple[Tensor, Tensor]:
    """Raw log-Mel features ``(B, F, D)`` and frame counts of audio files (any rate, any channels)."""
    wavs, lengths = collate_audio([load_audio(p, config.sample_rate) for p in paths])
    return FrontEnd(config)(wavs, lengths)


def draw_subset(ids: Sequence[str], share: float, seed: int = 0) -> list[str]:
    """A reproducible ``share`` of ``ids`` (at least one), in sorted order: the same draw for
    the same IDs, share and seed on every machine, whatever the order ``ids`` come in.

    >>> draw_subset([f"u{i}" for i in range(100)], 0.03, seed=0)
    ['u53', 'u57', 'u97']
    >>> draw_subset(["b", "a"], 1.0)
    ['a', 'b']
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    pool = sorted(ids)
    k = max(1, round(share * len(pool)))
    return sorted(random.Random(seed).sample(pool, k))
