"""The shared front end: 80-dim log-Mel filterbanks, global mean/variance normalisation, SpecAugment.

Teachers and students use one :class:`FrontEnd`; the number of frames depends only on the
number of samples (:func:`num_frames`), never on augmentation, so frame ``t`` of a
teacher's view is frame ``t`` of a student's. SpecAugment masks values (time and frequency
bands, set to 0 = the normalised mean) and never warps or drops frames.

Example
-------
>>> import torch
>>> from asr_kd.data.features import FeatureConfig, FrontEnd, num_frames
>>> fe = FrontEnd(FeatureConfig())
>>> wavs = torch.randn(2, 16000); lengths = torch.tensor([16000, 12000])
>>> feats, frames = fe(wavs, lengths)
>>> feats.shape, frames.tolist(), num_frames(12000)
(torch.Size([2, 101, 80]), [101, 76], 76)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that fixes the features (part of the experiment fingerprint)."""

    sample_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 400
    win_ms: float = 25.0
    hop_ms: float = 10.0

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    def fingerprint(self) -> dict:
        return {"features": "fbank", **asdict(self)}


@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment masking (Park et al. 2019) without time warping."""

    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width: int = 25
    max_time_ratio: float = 0.2  #: one time mask covers at most this share of the utterance


def num_frames(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
    """Frames the front end makes from ``num_samples`` samples (centred STFT: ``n // hop + 1``)."""
    return int(num_samples) // config.hop + 1


class Fbank(nn.Module):
    """Log-Mel filterbanks (SpeechBrain's ``Fbank``), batch ``(B, T)`` -> ``(B, frames, n_mels)``."""

    def __init__(self, config: FeatureConfig = FeatureConfig()) -> None:
        super().__init__()
        from speechbrain.lobes.features import Fbank as SBFbank

        self.config = config
        self.fbank = SBFbank(sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                             win_length=config.win_ms, hop_length=config.hop_ms)

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        return self.fbank(wavs)


class GlobalCMVN(nn.Module):
    """Per-dimension mean and variance from the train set; padded frames never count.

    Example
    -------
    >>> cmvn = GlobalCMVN(3)
    >>> cmvn.accumulate(torch.tensor([[[1., 2., 3.], [3., 4., 5.], [9., 9., 9.]]]), torch.tensor([2]))
    >>> cmvn.finalize(); cmvn.mean.tolist()
    [2.0, 3.0, 4.0]
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self._sum = torch.zeros(dim, dtype=torch.float64)
        self._sq = torch.zeros(dim, dtype=torch.float64)
        self._n = 0

    def accumulate(self, feats: torch.Tensor, frames: torch.Tensor) -> None:
        """Add a batch ``(B, F, D)`` whose first ``frames[b]`` frames are real."""
        mask = torch.arange(feats.shape[1])[None, :] < frames[:, None]
        x = feats[mask].double()
        self._sum += x.sum(0)
        self._sq += (x * x).sum(0)
        self._n += x.shape[0]

    def finalize(self) -> None:
        if self._n == 0:
            raise ValueError("GlobalCMVN: no frames accumulated")
        mean = self._sum / self._n
        var = (self._sq / self._n - mean * mean).clamp_min(0)
        self.mean.copy_(mean.float())
        self.std.copy_(var.sqrt().float().clamp_min(self.eps))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.std

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist(), "frames": self._n}))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GlobalCMVN:
        data = json.loads(Path(path).read_text())
        c = cls(len(data["mean"]))
        c.mean.copy_(torch.tensor(data["mean"]))
        c.std.copy_(torch.tensor(data["std"]))
        c._n = data.get("frames", 0)
        return c


def spec_augment(feats: torch.Tensor, frames: torch.Tensor, config: SpecAugmentConfig = SpecAugmentConfig(),
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask random frequency bands and time spans of ``(B, F, D)`` features (a copy); shape unchanged."""
    out = feats.clone()
    B, _, D = out.shape
    for b in range(B):
        n = int(frames[b])
        for _ in range(config.freq_masks):
            w = int(torch.randint(0, config.freq_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, D - w + 1), (1,), generator=generator))
            out[b, :n, f0:f0 + w] = 0.0
        max_w = min(config.time_width, int(config.max_time_ratio * n))
        for _ in range(config.time_masks):
            w = int(torch.randint(0, max_w + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, max(1, n - w + 1), (1,), generator=generator))
            out[b, t0:t0 + w, :] = 0.0
    return out


class FrontEnd(nn.Module):
    """Waveforms ``(B, T)`` with lengths in samples -> normalised features and frame counts.

    Args:
        config: the features.
        cmvn: global normalisation (from :func:`compute_cmvn`); ``None`` leaves features as they are.
        augment: SpecAugment settings used in training mode; ``None`` turns it off.
    """

    def __init__(self, config: FeatureConfig = FeatureConfig(), cmvn: GlobalCMVN | None = None,
                 augment: SpecAugmentConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.fbank = Fbank(config)
        self.cmvn = cmvn
        self.augment = augment

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.config.hop, rounding_mode="floor") + 1

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.fbank(wavs)
        frames = self.frames(lengths)
        mask = torch.arange(feats.shape[1], device=feats.device)[None, :] < frames[:, None].to(feats.device)
        if self.cmvn is not None:
            feats = self.cmvn(feats)
        feats = feats * mask[..., None]  # padded frames are exactly 0
        if self.training and self.augment is not None:
            feats = spec_augment(feats, frames, self.augment, generator)
        return feats, frames


def compute_cmvn(wav_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 config: FeatureConfig = FeatureConfig()) -> GlobalCMVN:
    """Global mean/variance over ``(wavs, lengths)`` batches of the train set."""
    fb = Fbank(config)
    cmvn = GlobalCMVN(config.n_mels)
    for wavs, lengths in wav_batches:
        feats = fb(wavs)
        cmvn.accumulate(feats, torch.div(lengths, config.hop, rounding_mode="floor") + 1)
    cmvn.finalize()
    return cmvn


def cmvn_from_manifest(manifest, config: FeatureConfig = FeatureConfig(), batch_size: int = 16,
                       max_utterances: int | None = None) -> GlobalCMVN:
    """Global mean/variance over the train manifest's audio (a path or a list of entries).

    ``max_utterances`` takes an evenly spaced subset (statistics converge long before a
    big corpus is read through).
    """
    from .audio import collate_audio, load_audio
    from .manifest import load_manifest

    entries = load_manifest(manifest, check_audio=False) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    if max_utterances and len(entries) > max_utterances:
        step = len(entries) / max_utterances
        entries = [entries[int(i * step)] for i in range(max_utterances)]

    def batches():
        for i in range(0, len(entries), batch_size):
            yield collate_audio([load_audio(e.wav, config.sample_rate) for e in entries[i:i + batch_size]])

    return compute_cmvn(batches(), config)
