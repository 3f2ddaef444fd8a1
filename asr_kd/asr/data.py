"""From manifests to training batches: stored features, datasets, length-bucketed batches.

Features are computed once per split with the shared front end
(:mod:`asr_kd.data.features`) and stored by utterance ID in one file
(``feats/SPLIT.pt``: ``{id: (frames, n_mels) float16}``), so every teacher and
student of a recipe reads the very same frames (normalised per batch by
:class:`asr_kd.data.features.FeatureNorm`).

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from asr_kd.data.audio import collate_audio, load_audio
from asr_kd.data.features import FeatureConfig, FrontEnd
from asr_kd.data.manifest import Entry
from asr_kd.io import write_atomic

#: the token list of an utterance without a transcript (the blank id, never a transcript token)
NO_TRANSCRIPT = 0


def extract_features(
    entries: Sequence[Entry],
    path: str | os.PathLike,
    config: FeatureConfig = FeatureConfig(),
    batch_size: int = 16,
    desc: str = "features",
    progress: bool = True,
) -> dict[str, Tensor]:
    """Compute (or load, when ``path`` holds them already) every entry's log-Mel features.

    Returns ``{id: (frames, n_mels) float16}``; written atomically to ``path``. A stored
    file is reused only when it holds exactly these IDs and the same feature config.
    """
    path = Path(path)
    ids = [e.id for e in entries]
    if path.exists():
        stored = torch.load(path, weights_only=False)
        if stored.get("config") == config.fingerprint() and list(stored["feats"]) == ids:
            return stored["feats"]
    frontend = FrontEnd(config)  # no CMVN: raw log-Mels are stored, normalised per batch
    feats: dict[str, Tensor] = {}
    order = sorted(range(len(entries)), key=lambda i: entries[i].duration or 0.0)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False, disable=not progress):
        chunk = [entries[i] for i in order[start : start + batch_size]]
        wavs, lengths = collate_audio([load_audio(e.wav, config.sample_rate) for e in chunk])
        out, frames = frontend(wavs, lengths)
        for e, f, n in zip(chunk, out, frames.tolist(), strict=False):
            feats[e.id] = f[:n].to(torch.float16).clone()
    feats = {i: feats[i] for i in ids}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save({"config": config.fingerprint(), "feats": feats}, tmp))
    return feats


def load_features(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``{id: (frames, n_mels) float16}`` features stored by :func:`extract_features`."""
    return torch.load(path, weights_only=False)["feats"]


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

    Args:
        lengths: per-item lengths (frames or seconds), in dataset order.
        batch_size: items per batch.
        seed: base of the per-epoch shuffle; ``None`` keeps batches sorted (evaluation).
    """

    def __init__(self, lengths: Sequence[float], batch_size: int, seed: int | None = 0) -> None:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        self.batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.batches)
        if self.seed is not None:
            random.Random(self.seed * 100003 + self.epoch).shuffle(batches)
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
